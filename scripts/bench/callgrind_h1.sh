#!/usr/bin/env bash
# Instructions per proxied HTTP/1 request, counted by callgrind: immune to other load on the
# machine, so builds can be compared while others compile.
#
#   scripts/bench/callgrind_h1.sh STITCH_BINARY BACKEND_BINARY [off|ring] [pin|free] [conns] [extra stitch flags…]
#
# Runs stitch under callgrind twice, for N and 3N keep-alive requests (h2load --h1 over
# `conns` connections, default 1), and prints (I(3N) - I(N)) / 2N: the start-up and shutdown
# cancel out. `pin` runs stitch under `taskset -c 1` (one CPU: one worker); `free` leaves it
# unpinned (its default sizing). The backend is examples/bench_backend (release).
set -euo pipefail
stitch=$1 backend=$2 mode=${3:-ring} pin=${4:-pin} conns=${5:-1}
shift $(( $# < 5 ? $# : 5 ))
extra=("$@")
n=${CALLGRIND_N:-1000}
here=$(cd "$(dirname "$0")" && pwd)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
dir=$(mktemp -d -t stitch-callgrind-XXXX)
bport=$(port)
"$backend" "127.0.0.1:$bport" >"$dir/backend.log" 2>&1 &
bpid=$!
trap 'kill $bpid 2>/dev/null || true' EXIT
rules=()
[ "$mode" = off ] && rules=(--config "$here/rules-trace-off.yaml")
wrap=()
[ "$pin" = pin ] && wrap=(taskset -c 1)

instructions() { # requests → total instructions of one stitch run
  local requests=$1 inbound admin out
  inbound=$(port) admin=$(port) out="$dir/cg.$requests"
  env -u OTEL_EXPORTER_OTLP_ENDPOINT RUST_LOG=warn "${wrap[@]}" valgrind --tool=callgrind \
    --callgrind-out-file="$out" "$stitch" run --inbound-listen "127.0.0.1:$inbound" \
    --inbound-target "127.0.0.1:$bport" --admin-listen "127.0.0.1:$admin" \
    --outbound-listen "127.0.0.1:$(port)" "${rules[@]}" "${extra[@]}" >"$dir/stitch.$requests.log" 2>&1 &
  local spid=$!
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$admin/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  taskset -c 0 h2load --h1 -n "$requests" -c "$conns" "http://127.0.0.1:$inbound/" >"$dir/load.$requests" 2>&1
  grep -q "$requests succeeded" "$dir/load.$requests" || { cat "$dir/load.$requests" >&2; exit 1; }
  kill -TERM "$spid"
  wait "$spid" || true
  # One file per process (threads summed); "summary:" is the Ir total.
  awk '/^summary:/ { s += $2 } END { print s }' "$out"
}
small=$(instructions "$n")
large=$(instructions $((3 * n)))
echo "$mode $pin conns=$conns: $(( (large - small) / (2 * n) )) instructions/request"
