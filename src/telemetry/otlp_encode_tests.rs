//! The direct encoding against the SDK path it replaced (`SpanRecord` → `SpanData` →
//! `opentelemetry-proto` → prost), on the same spans and resource.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId as OtelSpanId, SpanKind as OtelKind, Status, TraceFlags,
    TraceId as OtelTraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use prost::Message;

use super::{OtlpEncoder, SCOPE_NAME, SCOPE_VERSION};
use crate::telemetry::semconv::RequestFacts;
use crate::telemetry::span::{AttrValue, SpanKind, SpanRecord, SpanStatus};

/// The conversion stitch used before, kept here as the reference.
fn to_span_data(span: &SpanRecord, scope: &InstrumentationScope) -> SpanData {
    let span_context = SpanContext::new(
        OtelTraceId::from_bytes(span.trace_id),
        OtelSpanId::from_bytes(span.span_id),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    );
    let span_kind = match span.kind {
        SpanKind::Server => OtelKind::Server,
        SpanKind::Client => OtelKind::Client,
        SpanKind::Internal => OtelKind::Internal,
        SpanKind::Producer => OtelKind::Producer,
        SpanKind::Consumer => OtelKind::Consumer,
    };
    let attributes = span
        .all_attributes()
        .iter()
        .map(|a| {
            let value = match &a.value {
                AttrValue::Str(s) => Value::from(s.to_string()),
                AttrValue::Int(i) => Value::I64(*i),
                AttrValue::F64(f) => Value::F64(*f),
                AttrValue::Bool(b) => Value::Bool(*b),
            };
            KeyValue::new(a.key.clone(), value)
        })
        .collect();
    let status = match &span.status {
        SpanStatus::Unset => Status::Unset,
        SpanStatus::Ok => Status::Ok,
        SpanStatus::Error { description } => Status::Error {
            description: description.clone(),
        },
    };
    SpanData {
        span_context,
        parent_span_id: span
            .parent_span_id
            .map_or(OtelSpanId::INVALID, OtelSpanId::from_bytes),
        parent_span_is_remote: span.kind == SpanKind::Server && span.parent_span_id.is_some(),
        span_kind,
        name: span.name.clone(),
        start_time: span.start,
        end_time: span.end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

fn spans() -> Vec<SpanRecord> {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_733_390_000_123_456_789);
    let mut server = SpanRecord::new(
        [0xab; 16],
        [1; 8],
        Some([2; 8]),
        SpanKind::Server,
        "GET",
        t0,
    );
    server.set_attr("http.request.method", "GET");
    server.set_attr("url.path", AttrValue::text("/orders/42?ü"));
    server.set_attr("server.port", 8080i64);
    server.set_attr("http.response.status_code", 503i64);
    server.set_attr("negative", -7i64);
    server.set_attr("zero", 0i64);
    server.set_attr("flag.false", false);
    server.set_attr("flag.true", true);
    server.set_attr("ratio", AttrValue::F64(0.25));
    server.set_attr("ratio.zero", AttrValue::F64(0.0));
    server.set_attr("empty", AttrValue::text(""));
    server.set_attr("long", AttrValue::from("x".repeat(300)));
    let server = server.finish(t0 + Duration::from_millis(12));

    let mut client = SpanRecord::new(
        [0xcd; 16],
        [3; 8],
        None,
        SpanKind::Client,
        Cow::Owned("inventory.v1.Stock/Reserve".to_owned()),
        t0,
    );
    client.set_attr("rpc.system", "grpc");
    client.status = SpanStatus::Error {
        description: "gRPC status UNAVAILABLE".into(),
    };
    client.end = t0 + Duration::from_micros(1500);

    // A client span with a parent (a local one), other kinds, OK status, no attributes.
    let mut others: Vec<SpanRecord> = [
        SpanKind::Client,
        SpanKind::Internal,
        SpanKind::Producer,
        SpanKind::Consumer,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, kind)| {
        let mut s = SpanRecord::new([9; 16], [10 + i as u8; 8], Some([9; 8]), kind, "", t0);
        s.status = SpanStatus::Ok;
        s.attributes.clear();
        s
    })
    .collect();
    // The epoch itself: a zero time is absent on the wire in both paths.
    others[0].start = SystemTime::UNIX_EPOCH;
    others[0].end = SystemTime::UNIX_EPOCH;
    let mut all = vec![server, client];
    all.append(&mut others);
    all.append(&mut hop_spans(t0));
    all
}

/// Stitch's own spans, whose attributes are encoded from their hop facts: every kind of
/// fact set (an extension method, a query, an IPv6 client, a URI authority with userinfo,
/// gRPC names and status, a failure class, an HTTP status as error type, propagation facts).
fn hop_spans(t0: SystemTime) -> Vec<SpanRecord> {
    let open = |kind, req: http::Request<()>, client: Option<&str>| {
        let (parts, ()) = req.into_parts();
        let mut facts = RequestFacts::from_parts(&parts);
        facts.client_address = client.map(|ip| ip.parse().expect("valid ip"));
        facts.destination_port = Some(15001);
        facts.record_query = true;
        SpanRecord::for_request([0xef; 16], [7; 8], Some([8; 8]), kind, &facts, t0)
    };
    let mut http = open(
        SpanKind::Server,
        http::Request::builder()
            .method("PURGE")
            .uri("/cache/item?id=3")
            .header("host", "cache.svc:8080")
            .header(
                "user-agent",
                "a-rather-long-user-agent/1.0 (more than inline)",
            )
            .body(())
            .expect("valid request"),
        Some("fe80::1:2"),
    );
    if let Some(hop) = &mut http.hop {
        hop.dialect = Some("b3".into());
        hop.injected = Some("w3c,b3".into());
        hop.tracestate_restored = true;
        hop.parent_inferred = true;
    }
    http.record_response_head(http::StatusCode::BAD_GATEWAY, &http::HeaderMap::new());
    let http = http.finish(t0 + Duration::from_millis(3));

    let mut grpc = open(
        SpanKind::Client,
        http::Request::post("http://user@inventory.svc:9000/inventory.v1.Stock/Reserve")
            .header("content-type", "application/grpc")
            .body(())
            .expect("valid request"),
        None,
    );
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
    grpc.record_response_head(http::StatusCode::OK, &http::HeaderMap::new());
    grpc.record_trailers(&trailers);
    let grpc = grpc.finish(t0 + Duration::from_millis(4));

    let mut failed = open(
        SpanKind::Client,
        http::Request::get("/x").body(()).expect("valid request"),
        Some("10.1.2.3"),
    );
    failed.record_failure("connect_error");
    let failed = failed.finish(t0 + Duration::from_millis(5));
    vec![http, grpc, failed]
}

fn resource() -> Vec<(String, String)> {
    [
        ("service.name", "orders"),
        ("telemetry.sdk.name", "stitch"),
        ("telemetry.sdk.language", "rust"),
        ("telemetry.sdk.version", SCOPE_VERSION),
        ("k8s.pod.name", "orders-7f9"),
        ("deployment.environment", "prod=eu,1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The SDK's resource is a hash map: its attribute order means nothing, so sort both.
fn normalised(mut request: ExportTraceServiceRequest) -> ExportTraceServiceRequest {
    for rs in &mut request.resource_spans {
        if let Some(r) = &mut rs.resource {
            r.attributes.sort_by(|a, b| a.key.cmp(&b.key));
        }
    }
    request
}

fn sdk_encoding(spans: &[SpanRecord]) -> ExportTraceServiceRequest {
    let scope = InstrumentationScope::builder(SCOPE_NAME)
        .with_version(SCOPE_VERSION)
        .build();
    let resource = Resource::builder_empty()
        .with_attributes(resource().into_iter().map(|(k, v)| KeyValue::new(k, v)))
        .build();
    let data = spans.iter().map(|s| to_span_data(s, &scope)).collect();
    let bytes = ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(
            data,
            &ResourceAttributesWithSchema::from(&resource),
        ),
    }
    .encode_to_vec();
    ExportTraceServiceRequest::decode(&bytes[..]).expect("the SDK's bytes decode")
}

#[test]
fn direct_encoding_decodes_to_what_the_sdk_path_produced() {
    let spans = spans();
    let mut encoder = OtlpEncoder::new(&resource());
    let bytes = encoder.encode(spans.iter());
    let ours = ExportTraceServiceRequest::decode(&bytes[..]).expect("our bytes decode");
    let theirs = sdk_encoding(&spans);
    assert_eq!(normalised(ours.clone()), normalised(theirs));

    // Spot checks that would catch both paths being wrong the same way.
    let scope_spans = &ours.resource_spans[0].scope_spans[0];
    assert_eq!(
        scope_spans.scope.as_ref().map(|s| s.name.as_str()),
        Some("stitch")
    );
    let server = &scope_spans.spans[0];
    assert_eq!(server.trace_id, vec![0xab; 16]);
    assert_eq!(server.parent_span_id, vec![2; 8]);
    assert_eq!(server.flags, 0x301, "sampled, remote parent");
    assert_eq!(server.kind, 2);
    assert_eq!(
        server.end_time_unix_nano - server.start_time_unix_nano,
        12_000_000
    );
    assert_eq!(server.status.as_ref().map(|s| s.code), Some(2), "HTTP 503");
    assert_eq!(scope_spans.spans[1].flags, 0x101, "no parent");
    assert_eq!(
        scope_spans.spans[2].flags, 0x101,
        "a client's parent is local"
    );
}

#[test]
fn one_span_and_a_reused_buffer_encode_the_same() {
    let spans = spans();
    let mut encoder = OtlpEncoder::new(&resource());
    for span in &spans {
        // Each batch reuses the buffer the previous one released.
        let bytes = encoder.encode(std::iter::once(span));
        let ours = ExportTraceServiceRequest::decode(&bytes[..]).expect("decodes");
        assert_eq!(
            normalised(ours),
            normalised(sdk_encoding(std::slice::from_ref(span)))
        );
    }
}

#[test]
fn varints_match_prost() {
    for value in [
        0,
        1,
        127,
        128,
        300,
        16_383,
        16_384,
        u64::from(u32::MAX),
        1 << 63,
        u64::MAX,
    ] {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        super::put_varint(value, &mut ours);
        prost::encoding::encode_varint(value, &mut theirs);
        assert_eq!(ours, theirs, "{value}");
        assert_eq!(ours.len(), prost::encoding::encoded_len_varint(value));
    }
}
