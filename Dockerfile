# syntax=docker/dockerfile:1
# The one stitch image the chart uses: `stitch webhook` (the admission webhook), `stitch iptables`
# (the init container) and `stitch run` (the sidecar), plus the lifecycle-hook commands
# `stitch wait-ready` / `stitch wait-drain` (the image needs no shell).
#
#   docker build -t registry.example/stitch:0.1.0 .
#
# Runtime: Debian slim with only iptables (nf_tables and legacy backends, for the init
# container) and CA certificates (OTLP over TLS) added; runs as the proxy UID 2102, non-root.
# Not distroless: the init container needs the iptables tools and their extension modules.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Debug info is for profiling builds; the image does not need it.
RUN CARGO_PROFILE_RELEASE_DEBUG=0 cargo build --release --locked --bin stitch \
 && install -m 0755 target/release/stitch /stitch

FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /stitch /usr/local/bin/stitch
USER 2102:2102
# 4143 inbound, 4140 outbound (loopback), 4191 admin, 8443 webhook.
EXPOSE 4143 4191 8443
ENTRYPOINT ["/usr/local/bin/stitch"]
CMD ["run"]
