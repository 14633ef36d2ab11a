//! OTLP protobuf encoding straight from [`SpanRecord`]s (a hop's attributes straight from
//! its facts) into one reused buffer.
//!
//! The export used to convert each record into the SDK's `SpanData` (a copy of every string),
//! then into `opentelemetry-proto`'s generated structs (another copy), then encode those: about
//! 3 µs and dozens of allocations per span. Here a batch is written as the wire format of an
//! `ExportTraceServiceRequest` directly: the resource and scope are encoded once when the
//! exporter starts, each span is written into a scratch buffer and copied behind its length
//! — no allocation per span, and the buffers keep their capacity from batch to batch.
//!
//! The bytes decode to what the SDK path produced for the same spans (the tests compare
//! them field by field): `flags` carries the sampled bit and the OTLP "is remote" bits
//! (a server span's parent is remote), `status` is always present, ids and times as OTLP
//! defines them (`opentelemetry/proto/trace/v1/trace.proto`).

use std::time::SystemTime;

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::encoded_len_varint;

use super::span::{AttrRef, SpanKind, SpanRecord, SpanStatus};

// Wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// W3C sampled flag, plus OTLP's `SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`.
const FLAGS_LOCAL_PARENT: u32 = 0x01 | 0x100;
/// The same with `SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK`.
const FLAGS_REMOTE_PARENT: u32 = FLAGS_LOCAL_PARENT | 0x200;

/// Encodes batches of spans of one resource and scope into OTLP protobuf, reusing its buffers.
#[derive(Debug)]
pub(crate) struct OtlpEncoder {
    /// `ResourceSpans.resource` (field 1), encoded once.
    resource_field: Vec<u8>,
    /// `ScopeSpans.scope` (field 1), encoded once.
    scope_field: Vec<u8>,
    buf: BytesMut,
    /// The batch's spans as `ScopeSpans.spans` fields, before the enclosing lengths are known.
    spans: Vec<u8>,
    /// One span's body, before its length prefix is known.
    span: Vec<u8>,
}

impl OtlpEncoder {
    /// An encoder for spans of this resource (`service.name` first, as built by the exporter)
    /// and of stitch's instrumentation scope.
    pub(crate) fn new(resource: &[(String, String)]) -> Self {
        let mut attrs = Vec::new();
        for (key, value) in resource {
            put_key_value_str(&mut attrs, 1, key, value);
        }
        let mut resource_field = Vec::new();
        put_len_field(&mut resource_field, 1, &attrs);

        let mut scope = Vec::new();
        put_str_field(&mut scope, 1, SCOPE_NAME);
        put_str_field(&mut scope, 2, SCOPE_VERSION);
        let mut scope_field = Vec::new();
        put_len_field(&mut scope_field, 1, &scope);

        OtlpEncoder {
            resource_field,
            scope_field,
            buf: BytesMut::new(),
            spans: Vec::new(),
            span: Vec::new(),
        }
    }

    /// Encodes one `ExportTraceServiceRequest` holding `spans`. The returned `Bytes` shares
    /// the encoder's buffer; once it is dropped the next batch reuses the allocation.
    ///
    /// One pass: each span is written into a scratch `Vec` with plain pushes, then copied
    /// behind its length prefix (`BytesMut`'s checked per-byte writes, prost's out-of-line
    /// varints and a separate pass computing every span's length first cost about 2,000
    /// instructions per span more).
    pub(crate) fn encode<'a, I>(&mut self, spans: I) -> Bytes
    where
        I: IntoIterator<Item = &'a SpanRecord>,
    {
        self.spans.clear();
        for span in spans {
            self.span.clear();
            put_span(&mut self.span, span);
            put_len_field(&mut self.spans, 2, &self.span);
        }
        let scope_spans_len = self.scope_field.len() + self.spans.len();
        let resource_spans_len = self.resource_field.len() + len_field_len(2, scope_spans_len);
        let total = len_field_len(1, resource_spans_len);

        // The enclosing messages' heads, in the span scratch (free again).
        let head = &mut self.span;
        head.clear();
        put_tag(head, 1, LEN);
        put_varint(resource_spans_len as u64, head);
        head.extend_from_slice(&self.resource_field);
        put_tag(head, 2, LEN);
        put_varint(scope_spans_len as u64, head);
        head.extend_from_slice(&self.scope_field);

        // Reclaims the previous batch's allocation when its `Bytes` is gone.
        self.buf.clear();
        self.buf.reserve(total);
        let buf = &mut self.buf;
        buf.put_slice(head);
        buf.put_slice(&self.spans);
        debug_assert_eq!(buf.len(), total);
        buf.split().freeze()
    }
}

/// The instrumentation scope of stitch's spans.
pub(crate) const SCOPE_NAME: &str = "stitch";
/// The scope's version: stitch's own.
pub(crate) const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");

fn kind_code(kind: SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn flags(span: &SpanRecord) -> u32 {
    // A server span's parent is the caller's (remote) span.
    if span.kind == SpanKind::Server && span.parent_span_id.is_some() {
        FLAGS_REMOTE_PARENT
    } else {
        FLAGS_LOCAL_PARENT
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `(status code, message)` as `Status` encodes them.
fn status(span: &SpanRecord) -> (u64, &str) {
    match &span.status {
        SpanStatus::Unset => (0, ""),
        SpanStatus::Ok => (1, ""),
        SpanStatus::Error { description } => (2, description),
    }
}

fn put_span(buf: &mut Vec<u8>, span: &SpanRecord) {
    put_bytes_field(buf, 1, &span.trace_id);
    put_bytes_field(buf, 2, &span.span_id);
    if let Some(parent) = &span.parent_span_id {
        put_bytes_field(buf, 4, parent);
    }
    put_str_field(buf, 5, &span.name);
    put_tag(buf, 6, VARINT);
    put_varint(kind_code(span.kind), buf);
    for (field, n) in [(7, nanos(span.start)), (8, nanos(span.end))] {
        if n != 0 {
            put_tag(buf, field, FIXED64);
            buf.extend_from_slice(&n.to_le_bytes());
        }
    }
    span.for_each_attribute(|key, value| {
        put_tag(buf, 9, LEN);
        put_varint(key_value_len(key, value) as u64, buf);
        put_key_value(buf, key, value);
    });
    put_tag(buf, 15, LEN);
    put_varint(status_len(span) as u64, buf);
    let (code, message) = status(span);
    if !message.is_empty() {
        put_str_field(buf, 2, message);
    }
    if code != 0 {
        put_tag(buf, 3, VARINT);
        put_varint(code, buf);
    }
    put_tag(buf, 16, FIXED32);
    buf.extend_from_slice(&flags(span).to_le_bytes());
}

fn status_len(span: &SpanRecord) -> usize {
    let (code, message) = status(span);
    let mut len = 0;
    if !message.is_empty() {
        len += str_field_len(2, message);
    }
    if code != 0 {
        len += 1 + encoded_len_varint(code);
    }
    len
}

/// `AnyValue`'s body: one member of its `oneof`, always written (even a zero or `false`).
fn any_value_len(value: AttrRef<'_>) -> usize {
    match value {
        AttrRef::Str(s) => len_field_len(1, s.len()),
        AttrRef::Bool(_) => 2,
        AttrRef::Int(i) => 1 + encoded_len_varint(i as u64),
        AttrRef::F64(_) => 1 + 8,
    }
}

fn key_value_len(key: &str, value: AttrRef<'_>) -> usize {
    str_field_len(1, key) + len_field_len(2, any_value_len(value))
}

fn put_key_value(buf: &mut Vec<u8>, key: &str, value: AttrRef<'_>) {
    put_str_field(buf, 1, key);
    put_tag(buf, 2, LEN);
    put_varint(any_value_len(value) as u64, buf);
    match value {
        AttrRef::Str(s) => {
            // A oneof member is written even when empty.
            put_tag(buf, 1, LEN);
            put_varint(s.len() as u64, buf);
            buf.extend_from_slice(s.as_bytes());
        }
        AttrRef::Bool(b) => {
            put_tag(buf, 2, VARINT);
            buf.push(u8::from(b));
        }
        AttrRef::Int(i) => {
            put_tag(buf, 3, VARINT);
            put_varint(i as u64, buf);
        }
        AttrRef::F64(f) => {
            put_tag(buf, 4, FIXED64);
            buf.extend_from_slice(&f.to_le_bytes());
        }
    }
}

/// A `KeyValue` with a string value, as field `field` of the enclosing message.
fn put_key_value_str(buf: &mut Vec<u8>, field: u32, key: &str, value: &str) {
    let value = AttrRef::Str(value);
    put_tag(buf, field, LEN);
    put_varint(key_value_len(key, value) as u64, buf);
    put_key_value(buf, key, value);
}

fn tag_len(field: u32) -> usize {
    encoded_len_varint(u64::from(field << 3))
}

/// A base-128 varint, inlined: most values written (tags, lengths of keys and short strings,
/// kinds, status codes) take one byte, and prost's out-of-line `encode_varint` cost about
/// 1,000 instructions per span.
#[inline(always)]
fn put_varint(mut value: u64, buf: &mut Vec<u8>) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

fn put_tag(buf: &mut Vec<u8>, field: u32, wire_type: u32) {
    put_varint(u64::from((field << 3) | wire_type), buf);
}

fn len_field_len(field: u32, len: usize) -> usize {
    tag_len(field) + encoded_len_varint(len as u64) + len
}

/// A proto3 string field: absent when empty.
fn str_field_len(field: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        len_field_len(field, s.len())
    }
}

fn put_str_field(buf: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        put_bytes_field(buf, field, s.as_bytes());
    }
}

fn put_bytes_field(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(buf, field, LEN);
    put_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

fn put_len_field(buf: &mut Vec<u8>, field: u32, body: &[u8]) {
    put_bytes_field(buf, field, body);
}

#[cfg(test)]
#[path = "otlp_encode_tests.rs"]
mod tests;
