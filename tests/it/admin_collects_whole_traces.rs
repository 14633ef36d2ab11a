//! "Jaeger-all-in-one on a laptop": two stitch pipelines (real OTLP/HTTP exporters) and an
//! SDK-style JSON exporter send to one stitch's `POST /v1/traces`; its `/traces/{id}`
//! returns the whole trace with a clean verdict, and a chain with a lost hop is flagged.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use stitch::admin::AdminState;
use stitch::telemetry::{ExportConfig, Protocol, SpanKind, SpanRecord, Telemetry, TelemetryConfig};

use crate::support::fetch_json;
use crate::support::telemetry::{admin, chain, hex, otlp_request, post_json};

fn instance(service: &str, collector: std::net::SocketAddr) -> Telemetry {
    Telemetry::start(TelemetryConfig {
        service_name: service.to_owned(),
        export: Some(ExportConfig::new(
            Protocol::HttpProtobuf,
            format!("http://{collector}/v1/traces"),
        )),
        batch_delay: Duration::from_millis(20),
        ..TelemetryConfig::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_and_an_sdk_app_assemble_whole_traces_in_one_stitch() {
    let (collector, _shutdown) = admin(AdminState::new(Arc::new(AtomicBool::new(true)))).await;
    let stitch_a = instance("orders", collector);
    let stitch_b = instance("inventory", collector);

    let c = chain(0x51);
    stitch_a.sink().record(c.a_in.clone());
    stitch_a.sink().record(c.a_out.clone());
    stitch_b.sink().record(c.b_in.clone());
    let mut app_b = SpanRecord::new(
        c.trace_id,
        [0x51, 9, 9, 9, 9, 9, 9, 9],
        Some(c.b_in.span_id),
        SpanKind::Internal,
        "reserve stock",
        c.b_in.start + Duration::from_millis(1),
    );
    app_b.end = c.b_in.end - Duration::from_millis(1);
    assert_eq!(
        post_json(collector, &otlp_request("inventory-app", &[&app_b]))
            .await
            .0,
        StatusCode::OK
    );

    // A chain whose middle hop (A's outbound span) never reaches the collector.
    let lost = chain(0x52);
    stitch_a.sink().record(lost.a_in.clone());
    stitch_b.sink().record(lost.b_in.clone());

    stitch_a.flush().await;
    stitch_b.flush().await;

    let whole = fetch_json(collector, &format!("/traces/{}", hex(&c.trace_id))).await;
    assert_eq!(whole["verdict"]["clean"], Value::Bool(true), "{whole}");
    let services: Vec<&str> = whole["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| s["service"].as_str().expect("service"))
        .collect();
    assert_eq!(
        services,
        ["orders", "orders", "inventory", "inventory-app"],
        "ordered by start"
    );

    let broken = fetch_json(collector, &format!("/traces/{}", hex(&lost.trace_id))).await;
    assert_eq!(broken["verdict"]["clean"], Value::Bool(false));
    assert_eq!(broken["verdict"]["findings"][0]["kind"], "missing_parent");
    assert_eq!(
        broken["verdict"]["findings"][0]["parent_span_id"],
        hex(&lost.a_out.span_id)
    );

    let list = fetch_json(collector, "/traces").await;
    let clean: Vec<(String, bool)> = list["traces"]
        .as_array()
        .expect("traces")
        .iter()
        .map(|t| {
            (
                t["trace_id"].as_str().expect("id").to_owned(),
                t["clean"].as_bool().expect("clean"),
            )
        })
        .collect();
    assert!(clean.contains(&(hex(&c.trace_id), true)));
    assert!(clean.contains(&(hex(&lost.trace_id), false)));

    stitch_a.shutdown(Duration::from_secs(5)).await;
    stitch_b.shutdown(Duration::from_secs(5)).await;
}
