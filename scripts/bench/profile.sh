#!/usr/bin/env bash
# Profile stitch on one benchmark workload with perf, the way `make bench` runs it (backend and
# stitch pinned to CPU 1, load generator on CPU 0, loopback only), and print where the CPU goes.
#
#   scripts/bench/profile.sh [h1|h2|grpc] [ring|off|otlp] [seconds]
#
# Leaves perf.data in the printed directory for `perf report -i DIR/perf.data`. Needs a release
# build (make bench builds one) and perf (apt-get install linux-perf).
set -euo pipefail
cd "$(dirname "$0")/../.."
workload=${1:-h1} mode=${2:-ring} seconds=${3:-5}
export PATH="/usr/sbin:/sbin:$PATH"
command -v perf >/dev/null || { echo "perf is missing: apt-get install -y linux-perf" >&2; exit 1; }
bin=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/release
for b in stitch examples/bench_backend examples/bench_grpc_load examples/bench_otlp_sink; do
  [ -x "$bin/$b" ] || { echo "no release build of $b in $bin: run make bench first" >&2; exit 1; }
done
dir=$(mktemp -d -t stitch-profile-XXXX)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
backend=$(port) inbound=$(port) admin=$(port) collector=$(port)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

taskset -c 1 "$bin/examples/bench_backend" "127.0.0.1:$backend" >"$dir/backend.log" 2>&1 &
pids+=($!)
extra=() env=(env -u OTEL_EXPORTER_OTLP_ENDPOINT RUST_LOG=warn)
case $mode in
  off) extra=(--config scripts/bench/rules-trace-off.yaml) ;;
  otlp)
    taskset -c 0 "$bin/examples/bench_otlp_sink" "127.0.0.1:$collector" >"$dir/collector.log" 2>&1 &
    pids+=($!)
    env+=(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$collector" OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf) ;;
esac
"${env[@]}" taskset -c 1 "$bin/stitch" run --inbound-listen "127.0.0.1:$inbound" \
  --inbound-target "127.0.0.1:$backend" --admin-listen "127.0.0.1:$admin" \
  --outbound-listen "127.0.0.1:$(port)" "${extra[@]}" >"$dir/stitch.log" 2>&1 &
stitch=$!
pids+=("$stitch")
sleep 1

url="http://127.0.0.1:$inbound"
case $workload in
  h1) load=(wrk -t1 -c50 -d"$((seconds + 2))s" "$url/") ;;
  h2) load=(h2load -t1 -c4 -m64 -D "$((seconds + 2))" "$url/") ;;
  grpc) load=("$bin/examples/bench_grpc_load" "$url" unary "$((seconds + 2))") ;;
  *) echo "unknown workload $workload" >&2; exit 2 ;;
esac
taskset -c 0 "${load[@]}" >"$dir/load.txt" 2>&1 &
pids+=($!)
sleep 1
perf record -F 1999 --call-graph dwarf,16384 -p "$stitch" -o "$dir/perf.data" -- sleep "$seconds" \
  >/dev/null 2>&1
wait "${pids[-1]}" || true
grep -E 'Requests/sec|finished in|"rps"' "$dir/load.txt" || true
echo "--- CPU by binary"
perf report -i "$dir/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -5
echo "--- hottest user-space symbols (self time)"
perf report -i "$dir/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null |
  grep -E '^ +[0-9]' | grep -v '\[k\]' | head -25
echo "perf data: $dir/perf.data"
