//! The admin server over real sockets: health, `/metrics` as strict OpenMetrics, `/config`,
//! the OTLP/HTTP receiver (protobuf and JSON) feeding `/traces` and `/traces/{id}` with
//! integrity verdicts, and the span sink feeding the same ring.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use stitch::admin::AdminState;
use stitch::telemetry::semconv::STITCH_PARENT_INFERRED;
use stitch::telemetry::{ExportConfig, Protocol, SpanKind, SpanRecord, Telemetry, TelemetryConfig};

use crate::support::metrics::{parse_openmetrics, sample};
use crate::support::telemetry::{admin, chain, hex, otlp_request, post_json, post_protobuf};
use crate::support::{fetch, fetch_json, http_request};

fn state() -> (AdminState, Arc<AtomicBool>) {
    let ready = Arc::new(AtomicBool::new(false));
    (AdminState::new(ready.clone()), ready)
}

#[tokio::test]
async fn health_endpoints_and_method_checks() {
    let (state, ready) = state();
    let (addr, _shutdown) = admin(state).await;
    assert_eq!(fetch(addr, "/live").await.0, StatusCode::OK);
    assert_eq!(
        fetch(addr, "/ready").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    ready.store(true, Ordering::SeqCst);
    assert_eq!(fetch(addr, "/ready").await.0, StatusCode::OK);
    assert_eq!(fetch(addr, "/nope").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        http_request(addr, "POST", "/metrics", &[], Vec::new())
            .await
            .0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        fetch(addr, "/traces/not-hex").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        fetch(addr, &format!("/traces/{}", "ab".repeat(16))).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn metrics_is_valid_openmetrics_with_every_documented_family() {
    let (state, _) = state();
    let metrics = state.metrics.clone();
    let direction = stitch::direction::Direction::Inbound;
    metrics.request_finished(
        direction,
        stitch::telemetry::WireProtocol::Http1,
        stitch::telemetry::StatusClass::from_status(200),
        Duration::from_millis(4),
    );
    let _guard = metrics.connection_opened(direction);
    metrics.bytes_transferred(direction, 10, 20);
    metrics.opaque_connection(direction);
    metrics.upstream_connect(true);
    metrics.upstream_connect(false);
    metrics.upstream_connect(false);
    metrics.detected("http1", Duration::from_micros(300));
    metrics.request_dialect(direction, "none");
    metrics.repair("b3", "pad_trace_id");
    metrics.conflict("w3c", "b3");
    metrics.orphan("new_root");
    metrics.tracestate_restored();
    metrics.invalid_header("jd");
    metrics.baggage_dropped(2);
    metrics.config_reload("ok");
    let (addr, _shutdown) = admin(state).await;
    let (status, headers, body) = fetch(addr, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .expect("content-type");
    assert!(
        ct.starts_with("application/openmetrics-text; version=1.0.0"),
        "{ct}"
    );
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    let samples = parse_openmetrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let expect = |name: &str, labels: &[(&str, &str)], value: f64| {
        assert_eq!(
            sample(&samples, name, labels),
            Some(value),
            "{name}{labels:?}"
        );
    };
    expect(
        "stitch_requests_total",
        &[
            ("direction", "inbound"),
            ("protocol", "http1"),
            ("status_class", "2xx"),
        ],
        1.0,
    );
    expect(
        "stitch_request_duration_seconds_count",
        &[("direction", "inbound"), ("protocol", "http1")],
        1.0,
    );
    expect("stitch_open_connections", &[("direction", "inbound")], 1.0);
    expect(
        "stitch_request_bytes_total",
        &[("direction", "inbound")],
        10.0,
    );
    expect(
        "stitch_response_bytes_total",
        &[("direction", "inbound")],
        20.0,
    );
    expect(
        "stitch_opaque_connections_total",
        &[("direction", "inbound")],
        1.0,
    );
    expect("stitch_upstream_connects_total", &[("result", "ok")], 1.0);
    expect(
        "stitch_upstream_connects_total",
        &[("result", "error")],
        2.0,
    );
    expect("stitch_detect_total", &[("outcome", "http1")], 1.0);
    expect("stitch_detect_duration_seconds_count", &[], 1.0);
    expect(
        "stitch_propagation_requests_total",
        &[("dialect", "none")],
        1.0,
    );
    expect(
        "stitch_propagation_repairs_total",
        &[("dialect", "b3"), ("kind", "pad_trace_id")],
        1.0,
    );
    expect(
        "stitch_propagation_conflicts_total",
        &[("winner", "w3c"), ("loser", "b3")],
        1.0,
    );
    expect(
        "stitch_propagation_orphans_total",
        &[("outcome", "new_root")],
        1.0,
    );
    expect("stitch_propagation_tracestate_restores_total", &[], 1.0);
    expect(
        "stitch_propagation_invalid_headers_total",
        &[("dialect", "jd")],
        1.0,
    );
    expect("stitch_propagation_baggage_dropped_total", &[], 2.0);
    expect("stitch_config_reloads_total", &[("result", "ok")], 1.0);
    expect("stitch_spans_exported_total", &[], 0.0);
    expect("stitch_export_failed_batches_total", &[], 0.0);
    expect("stitch_span_queue_length", &[], 0.0);
    expect("stitch_export_degradation_level", &[], 0.0);
    expect("stitch_root_sampling_factor", &[], 1.0);
}

#[tokio::test]
async fn config_shows_the_hook_and_never_exporter_secrets() {
    let (state, _) = state();
    let (addr, _s) = admin(state.clone()).await;
    assert_eq!(fetch_json(addr, "/config").await, serde_json::json!({}));

    let mut cfg = TelemetryConfig::default();
    let mut export = ExportConfig::new(Protocol::HttpProtobuf, "http://127.0.0.1:9/v1/traces");
    export.headers = vec![("authorization".to_owned(), "Bearer topsecret".to_owned())];
    cfg.export = Some(export);
    let telemetry = Telemetry::start(cfg);
    let view = telemetry.config_view();
    let state = state.with_telemetry(&telemetry).with_config_view(
        move || serde_json::json!({ "rules": { "inject": ["w3c"] }, "telemetry": view }),
    );
    let (addr, _s) = admin(state).await;
    let (status, _, body) = fetch(addr, "/config").await;
    assert_eq!(status, StatusCode::OK);
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("\"inject\":[\"w3c\"]"), "{body}");
    assert!(
        body.contains("authorization"),
        "header names may show: {body}"
    );
    assert!(
        !body.contains("topsecret"),
        "header values never show: {body}"
    );
}

#[tokio::test]
async fn protobuf_and_json_exports_assemble_one_clean_trace() {
    let (state, _) = state();
    let (addr, _s) = admin(state).await;
    let c = chain(1);
    // stitch A sends protobuf, stitch B JSON, and app B (an OTel SDK) JSON: an INTERNAL child.
    let mut app_b = SpanRecord::new(
        c.trace_id,
        [1, 4, 0, 0, 0, 0, 0, 4],
        Some(c.b_in.span_id),
        SpanKind::Internal,
        "reserve stock",
        c.b_in.start + Duration::from_millis(1),
    );
    app_b.end = c.b_in.end - Duration::from_millis(1);
    let (s, h, _) = post_protobuf(addr, &otlp_request("orders", &[&c.a_in, &c.a_out])).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        h.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/x-protobuf")
    );
    let (s, h, body) = post_json(addr, &otlp_request("inventory", &[&c.b_in])).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        h.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    assert_eq!(
        post_json(addr, &otlp_request("inventory-app", &[&app_b]))
            .await
            .0,
        StatusCode::OK
    );

    let trace = fetch_json(addr, &format!("/traces/{}", hex(&c.trace_id))).await;
    assert_eq!(trace["verdict"]["clean"], Value::Bool(true), "{trace}");
    assert_eq!(trace["verdict"]["findings"], serde_json::json!([]));
    let spans = trace["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 4);
    let by = |id: [u8; 8]| {
        spans
            .iter()
            .find(|s| s["span_id"] == hex(&id))
            .unwrap_or_else(|| panic!("span {}", hex(&id)))
    };
    assert_eq!(by(c.a_in.span_id)["service"], "orders");
    assert_eq!(by(c.a_in.span_id)["parent_span_id"], Value::Null);
    assert_eq!(by(c.a_out.span_id)["kind"], "client");
    assert_eq!(by(c.a_out.span_id)["status"], "error");
    assert_eq!(
        by(c.a_out.span_id)["attributes"]["rpc.grpc.status_code"],
        14
    );
    assert_eq!(by(c.b_in.span_id)["service"], "inventory");
    assert_eq!(by(c.b_in.span_id)["parent_span_id"], hex(&c.a_out.span_id));
    assert_eq!(by(app_b.span_id)["kind"], "internal");

    // The list: newest first, with filters.
    let other = chain(2);
    assert_eq!(
        post_protobuf(addr, &otlp_request("orders", &[&other.a_in]))
            .await
            .0,
        StatusCode::OK
    );
    let ids = |v: Value| -> Vec<String> {
        v["traces"]
            .as_array()
            .expect("traces")
            .iter()
            .map(|t| t["trace_id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(
        ids(fetch_json(addr, "/traces").await),
        vec![hex(&other.trace_id), hex(&c.trace_id)]
    );
    assert_eq!(
        ids(fetch_json(addr, "/traces?service=inventory").await),
        vec![hex(&c.trace_id)]
    );
    assert_eq!(
        ids(fetch_json(addr, "/traces?status=error").await),
        vec![hex(&c.trace_id)]
    );
    assert_eq!(
        ids(fetch_json(addr, "/traces?status=ok").await),
        vec![hex(&other.trace_id)]
    );
    assert_eq!(
        ids(fetch_json(addr, "/traces?limit=1").await),
        vec![hex(&other.trace_id)]
    );
    assert!(ids(fetch_json(addr, "/traces?min_duration_ms=60000").await).is_empty());
    let list = fetch_json(addr, "/traces?service=inventory").await;
    assert_eq!(list["traces"][0]["span_count"], 4);
    assert_eq!(list["traces"][0]["root_service"], "orders");
    assert_eq!(list["traces"][0]["clean"], true);
    assert_eq!(
        fetch(addr, "/traces?status=maybe").await.0,
        StatusCode::BAD_REQUEST
    );
}

async fn verdict_of(spans: &[&SpanRecord]) -> Value {
    let (state, _) = state();
    let (addr, _s) = admin(state).await;
    assert_eq!(
        post_protobuf(addr, &otlp_request("svc", spans)).await.0,
        StatusCode::OK
    );
    fetch_json(addr, &format!("/traces/{}", hex(&spans[0].trace_id))).await["verdict"].clone()
}

#[tokio::test]
async fn broken_chains_get_the_right_findings() {
    let c = chain(3);
    let missing_hop = verdict_of(&[&c.a_in, &c.b_in]).await;
    assert_eq!(missing_hop["clean"], false);
    assert_eq!(
        missing_hop["findings"],
        serde_json::json!([{ "kind": "missing_parent", "span_id": hex(&c.b_in.span_id), "parent_span_id": hex(&c.a_out.span_id) }])
    );

    let mut early = c.b_in.clone();
    early.start = c.a_out.start - Duration::from_millis(50);
    let inverted = verdict_of(&[&c.a_in, &c.a_out, &early]).await;
    assert_eq!(inverted["clean"], false);
    assert_eq!(inverted["findings"][0]["kind"], "child_before_parent");
    assert_eq!(inverted["findings"][0]["span_id"], hex(&early.span_id));
    assert_eq!(inverted["findings"][0]["skew_us"], 50_000);

    let mut second_root = c.b_in.clone();
    second_root.parent_span_id = None;
    let two_roots = verdict_of(&[&c.a_in, &second_root]).await;
    assert_eq!(two_roots["clean"], false);
    assert_eq!(two_roots["findings"][0]["kind"], "multiple_roots");
    assert_eq!(
        two_roots["findings"][0]["root_span_ids"],
        serde_json::json!([hex(&c.a_in.span_id), hex(&second_root.span_id)])
    );

    let mut inferred = c.a_out.clone();
    inferred.set_attr(STITCH_PARENT_INFERRED, true);
    let noted = verdict_of(&[&c.a_in, &inferred]).await;
    assert_eq!(noted["clean"], true);
    assert_eq!(noted["findings"][0]["kind"], "inferred_parent");
}

#[tokio::test]
async fn receiver_rejects_garbage_without_panicking() {
    let (mut state, _) = state();
    state.max_otlp_body_bytes = 6000;
    let metrics = state.metrics.clone();
    let (addr, _s) = admin(state).await;
    let post = |ct: &'static str, body: Vec<u8>| async move {
        http_request(addr, "POST", "/v1/traces", &[("content-type", ct)], body).await
    };
    assert_eq!(
        post("application/x-protobuf", vec![0xff, 0xff, 0xff, 0xff, 0x0f])
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post("application/json", b"{\"resourceSpans\": 5}".to_vec())
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post("text/plain", b"hi".to_vec()).await.0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(
        post("application/json", vec![b' '; 8192]).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let gz = http_request(
        addr,
        "POST",
        "/v1/traces",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "br"),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(gz.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let bomb = gzip(&vec![b' '; 1 << 20]);
    assert!(bomb.len() < 6000, "the compressed body itself is small");
    let (status, _, _) = http_request(
        addr,
        "POST",
        "/v1/traces",
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        bomb,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "inflated size is limited too"
    );

    // A span with a malformed id is rejected alone, reported as partial success.
    let c = chain(4);
    let mut req = otlp_request("svc", &[&c.a_in, &c.a_out]);
    req.resource_spans[0].scope_spans[0].spans[1].span_id = vec![1, 2, 3];
    let (status, _, body) = post_json(addr, &req).await;
    assert_eq!(status, StatusCode::OK);
    let answer: Value = serde_json::from_slice(&body).expect("JSON answer");
    let rejected = &answer["partialSuccess"]["rejectedSpans"];
    assert!(rejected == 1 || rejected == "1", "{answer}");
    let trace = fetch_json(addr, &format!("/traces/{}", hex(&c.trace_id))).await;
    assert_eq!(trace["spans"].as_array().map(Vec::len), Some(1));
    let text = metrics.encode();
    let samples = parse_openmetrics(&text).expect("valid");
    assert_eq!(
        sample(&samples, "stitch_otlp_rejected_requests_total", &[]),
        Some(6.0)
    );
    assert_eq!(
        sample(
            &samples,
            "stitch_otlp_received_spans_total",
            &[("format", "json")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn spans_recorded_through_the_sink_show_in_traces() {
    let telemetry = Telemetry::start(TelemetryConfig::default().with_service_name("orders"));
    let (state, _) = state();
    let (addr, _s) = admin(state.with_telemetry(&telemetry)).await;
    let c = chain(5);
    let sink = telemetry.sink();
    for s in [c.a_in.clone(), c.a_out.clone(), c.b_in.clone()] {
        sink.record(s);
    }
    telemetry.flush().await;
    let trace = fetch_json(addr, &format!("/traces/{}", hex(&c.trace_id))).await;
    let spans = trace["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 3);
    assert!(spans.iter().all(|s| s["service"] == "orders"));
    assert_eq!(trace["verdict"]["clean"], true);
    // Exporting to ourselves must not duplicate spans already in the ring.
    assert_eq!(
        post_protobuf(addr, &otlp_request("orders", &[&c.a_in]))
            .await
            .0,
        StatusCode::OK
    );
    let trace = fetch_json(addr, &format!("/traces/{}", hex(&c.trace_id))).await;
    assert_eq!(trace["spans"].as_array().map(Vec::len), Some(3));
    telemetry.shutdown(Duration::from_secs(2)).await;
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

#[tokio::test]
async fn gzip_bodies_are_accepted() {
    let (state, _) = state();
    let (addr, _s) = admin(state).await;
    let c = chain(6);
    let body = prost::Message::encode_to_vec(&otlp_request("orders", &[&c.a_in]));
    let (status, _, _) = http_request(
        addr,
        "POST",
        "/v1/traces",
        &[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "gzip"),
        ],
        gzip(&body),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let trace = fetch_json(addr, &format!("/traces/{}", hex(&c.trace_id))).await;
    assert_eq!(trace["spans"].as_array().map(Vec::len), Some(1));
}
