//! Decoding OTLP/HTTP trace exports (`POST /v1/traces`) into span records for the ring.
//!
//! Bodies are `ExportTraceServiceRequest` in protobuf (`application/x-protobuf`) or OTLP
//! JSON (`application/json`: camelCase fields, hex ids, 64-bit integers as strings).
//! Spans with malformed ids are rejected one by one (reported as partial success), never
//! the whole request; an undecodable body is an error (HTTP 400).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode};

use super::ring::SpanResource;
use super::span::{AttrValue, Attribute, SpanKind, SpanRecord, SpanStatus, to_hex};

/// Most resource attributes kept per resource (the rest are dropped: the ring is a
/// debugging view, and each span there is charged its resource's size).
pub(crate) const MAX_RESOURCE_ATTRIBUTES: usize = 64;

/// The body encodings the receiver accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OtlpFormat {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`.
    Json,
}

impl OtlpFormat {
    /// The format named by a `Content-Type` value, ignoring parameters.
    pub(crate) fn from_content_type(ct: &str) -> Option<Self> {
        let essence = ct.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/x-protobuf") {
            Some(OtlpFormat::Protobuf)
        } else if essence.eq_ignore_ascii_case("application/json") {
            Some(OtlpFormat::Json)
        } else {
            None
        }
    }

    /// The metric label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OtlpFormat::Protobuf => "protobuf",
            OtlpFormat::Json => "json",
        }
    }
}

/// Spans of one resource, ready for the ring.
#[derive(Debug)]
pub(crate) struct ReceivedSpans {
    /// `service.name` of the resource (`unknown_service` if absent).
    pub service: Arc<str>,
    /// The resource's other attributes (at most [`MAX_RESOURCE_ATTRIBUTES`]).
    pub resource: Arc<SpanResource>,
    /// The valid spans.
    pub spans: Vec<SpanRecord>,
}

/// A decoded export request.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    /// Spans grouped by resource.
    pub resources: Vec<ReceivedSpans>,
    /// Spans rejected for malformed ids.
    pub rejected: u64,
}

/// Why a body could not be decoded (the message is safe to return to the client).
#[derive(Debug, thiserror::Error)]
#[error("cannot decode the OTLP {format} body: {reason}")]
pub(crate) struct DecodeError {
    format: &'static str,
    reason: String,
}

/// Decodes an `ExportTraceServiceRequest` body.
pub(crate) fn decode(format: OtlpFormat, body: &[u8]) -> Result<Decoded, DecodeError> {
    let request: ExportTraceServiceRequest = match format {
        OtlpFormat::Protobuf => prost::Message::decode(body).map_err(|e| DecodeError {
            format: "protobuf",
            reason: e.to_string(),
        })?,
        OtlpFormat::Json => serde_json::from_slice(body).map_err(|e| DecodeError {
            format: "JSON",
            reason: e.to_string(),
        })?,
    };
    let mut out = Decoded::default();
    for rs in request.resource_spans {
        let attributes = rs.resource.map(|r| r.attributes).unwrap_or_default();
        let service: Arc<str> = attributes
            .iter()
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| match &v.value {
                Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
                _ => None,
            })
            .unwrap_or("unknown_service")
            .into();
        let resource = attributes
            .into_iter()
            .filter(|kv| kv.key != "service.name")
            .take(MAX_RESOURCE_ATTRIBUTES)
            .filter_map(attribute)
            .collect();
        let mut spans = Vec::new();
        for ss in rs.scope_spans {
            for span in ss.spans {
                match convert(span) {
                    Some(s) => spans.push(s),
                    None => out.rejected += 1,
                }
            }
        }
        out.resources.push(ReceivedSpans {
            service,
            resource: Arc::new(SpanResource::new(resource)),
            spans,
        });
    }
    Ok(out)
}

fn convert(span: Span) -> Option<SpanRecord> {
    let trace_id: [u8; 16] = span.trace_id.as_slice().try_into().ok()?;
    let span_id: [u8; 8] = span.span_id.as_slice().try_into().ok()?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    let parent_span_id = match span.parent_span_id.len() {
        0 => None,
        8 => {
            let p: [u8; 8] = span.parent_span_id.as_slice().try_into().ok()?;
            (p != [0; 8]).then_some(p)
        }
        _ => return None,
    };
    let kind = match span.kind {
        2 => SpanKind::Server,
        3 => SpanKind::Client,
        4 => SpanKind::Producer,
        5 => SpanKind::Consumer,
        _ => SpanKind::Internal,
    };
    let at = |nanos: u64| SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos);
    let status = match span.status {
        Some(s) if s.code == StatusCode::Error as i32 => SpanStatus::Error {
            description: Cow::Owned(s.message),
        },
        Some(s) if s.code == StatusCode::Ok as i32 => SpanStatus::Ok,
        _ => SpanStatus::Unset,
    };
    let start = at(span.start_time_unix_nano);
    Some(SpanRecord {
        trace_id,
        span_id,
        parent_span_id,
        kind,
        name: Cow::Owned(span.name),
        start,
        end: at(span.end_time_unix_nano).max(start),
        attributes: span.attributes.into_iter().filter_map(attribute).collect(),
        hop: None,
        status,
    })
}

fn attribute(kv: KeyValue) -> Option<Attribute> {
    let value = match kv.value?.value? {
        any_value::Value::StringValue(s) => AttrValue::from(s),
        any_value::Value::BoolValue(b) => AttrValue::Bool(b),
        any_value::Value::IntValue(i) => AttrValue::Int(i),
        any_value::Value::DoubleValue(f) => AttrValue::F64(f),
        any_value::Value::BytesValue(b) => AttrValue::from(to_hex(&b)),
        // Arrays and maps are shown flattened: the ring is a debugging view.
        other => AttrValue::from(format!("{:?}", AnyValue { value: Some(other) })),
    };
    Some(Attribute {
        key: Cow::Owned(kv.key),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_body_with_hex_ids_and_string_times_decodes() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"orders"}},{"key":"host.name","value":{"stringValue":"node-1"}}]},
          "scopeSpans":[{"spans":[
            {"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","parentSpanId":"",
             "name":"GET","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000005000000",
             "attributes":[{"key":"http.response.status_code","value":{"intValue":"200"}}],
             "status":{"code":2,"message":"boom"}},
            {"traceId":"00","spanId":"b7ad6b7169203331","name":"bad"}
          ]}]}]}"#;
        let d = decode(OtlpFormat::Json, body).expect("valid JSON");
        assert_eq!(d.rejected, 1);
        assert_eq!(&*d.resources[0].service, "orders");
        let resource = d.resources[0].resource.attributes();
        assert_eq!(resource.len(), 1, "service.name is not repeated");
        assert_eq!(
            (&*resource[0].key, &resource[0].value),
            ("host.name", &"node-1".into())
        );
        let s = &d.resources[0].spans[0];
        assert_eq!(to_hex(&s.trace_id), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(s.parent_span_id, None);
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(s.duration(), Duration::from_millis(5));
        assert_eq!(
            s.attr("http.response.status_code"),
            Some(AttrValue::Int(200))
        );
        assert!(s.status.is_error());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(OtlpFormat::Json, b"{not json").is_err());
        assert!(decode(OtlpFormat::Protobuf, &[0xff, 0xff, 0xff, 0x01, 0x02]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode(OtlpFormat::Protobuf, &body);
            let _ = decode(OtlpFormat::Json, &body);
        }

        #[test]
        fn mutated_valid_bodies_never_panic(flips in proptest::collection::vec((0usize..4096, proptest::num::u8::ANY), 1..8)) {
            let mut body = prost::Message::encode_to_vec(&valid_request());
            let len = body.len();
            for (i, b) in flips {
                body[i % len] = b;
            }
            let _ = decode(OtlpFormat::Protobuf, &body);
        }
    }

    fn valid_request() -> ExportTraceServiceRequest {
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            parent_span_id: vec![3; 8],
            name: "GET".to_owned(),
            kind: 2,
            start_time_unix_nano: 1,
            end_time_unix_nano: u64::MAX,
            attributes: vec![KeyValue {
                key: "k".to_owned(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("v".to_owned())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        let body = prost::Message::encode_to_vec(&valid_request());
        let d = decode(OtlpFormat::Protobuf, &body).expect("valid");
        assert_eq!(d.resources[0].spans.len(), 1);
        assert_eq!(&*d.resources[0].service, "unknown_service");
    }

    #[test]
    fn content_types_are_matched_without_parameters() {
        assert_eq!(
            OtlpFormat::from_content_type("application/json; charset=utf-8"),
            Some(OtlpFormat::Json)
        );
        assert_eq!(
            OtlpFormat::from_content_type("application/x-protobuf"),
            Some(OtlpFormat::Protobuf)
        );
        assert_eq!(OtlpFormat::from_content_type("text/plain"), None);
    }
}
