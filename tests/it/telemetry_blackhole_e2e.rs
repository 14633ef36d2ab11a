//! Through a real stitch: with the collector black-holed (accepts, never answers), requests
//! keep flowing with no failure and latency comparable to a stitch that does not export;
//! export failures are counted and the degradation level rises.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use stitch::telemetry::config::DegradationConfig;
use stitch::telemetry::{ExportConfig, Protocol, TelemetryConfig};
use tokio::net::TcpStream;

use crate::support::metrics::{parse_openmetrics, sample};
use crate::support::telemetry::http_collector;
use crate::support::{Loopback, fetch, listener, serve_http};

async fn app() -> SocketAddr {
    let (listener, addr) = listener().await;
    serve_http(listener, |_req| async {
        Response::new(Full::new(Bytes::from_static(b"ok")))
    });
    addr
}

fn stitch(app: SocketAddr, telemetry: TelemetryConfig) -> Loopback {
    Loopback::to(app).service("orders").telemetry(telemetry)
}

/// Sends `n` sequential requests on one keep-alive connection; returns sorted latencies.
async fn load(addr: SocketAddr, n: usize) -> Vec<Duration> {
    let io = TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let req = Request::get(format!("/orders/{i}"))
            .header("host", "orders")
            .body(Full::new(Bytes::new()))
            .expect("request");
        let started = Instant::now();
        sender.ready().await.expect("connection stays open");
        let resp = sender.send_request(req).await.expect("no failed request");
        assert_eq!(resp.status(), StatusCode::OK, "request {i}");
        let _ = resp.into_body().collect().await.expect("body");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    latencies
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_holed_collector_never_slows_or_fails_requests() {
    let app = app().await;
    let collector = http_collector(true).await;

    let baseline = stitch(app, TelemetryConfig::default()).start().await;
    let baseline_addr = baseline.inbound;

    let mut export = ExportConfig::new(
        Protocol::HttpProtobuf,
        format!("http://{}/v1/traces", collector.addr),
    );
    export.timeout = Duration::from_millis(200);
    export.max_retries = 0;
    let holed = stitch(
        app,
        TelemetryConfig {
            export: Some(export),
            queue_capacity: 128,
            batch_max_spans: 32,
            batch_delay: Duration::from_millis(20),
            export_backlog_batches: 1,
            degradation: DegradationConfig {
                failures_to_degrade: 1,
                successes_to_recover: 1,
                ..DegradationConfig::default()
            },
            ..TelemetryConfig::default()
        },
    )
    .start()
    .await;
    let (holed_addr, holed_admin) = (holed.inbound, holed.admin);

    // Warm both paths (connection pools), then measure interleaved rounds.
    load(baseline_addr, 50).await;
    load(holed_addr, 50).await;
    let mut base = Vec::new();
    let mut hole = Vec::new();
    for _ in 0..3 {
        base.extend(load(baseline_addr, 300).await);
        hole.extend(load(holed_addr, 300).await);
    }
    base.sort();
    hole.sort();
    let (base_p99, hole_p99) = (p99(&base), p99(&hole));
    eprintln!(
        "p50 baseline {:?} black-holed {:?}; p99 baseline {base_p99:?} black-holed {hole_p99:?}",
        base[base.len() / 2],
        hole[hole.len() / 2]
    );
    // Generous bound: this is a shared 2-core machine; a request waiting on the exporter
    // would take at least the 200 ms export timeout.
    assert!(
        hole_p99 <= base_p99 * 3 + Duration::from_millis(20),
        "p99 with a black-holed collector {hole_p99:?} vs {base_p99:?}"
    );

    let (_, _, body) = fetch(holed_admin, "/metrics").await;
    let text = String::from_utf8(body.to_vec()).expect("utf-8");
    let samples = parse_openmetrics(&text).expect("valid exposition");
    let dropped = sample(&samples, "stitch_spans_dropped_total", &[]).unwrap_or(0.0);
    assert!(dropped > 0.0, "drops counted:\n{text}");
    assert!(sample(&samples, "stitch_export_failed_batches_total", &[]).unwrap_or(0.0) >= 1.0);
    assert!(
        sample(&samples, "stitch_export_degradation_level", &[]).unwrap_or(0.0) >= 1.0,
        "degraded:\n{text}"
    );
    assert_eq!(
        sample(
            &samples,
            "stitch_requests_total",
            &[("direction", "inbound"), ("status_class", "failed")]
        ),
        Some(0.0),
        "no request failed"
    );
    let ok = sample(
        &samples,
        "stitch_requests_total",
        &[("direction", "inbound"), ("status_class", "2xx")],
    );
    assert_eq!(
        ok,
        Some(950.0),
        "every request through the black-holed stitch succeeded"
    );
}
