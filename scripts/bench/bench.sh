#!/usr/bin/env bash
# `make bench`: stitch against direct, nginx and haproxy on this machine, in one run.
#
# 1. installs what is missing: nginx, haproxy, wrk, h2load, tcpdump (apt) and oha (apt if it has it,
#    else `cargo install oha --locked`);
# 2. builds stitch and the benchmark helpers (examples/bench_backend.rs, bench_grpc_load.rs,
#    bench_otlp_sink.rs, and bench_hyper_floor.rs for scripts/bench/ab.py);
# 3. hands over to run.py, which starts everything on loopback in each CPU shape (one-CPU quota,
#    no limit, pinned), measures in rotated rounds
#    (bounded: --budget seconds, default 1800), kills all it started, and writes BENCHMARKS.md.
#
# Extra arguments go to run.py, e.g. `make bench BENCH_ARGS="--rounds 1 --seconds 2"`;
# `BENCH_ARGS="--only many-connections"` runs the 5,000-connection workloads alone and replaces
# only that section of BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:/usr/sbin:/sbin:$PATH"
export DEBIAN_FRONTEND=noninteractive

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v curl >/dev/null || need+=(curl)
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v taskset >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  echo "bench: installing ${need[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v oha >/dev/null; then
  if apt-cache policy oha 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt-get install -y -qq oha >/dev/null
  else
    echo "bench: installing oha with cargo (one-off, a few minutes)"
    cargo install oha --locked
  fi
fi

# 5,000 clients, as many upstream connections and the load generators' own sockets: raise the
# descriptor limit as far as allowed (root may go past the hard limit); run.py and everything it
# starts inherit it.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "bench: descriptor limit $(ulimit -n)"

echo "bench: building stitch and the benchmark helpers (release)"
cargo build --release --bin stitch --example bench_backend --example bench_grpc_load \
  --example bench_otlp_sink --example bench_hyper_floor
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

exec python3 -B scripts/bench/run.py --bin-dir "$target_dir/release" "$@"
