//! The trace-context engine: one strict parser and writer per dialect, free of I/O.
//!
//! - `ids`: [`TraceId`]/[`SpanId`] as arrays with allocation-free hex; `id_hash`: the cheap
//!   keyed hasher for maps keyed by them.
//! - `context`: the dialect-neutral [`TraceContext`], [`Dialect`] names, repair kinds.
//! - [`w3c`] + [`tracestate`]: W3C Trace Context Level 2.
//! - [`b3`]: B3 single and multi header. [`jaeger`]: `uber-trace-id`.
//! - [`template`]: user-defined formats from the rules file; `formats` ([`Formats`]): all of
//!   one rules version, as the engine reads them.
//! - `baggage`: W3C Baggage limits (the header itself passes untouched).
//! - `inflight`: [`Inflight`], the registry of in-flight inbound server spans.
//! - `policy`: [`Policy`], the settings in force for one request (the rules' choice, the
//!   engine's input).
//! - `engine`: [`propagate`], the one call per request hop the trace layer makes.
//!
//! Parsers never panic and never allocate; a bad header is never an error on the request path
//! (invalid means absent, reported in the [`Outcome`]).

pub mod b3;
pub(crate) mod baggage;
pub(crate) mod context;
pub(crate) mod dialect_set;
pub(crate) mod engine;
pub(crate) mod formats;
pub(crate) mod id_hash;
pub(crate) mod ids;
pub(crate) mod inflight;
pub mod jaeger;
pub(crate) mod policy;
pub mod template;
pub mod tracestate;
pub mod w3c;

pub use context::{Dialect, Invalid, RepairKind, RepairMode, Repairs, TRACE_HEADERS, TraceContext};
pub use dialect_set::DialectSet;
pub(crate) use engine::propagate_with_root_factor;
pub use engine::{OrphanOutcome, Outcome, SpanIdentity, propagate};
pub use formats::Formats;
pub use ids::{SpanId, TraceId};
pub use inflight::{Inflight, InflightGuard, InflightSpan};
pub use policy::{OrphanPolicy, Policy};
