//! OTLP export to real in-test collectors (tonic gRPC and hyper HTTP/protobuf): the spans
//! of a 3-hop chain arrive with ids, parents, kinds, attributes, status and resource.

use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use stitch::telemetry::{ExportConfig, Protocol, Telemetry, TelemetryConfig};

use crate::support::telemetry::{Received, attr, chain, grpc_collector, hex, http_collector};

fn config(protocol: Protocol, endpoint: String) -> TelemetryConfig {
    let mut export = ExportConfig::new(protocol, endpoint);
    export.headers = vec![("x-api-key".to_owned(), "s3cret".to_owned())];
    export.timeout = Duration::from_secs(5);
    TelemetryConfig {
        service_name: "orders".to_owned(),
        resource_attributes: vec![("k8s.pod.name".to_owned(), "orders-7f9".to_owned())],
        export: Some(export),
        batch_delay: Duration::from_millis(50),
        ..TelemetryConfig::default()
    }
}

fn resource_attr(received: &Received, key: &str) -> Option<Value> {
    let requests = received.requests.lock().expect("lock");
    let rs = requests.first()?.1.resource_spans.first()?;
    rs.resource
        .as_ref()?
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .clone()?
        .value
}

async fn export_and_assert(protocol: Protocol, endpoint: String, received: &Received) {
    let telemetry = Telemetry::start(config(protocol, endpoint));
    let sink = telemetry.sink();
    let c = chain(7);
    for span in [c.a_in.clone(), c.a_out.clone(), c.b_in.clone()] {
        sink.record(span);
    }
    telemetry.flush().await;
    assert_eq!(received.len(), 3, "all three spans exported");

    let spans = received.spans();
    let by_id = |id: [u8; 8]| {
        spans
            .iter()
            .find(|s| s.span_id == id)
            .unwrap_or_else(|| panic!("span {} exported", hex(&id)))
    };
    assert!(
        spans.iter().all(|s| s.trace_id == c.trace_id),
        "one trace id"
    );

    let a_in = by_id(c.a_in.span_id);
    assert!(a_in.parent_span_id.is_empty(), "A inbound is the root");
    assert_eq!(a_in.kind, 2, "SERVER");
    assert_eq!(a_in.name, "GET");
    assert_eq!(
        attr(a_in, "http.request.method"),
        Some(&Value::StringValue("GET".into()))
    );
    assert_eq!(
        attr(a_in, "url.path"),
        Some(&Value::StringValue("/orders/42".into()))
    );
    assert_eq!(attr(a_in, "url.query"), None, "query off by default");
    assert_eq!(
        attr(a_in, "http.response.status_code"),
        Some(&Value::IntValue(200))
    );
    assert_eq!(
        attr(a_in, "client.address"),
        Some(&Value::StringValue("10.0.0.7".into()))
    );
    assert_eq!(
        attr(a_in, "stitch.propagation.dialect"),
        Some(&Value::StringValue("none".into()))
    );

    let a_out = by_id(c.a_out.span_id);
    assert_eq!(a_out.parent_span_id, c.a_in.span_id.to_vec());
    assert_eq!(a_out.kind, 3, "CLIENT");
    assert_eq!(a_out.name, "shop.v1.Inventory/Reserve");
    assert_eq!(
        attr(a_out, "rpc.system"),
        Some(&Value::StringValue("grpc".into()))
    );
    assert_eq!(
        attr(a_out, "rpc.grpc.status_code"),
        Some(&Value::IntValue(14))
    );
    assert_eq!(
        attr(a_out, "error.type"),
        Some(&Value::StringValue("UNAVAILABLE".into()))
    );
    assert_eq!(
        a_out.status.as_ref().map(|s| s.code),
        Some(2),
        "status Error"
    );

    let b_in = by_id(c.b_in.span_id);
    assert_eq!(b_in.parent_span_id, c.a_out.span_id.to_vec());
    assert_eq!(b_in.kind, 2);
    // Timings nest: A in ⊇ A out ⊇ B in.
    assert!(a_in.start_time_unix_nano <= a_out.start_time_unix_nano);
    assert!(a_out.start_time_unix_nano <= b_in.start_time_unix_nano);
    assert!(b_in.end_time_unix_nano <= a_out.end_time_unix_nano);
    assert!(a_out.end_time_unix_nano <= a_in.end_time_unix_nano);

    assert_eq!(
        resource_attr(received, "service.name"),
        Some(Value::StringValue("orders".into()))
    );
    assert_eq!(
        resource_attr(received, "k8s.pod.name"),
        Some(Value::StringValue("orders-7f9".into()))
    );
    assert_eq!(
        resource_attr(received, "telemetry.sdk.name"),
        Some(Value::StringValue("stitch".into()))
    );
    let api_key = received.requests.lock().expect("lock")[0]
        .0
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(
        api_key.as_deref(),
        Some("s3cret"),
        "exporter headers are sent"
    );

    // Exported spans also land in the local ring.
    assert_eq!(
        telemetry.ring().trace(&c.trace_id).map(|t| t.spans.len()),
        Some(3)
    );
    let metrics = telemetry.metrics().encode();
    assert!(
        metrics.contains("stitch_spans_exported_total 3"),
        "{metrics}"
    );
    telemetry.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn grpc_export_delivers_the_chain_to_a_tonic_collector() {
    let (addr, received) = grpc_collector().await;
    export_and_assert(Protocol::Grpc, format!("http://{addr}"), &received).await;
}

#[tokio::test]
async fn http_protobuf_export_delivers_the_chain_to_a_hyper_collector() {
    let collector = http_collector(false).await;
    export_and_assert(
        Protocol::HttpProtobuf,
        format!("http://{}/v1/traces", collector.addr),
        &collector.received,
    )
    .await;
    assert_eq!(
        collector.paths.lock().expect("lock").as_slice(),
        ["/v1/traces"]
    );
}

#[tokio::test]
async fn shutdown_flushes_queued_spans() {
    let (addr, received) = grpc_collector().await;
    let mut cfg = config(Protocol::Grpc, format!("http://{addr}"));
    cfg.batch_delay = Duration::from_secs(3600); // only the shutdown flush can ship them
    let telemetry = Telemetry::start(cfg);
    let c = chain(9);
    telemetry.sink().record(c.a_in);
    telemetry.shutdown(Duration::from_secs(5)).await;
    assert_eq!(received.len(), 1);
}

#[tokio::test]
async fn gzip_http_export_reaches_another_stitch_admin_receiver() {
    // Stitch A exports (gzip) to stitch B's admin `/v1/traces`: B's ring shows A's spans.
    let b = stitch::admin::AdminState::new(std::sync::Arc::new(
        std::sync::atomic::AtomicBool::new(true),
    ));
    let b_ring = b.ring.clone();
    let (b_addr, _shutdown) = crate::support::telemetry::admin(b).await;
    let mut cfg = config(Protocol::HttpProtobuf, format!("http://{b_addr}/v1/traces"));
    if let Some(e) = cfg.export.as_mut() {
        e.gzip = true;
    }
    let telemetry = Telemetry::start(cfg);
    let c = chain(8);
    telemetry.sink().record(c.a_in.clone());
    telemetry.flush().await;
    let trace = b_ring.trace(&c.trace_id).expect("trace received by B");
    assert_eq!(trace.spans.len(), 1);
    assert_eq!(&*trace.spans[0].service, "orders");
    assert_eq!(trace.spans[0].span.span_id, c.a_in.span_id);
    telemetry.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn dropping_the_telemetry_handle_keeps_sinks_working() {
    let (addr, received) = grpc_collector().await;
    let telemetry = Telemetry::start(config(Protocol::Grpc, format!("http://{addr}")));
    let (sink, ring) = (telemetry.sink(), telemetry.ring());
    drop(telemetry);
    let c = chain(10);
    sink.record(c.a_in.clone());
    let arrived = crate::support::holds_within(Duration::from_secs(10), async || {
        received.len() == 1 && ring.trace(&c.trace_id).is_some()
    })
    .await;
    assert!(
        arrived,
        "the pipeline outlives the Telemetry handle while a sink lives"
    );
}
