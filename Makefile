# stitch — the two commands a newcomer needs are `make demo` and `make test`.
CARGO ?= cargo

.PHONY: test deps build run lint fmt bench soak demo

# Debian packages the tests need: iptables + iproute2 (netns test), chromium (trace page).
# The Kubernetes tools (helm, kubernetes-validate) come from PyPI: scripts/k8s/tools.sh.
TEST_PACKAGES := iptables iproute2 chromium

## Install what the tests need (root, Debian), build, then run every test plus lints and docs.
test: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps
	$(CARGO) test --all-targets
	$(CARGO) test --doc

deps:
	@missing=""; for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing packages:$$missing (install them as root; the tests that need them say why they skip)"; fi; \
	fi
	@rustup component add rustfmt clippy >/dev/null 2>&1 || true
	@# helm, kubectl and kubernetes-validate (PyPI) for the chart and webhook tests
	@scripts/k8s/tools.sh

build:
	$(CARGO) build --release

## Start stitch in explicit mode on loopback (inbound forwards to 127.0.0.1:8080).
run: build
	./target/release/stitch run --inbound-listen 127.0.0.1:4143 --admin-listen 127.0.0.1:4191 \
		--inbound-target 127.0.0.1:8080

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps

fmt:
	$(CARGO) fmt --all

## The whole product on loopback, no root, no collector: an order chain (gateway → order →
## inventory + payment) with each service behind its own stitch; prints where to look.
demo:
	$(CARGO) build --release --bin stitch --example demo
	$(CARGO) run --release --example demo

## Benchmarks: stitch vs direct, nginx and haproxy (installs its tools, builds, measures for at
## most ~30 minutes on loopback in three CPU shapes, writes BENCHMARKS.md). Options: BENCH_ARGS="--rounds 1".
bench:
	bash scripts/bench/bench.sh $(BENCH_ARGS)

## Soak: SOAK_SECONDS (default 1500, the first 40% warm-up) of mixed traffic through one
## stitch (release build), rules reloaded every 10 s, the collector down 20 s a minute;
## writes the Soak section of BENCHMARKS.md. Options: SOAK_SECONDS, SOAK_RATE (scales the request rates), SOAK_PROFILE=debug.
soak:
	bash scripts/bench/soak.sh
