//! A slow, black-holed or absent collector: `record` never waits, overflow is dropped and
//! counted, the degradation level rises and falls back once the collector answers again.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use stitch::telemetry::config::DegradationConfig;
use stitch::telemetry::{ExportConfig, Protocol, Telemetry, TelemetryConfig};

use crate::support::holds_within;
use crate::support::telemetry::{chain, grpc_collector_on, http_collector};

fn fast_failing(protocol: Protocol, endpoint: String) -> TelemetryConfig {
    let mut export = ExportConfig::new(protocol, endpoint);
    export.timeout = Duration::from_millis(150);
    export.max_retries = 1;
    export.initial_backoff = Duration::from_millis(10);
    export.max_backoff = Duration::from_millis(20);
    TelemetryConfig {
        service_name: "orders".to_owned(),
        export: Some(export),
        queue_capacity: 64,
        batch_max_spans: 16,
        batch_delay: Duration::from_millis(20),
        export_backlog_batches: 1,
        degradation: DegradationConfig {
            failures_to_degrade: 1,
            successes_to_recover: 1,
            ..DegradationConfig::default()
        },
        ..TelemetryConfig::default()
    }
}

fn metric(telemetry: &Telemetry, name: &str, labels: &[(&str, &str)]) -> f64 {
    crate::support::metrics::metric(&telemetry.metrics().encode(), name, labels)
}

/// Records `n` spans of fresh traces, returning how long the calls took in total.
fn record_burst(telemetry: &Telemetry, n: usize) -> Duration {
    let sink = telemetry.sink();
    let span = chain(1).a_in;
    let started = Instant::now();
    for i in 0..n {
        let mut s = span.clone();
        s.trace_id[8..16].copy_from_slice(&(i as u64).to_be_bytes());
        sink.record(s);
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_holed_collector_drops_degrades_and_recovers() {
    let collector = http_collector(true).await;
    let telemetry = Telemetry::start(fast_failing(
        Protocol::HttpProtobuf,
        format!("http://{}/v1/traces", collector.addr),
    ));
    let sink = telemetry.sink();
    assert_eq!(sink.root_sampling_factor(), 1.0);

    // 20k records against a collector that never answers (150 ms per attempt): if record
    // waited on the exporter even once per batch this would take 1,250 batches × 150 ms,
    // over three minutes. The bound is a sixth of that: far from it, yet not a race with a
    // loaded machine (a debug build took 5.6 s here while two compilers shared its 2 CPUs,
    // failing the 5 s bound this had).
    let n = 20_000;
    let took = record_burst(&telemetry, n);
    let waiting = Duration::from_millis(150) * (n / 16) as u32;
    assert!(
        took < waiting / 6,
        "record must not wait: {took:?} (waiting on the exporter would take {waiting:?})"
    );
    assert!(
        metric(
            &telemetry,
            "stitch_spans_dropped_total",
            &[("reason", "queue_full")]
        ) > 0.0
    );

    // Keep a trickle flowing so batches keep failing; the level must step down to the floor.
    let degraded = holds_within(Duration::from_secs(20), async || {
        record_burst(&telemetry, 20);
        sink.root_sampling_factor() <= 0.01
    })
    .await;
    assert!(degraded, "factor stuck at {}", sink.root_sampling_factor());
    assert_eq!(
        metric(&telemetry, "stitch_export_degradation_level", &[]),
        3.0
    );
    assert!(metric(&telemetry, "stitch_export_failed_batches_total", &[]) >= 3.0);
    assert!(
        metric(
            &telemetry,
            "stitch_spans_dropped_total",
            &[("reason", "export_failed")]
        ) > 0.0
    );
    assert_eq!(metric(&telemetry, "stitch_root_sampling_factor", &[]), 0.01);

    // The collector comes back: export succeeds and the level climbs back to healthy.
    collector.black_hole.store(false, Ordering::SeqCst);
    let recovered = holds_within(Duration::from_secs(20), async || {
        record_burst(&telemetry, 5);
        sink.root_sampling_factor() == 1.0
    })
    .await;
    assert!(recovered, "factor stuck at {}", sink.root_sampling_factor());
    assert_eq!(
        metric(&telemetry, "stitch_export_degradation_level", &[]),
        0.0
    );
    assert!(collector.received.len() > 0);
    assert!(metric(&telemetry, "stitch_spans_exported_total", &[]) > 0.0);
    telemetry.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_then_started_on_the_same_port_recovers_over_grpc() {
    // Reserve a port, then free it: nothing listens there (connection refused).
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let telemetry = Telemetry::start(fast_failing(
        Protocol::Grpc,
        format!("http://127.0.0.1:{port}"),
    ));
    let sink = telemetry.sink();
    let degraded = holds_within(Duration::from_secs(20), async || {
        record_burst(&telemetry, 20);
        sink.root_sampling_factor() < 1.0
    })
    .await;
    assert!(degraded, "a refused collector must degrade sampling");

    // Start a real collector on that port.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("rebind");
    let (_, received) = grpc_collector_on(listener);
    let recovered = holds_within(Duration::from_secs(20), async || {
        record_burst(&telemetry, 5);
        sink.root_sampling_factor() == 1.0
    })
    .await;
    assert!(recovered, "factor stuck at {}", sink.root_sampling_factor());
    assert!(received.len() > 0);
    telemetry.shutdown(Duration::from_secs(5)).await;
}
