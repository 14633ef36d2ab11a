//! The integration tests, in one binary: one link of the library and its dependencies instead
//! of one per file, and one place that says what the suite covers. `netns` stays a binary of
//! its own (it has its own `main` and re-runs itself inside network namespaces).
//!
//! Every module here is one former `tests/*.rs` file; `support` holds what they share.

// A test binary has no public API: `pub` only shares items between its modules.
#![allow(unreachable_pub)]

#[path = "../support/mod.rs"]
mod support;

mod admin_collects_whole_traces;
mod admin_endpoints;
mod admin_html_chromium;
mod admin_limits;
mod config_reload;
mod connection_cap;
mod detect;
mod h2_idle;
mod http1;
mod http2_grpc;
mod idle;
mod k8s_chart;
mod k8s_dashboard;
mod k8s_hooks;
mod k8s_webhook;
mod layering;
mod lifecycle;
mod limits;
mod opaque;
mod pool_edges;
mod propagation_props;
mod streaming_memory;
mod telemetry_blackhole_e2e;
mod telemetry_chain_e2e;
mod telemetry_degradation;
mod telemetry_export_transport;
mod telemetry_otlp_export;
mod telemetry_tls_export;
mod trace_chain;
mod trace_dialects;
mod trace_reload;
mod trace_w3c;
mod transparency;
mod tunnels;
mod validation;
mod workers;
