//! The owned record of one finished span: what the trace layer produces, what the ring
//! stores and what the exporter converts to OTLP.
//!
//! Plain data on purpose: ids are `Copy` arrays, attribute keys and span names are
//! `Cow<'static, str>` so the semantic-convention keys and static names cost no allocation,
//! string values are [`CompactString`]s (static strings by reference, short ones inline), and
//! nothing here holds a handle — a record can be built in a unit test without any runtime.
//! Stitch's own spans keep their hop's facts instead of most attributes
//! (`telemetry::hop_facts`): read a span's attributes with
//! [`SpanRecord::for_each_attribute`] or [`SpanRecord::all_attributes`].
//!
//! The whole `impl SpanRecord` lives here: the plain accessors, and the methods that fill a
//! hop's span by the semantic conventions whose names and rules are in
//! [`super::semconv`].

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use compact_str::CompactString;
use http::{HeaderMap, HeaderName, StatusCode};

pub use super::hop_facts::AttrRef;
use super::hop_facts::{ErrorType, HopFacts};
use super::semconv::{
    ERROR_TYPE, HTTP_RESPONSE_STATUS_CODE, RPC_GRPC_STATUS_CODE, RPC_SYSTEM, RequestFacts,
    STITCH_PARENT_INFERRED, STITCH_PROPAGATION_REPAIRS, STITCH_TRACESTATE_RESTORED, URL_QUERY,
    authority_text, grpc_code_name, grpc_service_method, known_method,
};

/// `grpc-status`, parsed once (a `&str` key is parsed and validated on every lookup).
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

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
    /// Attributes set one by one: all of a received span's; on stitch's own spans only the
    /// rare ones (`url.query`, repairs, conflicts), the rest being in its hop facts. Read
    /// them all with [`SpanRecord::for_each_attribute`] or [`SpanRecord::all_attributes`].
    pub attributes: Vec<Attribute>,
    /// Unset unless the error rule marked the hop failed.
    pub status: SpanStatus,
    /// On stitch's own spans, the hop's facts, which become attributes when read.
    pub(crate) hop: Option<HopFacts>,
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
            attributes: Vec::new(),
            status: SpanStatus::Unset,
            hop: None,
        }
    }

    /// Sets (or replaces) an attribute in [`SpanRecord::attributes`]. On stitch's own spans
    /// use it only for keys the hop facts do not make (they would be listed twice).
    pub fn set_attr(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<AttrValue>) {
        let key = key.into();
        let value = value.into();
        match self.attributes.iter_mut().find(|a| a.key == key) {
            Some(existing) => existing.value = value,
            None => self.attributes.push(Attribute { key, value }),
        }
    }

    /// Appends an attribute whose key the caller knows is not set yet (no search).
    pub(crate) fn push_attr(&mut self, key: &'static str, value: impl Into<AttrValue>) {
        self.attributes.push(Attribute {
            key: Cow::Borrowed(key),
            value: value.into(),
        });
    }

    /// Calls `f` with every attribute: the hop facts' first (in the conventions' order),
    /// then those set one by one. Allocates nothing for the common values.
    pub fn for_each_attribute(&self, mut f: impl FnMut(&str, AttrRef<'_>)) {
        if let Some(hop) = &self.hop {
            hop.visit(&mut f);
        }
        for a in &self.attributes {
            f(&a.key, AttrRef::from(&a.value));
        }
    }

    /// Every attribute as a list: borrowed for a received span, built from the facts for
    /// one of stitch's own (the admin views' read; the export encodes without it).
    pub fn all_attributes(&self) -> Cow<'_, [Attribute]> {
        if self.hop.is_none() {
            return Cow::Borrowed(&self.attributes);
        }
        let mut all = Vec::with_capacity(16);
        self.for_each_attribute(|key, value| {
            all.push(Attribute {
                key: Cow::Owned(key.to_owned()),
                value: value.to_value(),
            });
        });
        Cow::Owned(all)
    }

    /// The same span with its hop facts turned into attributes: what the admin views read.
    pub fn materialized(&self) -> SpanRecord {
        SpanRecord {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            kind: self.kind,
            name: self.name.clone(),
            start: self.start,
            end: self.end,
            attributes: self.all_attributes().into_owned(),
            status: self.status.clone(),
            hop: None,
        }
    }

    /// The value of an attribute, if set (the first, when set twice).
    pub fn attr(&self, key: &str) -> Option<AttrValue> {
        let mut found = None;
        self.for_each_attribute(|k, value| {
            if found.is_none() && k == key {
                found = Some(value.to_value());
            }
        });
        found
    }

    /// Whether the orphan policy guessed the parent (`stitch.parent.inferred`), read without
    /// rendering a hop's attributes: the trace list checks it on every span.
    pub fn parent_inferred(&self) -> bool {
        match &self.hop {
            Some(hop) => hop.parent_inferred,
            None => self.attr(STITCH_PARENT_INFERRED) == Some(AttrValue::Bool(true)),
        }
    }

    /// Whether stitch repaired a header or restored a `tracestate` on this hop.
    pub fn repaired(&self) -> bool {
        let restored = self.hop.as_ref().is_some_and(|h| h.tracestate_restored);
        restored
            || self
                .attributes
                .iter()
                .any(|a| a.key == STITCH_PROPAGATION_REPAIRS || a.key == STITCH_TRACESTATE_RESTORED)
    }

    /// How long the hop took (zero if the clock went backwards).
    pub fn duration(&self) -> Duration {
        self.end.duration_since(self.start).unwrap_or_default()
    }

    /// A rough memory footprint, used to bound the ring by bytes.
    pub(crate) fn approx_bytes(&self) -> usize {
        let attrs: usize = self
            .attributes
            .iter()
            .map(|a| a.key.len() + a.value.approx_bytes() + 32)
            .sum();
        let facts = self.hop.as_ref().map_or(0, HopFacts::heap_bytes);
        std::mem::size_of::<SpanRecord>() + self.name.len() + attrs + facts
    }

    /// Opens a hop's span from the request head: name by the convention, the request's facts
    /// copied, `end` equal to `start` until [`SpanRecord::finish`].
    pub fn for_request(
        trace_id: TraceId,
        span_id: SpanId,
        parent_span_id: Option<SpanId>,
        kind: SpanKind,
        facts: &RequestFacts<'_>,
        start: SystemTime,
    ) -> SpanRecord {
        let path = facts.uri.path();
        let grpc = if facts.grpc {
            grpc_service_method(path)
        } else {
            None
        };
        let name: Cow<'static, str> = match (grpc, known_method(facts.method)) {
            (Some((service, method)), _) => Cow::Owned(format!("{service}/{method}")),
            (None, Some(m)) => Cow::Borrowed(m),
            (None, None) => Cow::Borrowed("HTTP"),
        };
        let mut attributes = Vec::new();
        if facts.record_query
            && let Some(q) = facts.uri.query()
        {
            attributes.push(Attribute {
                key: Cow::Borrowed(URL_QUERY),
                value: AttrValue::text(q),
            });
        }
        let (authority, authority_in_uri) = authority_text(facts);
        // One literal, so the facts are written in place rather than built and moved in.
        SpanRecord {
            trace_id,
            span_id,
            parent_span_id,
            kind,
            name,
            start,
            end: start,
            attributes,
            status: SpanStatus::Unset,
            hop: Some(HopFacts {
                method: facts.method.clone(),
                path: CompactString::new(path),
                https: facts.uri.scheme_str() == Some("https"),
                authority: authority.map(CompactString::new),
                authority_in_uri,
                destination_port: facts.destination_port,
                client: facts.client_address,
                version: facts.version,
                user_agent: facts
                    .headers
                    .get(http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .map(CompactString::new),
                rpc: grpc.is_some(),
                dialect: None,
                injected: None,
                tracestate_restored: false,
                parent_inferred: false,
                status_code: None,
                grpc_status: None,
                error_type: None,
            }),
        }
    }

    /// Records the response head: status code, and `grpc-status` of a trailers-only
    /// gRPC response.
    pub fn record_response_head(&mut self, status: StatusCode, headers: &HeaderMap) {
        match &mut self.hop {
            Some(hop) => hop.status_code = Some(status.as_u16()),
            None => self.set_attr(HTTP_RESPONSE_STATUS_CODE, i64::from(status.as_u16())),
        }
        self.record_trailers(headers);
    }

    /// Records `grpc-status` from the trailers (or a trailers-only response head).
    pub fn record_trailers(&mut self, trailers: &HeaderMap) {
        let rpc = match &self.hop {
            Some(hop) => hop.rpc,
            None => self.attr(RPC_SYSTEM).is_some(),
        };
        if !rpc {
            return;
        }
        if let Some(code) = trailers
            .get(&GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<i64>().ok())
        {
            match &mut self.hop {
                Some(hop) => hop.grpc_status = Some(code),
                None => self.set_attr(RPC_GRPC_STATUS_CODE, code),
            }
        }
    }

    /// Marks the hop failed because the upstream could not be reached or broke
    /// (`error_type` is a low-cardinality class such as `connect_error`, `timeout`).
    pub(crate) fn record_failure(&mut self, error_type: &'static str) {
        self.set_error_type(ErrorType::Named(error_type));
        self.status = SpanStatus::Error {
            description: Cow::Borrowed(error_type),
        };
    }

    fn set_error_type(&mut self, error: ErrorType) {
        match (&mut self.hop, error) {
            (Some(hop), _) => hop.error_type = Some(error),
            (None, ErrorType::Named(name)) => self.set_attr(ERROR_TYPE, name),
            (None, ErrorType::Status(code)) => self.set_attr(ERROR_TYPE, code.to_string()),
        }
    }

    /// The gRPC status and the HTTP status code recorded, read from the facts of stitch's
    /// own spans without rendering every attribute.
    fn status_codes(&self) -> (Option<i64>, Option<i64>) {
        if let Some(hop) = &self.hop {
            return (hop.grpc_status, hop.status_code.map(i64::from));
        }
        let int = |key| match self.attr(key) {
            Some(AttrValue::Int(c)) => Some(c),
            _ => None,
        };
        (int(RPC_GRPC_STATUS_CODE), int(HTTP_RESPONSE_STATUS_CODE))
    }

    /// Ends the span at `end` and applies the error rule.
    pub fn finish(mut self, end: SystemTime) -> SpanRecord {
        self.close(end);
        self
    }

    /// [`SpanRecord::finish`] in place, for a record already behind its `Arc`.
    pub fn close(&mut self, end: SystemTime) {
        self.end = end;
        self.apply_error_rule();
    }

    fn apply_error_rule(&mut self) {
        if self.status.is_error() {
            return;
        }
        let (grpc_code, http_status) = self.status_codes();
        if let Some(code) = grpc_code {
            if code != 0 {
                let name = grpc_code_name(code);
                self.set_error_type(ErrorType::Named(name));
                self.status = SpanStatus::Error {
                    description: Cow::Owned(format!("gRPC status {name}")),
                };
            }
            return;
        }
        let Some(status) = http_status else {
            return;
        };
        let failed = match self.kind {
            SpanKind::Client => status >= 400,
            _ => status >= 500,
        };
        if failed {
            match u16::try_from(status) {
                Ok(code) => self.set_error_type(ErrorType::Status(code)),
                Err(_) => self.set_attr(ERROR_TYPE, status.to_string()),
            }
            self.status = SpanStatus::Error {
                description: Cow::Owned(format!("HTTP {status}")),
            };
        }
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
        assert_eq!(s.attr("a"), Some(AttrValue::Int(2)));
    }
}
