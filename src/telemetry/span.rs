//! The owned record of one finished span: what the trace layer produces, what the ring
//! stores and what the exporter converts to OTLP.
//!
//! Plain data on purpose: ids are `Copy` arrays, strings are `Cow<'static, str>` so the
//! semantic-convention keys and static names cost no allocation, and nothing here holds a
//! handle — a record can be built in a unit test without any runtime.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use compact_str::CompactString;

/// A 128-bit trace id, as the propagation engine writes it into the headers.
pub type TraceId = [u8; 16];
/// A 64-bit span id.
pub type SpanId = [u8; 8];

/// The OTLP span kind; stitch itself produces only `Server` (inbound) and `Client`
/// (outbound), the others arrive through the OTLP receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanKind {
    /// A peer called the app (inbound hop).
    Server,
    /// The app called a peer (outbound hop).
    Client,
    /// In-process work (received spans only).
    Internal,
    /// A message sent to a broker (received spans only).
    Producer,
    /// A message received from a broker (received spans only).
    Consumer,
}

impl SpanKind {
    /// Lower-case name used in JSON and the waterfall.
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Internal => "internal",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }
}

/// A typed attribute value, mirroring the scalar OTLP `AnyValue` cases.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// A string value. A `CompactString` keeps static strings by reference and strings of up
    /// to 24 bytes (most paths, IPv4 addresses, short host names) inline: a hop's span then
    /// costs fewer allocations to build and fewer cold frees when the ring evicts it.
    Str(CompactString),
    /// An integer value (status codes, ports).
    Int(i64),
    /// A floating-point value.
    F64(f64),
    /// A boolean value (`stitch.parent.inferred`).
    Bool(bool),
}

impl AttrValue {
    /// The value rendered as text, for JSON and HTML views.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            AttrValue::Str(s) => serde_json::Value::from(s.as_str()),
            AttrValue::Int(i) => serde_json::Value::from(*i),
            AttrValue::F64(f) => serde_json::Value::from(*f),
            AttrValue::Bool(b) => serde_json::Value::from(*b),
        }
    }

    pub(crate) fn approx_bytes(&self) -> usize {
        match self {
            AttrValue::Str(s) => s.len(),
            _ => 8,
        }
    }
}

impl AttrValue {
    /// A string value copied from borrowed text (inline when short).
    pub fn text(s: &str) -> Self {
        AttrValue::Str(CompactString::new(s))
    }
}

impl From<&'static str> for AttrValue {
    fn from(s: &'static str) -> Self {
        AttrValue::Str(CompactString::const_new(s))
    }
}
impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        AttrValue::Str(CompactString::from(s))
    }
}
impl From<CompactString> for AttrValue {
    fn from(s: CompactString) -> Self {
        AttrValue::Str(s)
    }
}
impl From<i64> for AttrValue {
    fn from(i: i64) -> Self {
        AttrValue::Int(i)
    }
}
impl From<bool> for AttrValue {
    fn from(b: bool) -> Self {
        AttrValue::Bool(b)
    }
}

/// One attribute: a key (usually a [`crate::telemetry::semconv`] constant) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    /// The attribute name.
    pub key: Cow<'static, str>,
    /// The attribute value.
    pub value: AttrValue,
}

/// The span status, as OTLP defines it.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum SpanStatus {
    /// No verdict (the default for successful hops: the conventions leave OK to apps).
    #[default]
    Unset,
    /// Explicitly OK (received spans only).
    Ok,
    /// The hop failed.
    Error {
        /// Why, in a few words (never a header value).
        description: Cow<'static, str>,
    },
}

impl SpanStatus {
    /// Whether the span is marked as failed.
    pub fn is_error(&self) -> bool {
        matches!(self, SpanStatus::Error { .. })
    }

    /// Lower-case name used in JSON and filters.
    pub fn as_str(&self) -> &'static str {
        match self {
            SpanStatus::Unset => "unset",
            SpanStatus::Ok => "ok",
            SpanStatus::Error { .. } => "error",
        }
    }
}

/// One finished span. The trace layer fills it; the sink ships it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// The trace the span belongs to.
    pub trace_id: TraceId,
    /// This span's id (the one written into the forwarded headers).
    pub span_id: SpanId,
    /// The parent as decided by the propagation engine; `None` for a root.
    pub parent_span_id: Option<SpanId>,
    /// Server for inbound hops, Client for outbound.
    pub kind: SpanKind,
    /// `{method}` for HTTP, `{package.Service}/{Method}` for gRPC (see [`crate::telemetry::semconv`]).
    pub name: Cow<'static, str>,
    /// When the request head arrived.
    pub start: SystemTime,
    /// When the response stream ended, failed or was cancelled.
    pub end: SystemTime,
    /// Semantic-convention and stitch attributes.
    pub attributes: Vec<Attribute>,
    /// Unset unless the error rule marked the hop failed.
    pub status: SpanStatus,
}

impl SpanRecord {
    /// A span with no attributes, starting and ending at `start`: the base the helpers fill.
    pub fn new(
        trace_id: TraceId,
        span_id: SpanId,
        parent_span_id: Option<SpanId>,
        kind: SpanKind,
        name: impl Into<Cow<'static, str>>,
        start: SystemTime,
    ) -> Self {
        SpanRecord {
            trace_id,
            span_id,
            parent_span_id,
            kind,
            name: name.into(),
            start,
            end: start,
            // An HTTP hop's span carries 9–12 attributes (gRPC a few more): one allocation
            // sized for the common case, which the ring then holds for thousands of spans.
            attributes: Vec::with_capacity(12),
            status: SpanStatus::Unset,
        }
    }

    /// Sets (or replaces) an attribute.
    pub fn set_attr(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<AttrValue>) {
        let key = key.into();
        let value = value.into();
        match self.attributes.iter_mut().find(|a| a.key == key) {
            Some(existing) => existing.value = value,
            None => self.attributes.push(Attribute { key, value }),
        }
    }

    /// Appends an attribute whose key the caller knows is not set yet (no search): how
    /// [`SpanRecord::for_request`] fills a fresh span.
    pub(crate) fn push_attr(&mut self, key: &'static str, value: impl Into<AttrValue>) {
        self.attributes.push(Attribute {
            key: Cow::Borrowed(key),
            value: value.into(),
        });
    }

    /// The value of an attribute, if set.
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes
            .iter()
            .find(|a| a.key == key)
            .map(|a| &a.value)
    }

    /// How long the hop took (zero if the clock went backwards).
    pub fn duration(&self) -> Duration {
        self.end.duration_since(self.start).unwrap_or_default()
    }

    /// A rough memory footprint, used to bound the ring by bytes.
    pub fn approx_bytes(&self) -> usize {
        let attrs: usize = self
            .attributes
            .iter()
            .map(|a| a.key.len() + a.value.approx_bytes() + 32)
            .sum();
        std::mem::size_of::<SpanRecord>() + self.name.len() + attrs
    }
}

/// Lower-case hex of an id, the form used in JSON, URLs and headers.
pub fn to_hex(id: &[u8]) -> String {
    let mut out = vec![0; id.len() * 2];
    crate::propagation::ids::encode_hex(id, &mut out);
    // Only ASCII hex digits were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Parses an id from hex (either case); `None` unless exactly `N` bytes of valid hex.
pub fn from_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    crate::propagation::ids::decode_hex_exact::<N>(s.as_bytes(), true).map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_bad_input() {
        let id = [0xab, 0x01, 0xff, 0x00, 0x10, 0x20, 0x30, 0x40];
        let hex = to_hex(&id);
        assert_eq!(hex, "ab01ff0010203040");
        assert_eq!(from_hex::<8>(&hex), Some(id));
        assert_eq!(from_hex::<8>("AB01FF0010203040"), Some(id));
        assert_eq!(from_hex::<8>("ab01ff001020304"), None);
        assert_eq!(from_hex::<8>("zz01ff0010203040"), None);
    }

    #[test]
    fn set_attr_replaces_existing_key() {
        let mut s = SpanRecord::new(
            [1; 16],
            [2; 8],
            None,
            SpanKind::Server,
            "GET",
            SystemTime::UNIX_EPOCH,
        );
        s.set_attr("a", 1i64);
        s.set_attr("a", 2i64);
        assert_eq!(s.attributes.len(), 1);
        assert_eq!(s.attr("a"), Some(&AttrValue::Int(2)));
    }
}
