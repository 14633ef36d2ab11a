//! stitch — a sidecar proxy that repairs distributed traces in the network.
//!
//! stitch runs next to a service, receives its inbound and outbound TCP (redirected by
//! iptables in a pod, or addressed explicitly on a laptop), and on every HTTP hop reads
//! whichever trace dialect is present, repairs what is safely repairable, opens a span and
//! writes the headers each peer understands. Anything that is not HTTP passes untouched.
//!
//! # Module map: layers that only point down
//!
//! A module may import only modules in layers below its own (`tests/it/layering.rs` fails
//! naming any edge that points up or sideways):
//!
//! 1. `main.rs` → [`cli`]: the `stitch` command line (`run`, `check-config`, `iptables`,
//!    `webhook`, `inject`, `wait-ready`, `wait-drain`); the one place the environment is read.
//! 2. [`app`] (wiring only: settings, bind → run → drain → flush; [`app::Stitch`] is also what
//!    tests start in-process), [`webhook`] (the admission webhook, `stitch webhook`) and
//!    [`hooks`] (the sidecar's lifecycle-hook commands).
//! 3. [`admin`] (health, readiness, metrics, rules, traces, app probes) and [`proxy`] (the data
//!    path: accept, destination, detection, hyper HTTP/1 and HTTP/2, pooled upstream
//!    connections, opaque relay), and [`inject`] (pure pod patching, shared by the webhook and
//!    `stitch inject`).
//! 4. `trace`: the tower `Layer` between the HTTP server and the forwarder, where trace
//!    context is extracted, decided and injected and where spans begin and end.
//! 5. [`config`] (the rules file: model, validation, compilation, hot reload),
//!    [`telemetry`] (span records, the export pipeline, the in-memory trace ring, metrics) and
//!    [`iptables`] (the pod's redirect rules).
//! 6. [`propagation`]: the trace-context engine, one strict parser/writer per dialect, no I/O.
//! 7. Leaves that import nothing of stitch's: [`direction`], [`shutdown`] (the drain signal
//!    and the task tracker), `grpc` (the content-type test), `upstream_failure` (the marker a
//!    failed forward leaves for the trace layer).
//!
//! Data flows one way: listener → detect → HTTP server → trace layer → forwarding client →
//! upstream. Failures of tracing degrade tracing, never the request.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod direction;
pub(crate) mod grpc;
pub mod hooks;
pub mod inject;
pub mod iptables;
pub mod propagation;
pub mod proxy;
pub mod shutdown;
pub mod telemetry;
pub mod trace;
pub(crate) mod upstream_failure;
pub mod webhook;
