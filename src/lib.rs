//! stitch — a sidecar proxy that repairs distributed traces in the network.
//!
//! stitch runs next to a service, receives its inbound and outbound TCP (redirected by
//! iptables in a pod, or addressed explicitly on a laptop), and on every HTTP hop reads
//! whichever trace dialect is present, repairs what is safely repairable, opens a span and
//! writes the headers each peer understands. Anything that is not HTTP passes untouched.
//!
//! # Module map (in the order a request meets them)
//!
//! - [`cli`]: the `stitch` command line (`run`, `check-config`, `iptables`, `webhook`,
//!   `inject`, `wait-ready`, `wait-drain`).
//! - [`app`]: binds the listeners and the admin server, wires the runtime handles together
//!   and owns graceful shutdown. [`app::Stitch`] is also what tests start in-process.
//! - [`proxy`]: the data path — accept, learn the destination, detect the protocol, serve
//!   HTTP/1 and HTTP/2 with hyper, forward through pooled upstream connections, or copy
//!   opaque bytes.
//! - [`trace`]: the tower `Layer` that sits between the HTTP server and the forwarding client;
//!   it is where trace context is extracted, decided and injected, and where spans begin/end.
//! - [`propagation`]: the trace-context engine — one strict parser/writer per dialect, no I/O.
//! - [`config`]: the rules file — model, validation, compilation, hot reload.
//! - [`telemetry`]: span records, the exporter pipeline, the in-memory trace ring, metrics.
//! - [`admin`]: health, readiness, Prometheus metrics, rules in force, recent traces.
//! - [`iptables`]: the redirect rules an init container installs in the pod.
//! - [`inject`]: pod patching for Kubernetes (pure), shared by [`webhook`] (the admission
//!   webhook, `stitch webhook`) and `stitch inject`; [`hooks`]: the sidecar's lifecycle-hook
//!   commands.
//!
//! Data flows one way: listener → detect → HTTP server → trace layer → forwarding client →
//! upstream. Failures of tracing degrade tracing, never the request.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod hooks;
pub mod inject;
pub mod iptables;
pub mod propagation;
pub mod proxy;
pub mod telemetry;
pub mod trace;
pub mod webhook;
