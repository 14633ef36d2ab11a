//! The marker on a response stitch wrote itself because the upstream failed. A leaf: the
//! forwarder (in `proxy`) sets it and the trace layer (below `proxy`) reads it, so neither
//! has to import the other.

/// Marks a response stitch generated because the upstream could not be reached or failed
/// before answering. It travels as a response extension; the trace layer records its label as
/// the span's `error.type`. The label is `ForwardError::kind` of the proxy's forwarding error:
/// a short, bounded string (`connect_error`, `connect_timeout`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UpstreamFailure(pub &'static str);
