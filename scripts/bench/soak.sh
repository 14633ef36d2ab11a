#!/usr/bin/env bash
# `make soak`: one stitch under a steady mix of traffic for SOAK_SECONDS (default 1500; the
# first 40% is warm-up, left out of the slopes), its rules reloaded every 10 s and its
# collector down 20 s of every minute; reports requests, failures, RSS and open file
# descriptors over time with their slopes, and whether every span was exported or counted as
# dropped (scripts/bench/soak.py). Writes the "Soak" section of BENCHMARKS.md.
#
#   SOAK_SECONDS=120 make soak       a short run
#   SOAK_RATE=0.5 make soak          half the default rates (about 400 requests/s at 1)
#   SOAK_PROFILE=debug make soak     the debug build (quicker to build; figures not comparable)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
profile=${SOAK_PROFILE:-release}
flag=()
[ "$profile" = release ] && flag=(--release)
echo "soak: building stitch and its helpers ($profile)"
cargo build "${flag[@]}" --bin stitch --example soak --example bench_otlp_sink
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
exec python3 -B scripts/bench/soak.py --bin-dir "$target_dir/$profile" \
  --seconds "${SOAK_SECONDS:-1500}" --rate-scale "${SOAK_RATE:-1}" --build "$profile" "$@"
