//! The trace-context engine: one strict parser and writer per dialect, free of I/O.
//!
//! - [`ids`]: `TraceId`/`SpanId` as arrays with allocation-free hex.
//! - [`context`]: the dialect-neutral [`TraceContext`], [`Dialect`] names, repair kinds.
//! - [`w3c`] + [`tracestate`]: W3C Trace Context Level 2.
//! - [`b3`]: B3 single and multi header. [`jaeger`]: `uber-trace-id`.
//! - [`template`]: user-defined formats from the rules file.
//! - [`baggage`]: W3C Baggage limits (the header itself passes untouched).
//! - [`inflight`]: the registry of in-flight inbound server spans.
//! - [`engine`]: [`propagate`], the one call per request hop the trace layer makes.
//!
//! Parsers never panic and never allocate; a bad header is never an error on the request path
//! (invalid means absent, reported in the [`Outcome`]).

pub mod b3;
pub mod baggage;
pub mod context;
pub mod dialect_set;
pub mod engine;
pub mod ids;
pub mod inflight;
pub mod jaeger;
pub mod template;
pub mod tracestate;
pub mod w3c;

pub use context::{Dialect, Invalid, RepairKind, RepairMode, Repairs, TraceContext};
pub use dialect_set::DialectSet;
pub use engine::{OrphanOutcome, Outcome, SpanIdentity, propagate, propagate_with_root_factor};
pub use ids::{SpanId, TraceId};
pub use inflight::{Inflight, InflightGuard, InflightSpan};
