#!/usr/bin/env bash
# Instructions per request through `stitch run`, counted by callgrind: steady on a machine
# shared with builds, where wall-clock A/B is noise. Runs stitch under callgrind twice, with N
# and 3N requests on one connection (h2load, no trace headers: every request starts a sampled
# root), and prints (Ir(3N) - Ir(N)) / 2N, which cancels start-up and shutdown.
#
#   scripts/bench/callgrind_per_request.sh STITCH_BIN [h1|h2] [off|ring|otlp] [N]
#
# otlp exports over HTTP/protobuf to examples/bench_otlp_sink (non-decoding). Needs a release
# build of the bench examples (cargo build --release --examples) and valgrind, h2load.
set -euo pipefail
cd "$(dirname "$0")/../.."
stitch_bin=$(realpath "$1") workload=${2:-h1} mode=${3:-ring} n=${4:-2000}
bin=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release
dir=$(mktemp -d -t stitch-callgrind-XXXX)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

backend=$(port) collector=$(port)
"$bin/examples/bench_backend" "127.0.0.1:$backend" >"$dir/backend.log" 2>&1 &
pids+=($!)
env=(env -u OTEL_EXPORTER_OTLP_ENDPOINT RUST_LOG=warn) extra=()
case $mode in
  off) extra=(--config scripts/bench/rules-trace-off.yaml) ;;
  ring) ;;
  otlp)
    "$bin/examples/bench_otlp_sink" "127.0.0.1:$collector" >"$dir/collector.log" 2>&1 &
    pids+=($!)
    env+=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$collector" OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf) ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
h2load_flags=()
[ "$workload" = h1 ] && h2load_flags=(--h1)

# One run: stitch under callgrind, `count` requests, SIGTERM (a clean drain writes the
# profile), then the total instructions.
run() {
  local count=$1 inbound admin out
  inbound=$(port) admin=$(port) out="$dir/callgrind.$count"
  "${env[@]}" valgrind --tool=callgrind --callgrind-out-file="$out" "$stitch_bin" run \
    --inbound-listen "127.0.0.1:$inbound" --inbound-target "127.0.0.1:$backend" \
    --admin-listen "127.0.0.1:$admin" --outbound-listen "127.0.0.1:$(port)" \
    "${extra[@]}" >"$dir/stitch.$count.log" 2>&1 &
  local pid=$!
  for _ in $(seq 600); do
    curl -fs "http://127.0.0.1:$admin/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  h2load "${h2load_flags[@]}" -n "$count" -c 1 -m 1 "http://127.0.0.1:$inbound/" >"$dir/load.$count" 2>&1
  grep -q "$count succeeded" "$dir/load.$count" || { cat "$dir/load.$count" >&2; exit 1; }
  kill -TERM "$pid"
  wait "$pid" || true
  awk '/^(summary|totals):/ { print $2; exit }' "$out"
}
a=$(run "$n")
b=$(run "$((3 * n))")
python3 -c "print(f'{($b - $a) / (2 * $n):.0f} instructions/request ($workload, $mode; Ir {$a} at N={$n}, {$b} at 3N)')"
echo "profiles: $dir"
