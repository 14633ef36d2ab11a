# stitch — the two commands a newcomer needs are `make demo` and `make test`.
CARGO ?= cargo

.PHONY: test build run lint fmt bench demo

## Build, then run every test (unit + integration), plus lints.
test:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test --all-targets

build:
	$(CARGO) build --release

## Start stitch in explicit mode on loopback (inbound forwards to 127.0.0.1:8080).
run: build
	./target/release/stitch run --inbound-listen 127.0.0.1:4143 --admin-listen 127.0.0.1:4191 \
		--inbound-target 127.0.0.1:8080

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Benchmarks: stitch vs direct, nginx and haproxy (installs its tools, builds, measures for at
## most ~10 minutes on loopback, writes BENCHMARKS.md). Options: BENCH_ARGS="--rounds 1".
bench:
	bash scripts/bench/bench.sh $(BENCH_ARGS)
