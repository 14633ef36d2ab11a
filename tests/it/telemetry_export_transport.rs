//! The OTLP transports stitch drives itself: gRPC gzip negotiated with a real tonic collector,
//! and HTTP retries as OTLP prescribes (a throttled 503 is retried, a 400 is not), against a
//! real hyper collector that answers from a script.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use stitch::telemetry::{ExportConfig, Protocol, Telemetry, TelemetryConfig};
use tokio::net::TcpListener;

use crate::support::telemetry::{Received, chain};

fn config(protocol: Protocol, endpoint: String, gzip: bool) -> TelemetryConfig {
    let mut export = ExportConfig::new(protocol, endpoint);
    export.headers = vec![("x-api-key".to_owned(), "s3cret".to_owned())];
    export.timeout = Duration::from_secs(5);
    export.initial_backoff = Duration::from_millis(10);
    export.gzip = gzip;
    TelemetryConfig {
        service_name: "orders".to_owned(),
        export: Some(export),
        batch_delay: Duration::from_millis(50),
        ..TelemetryConfig::default()
    }
}

fn metric(telemetry: &Telemetry, name: &str, labels: &[(&str, &str)]) -> f64 {
    crate::support::metrics::metric(&telemetry.metrics().encode(), name, labels)
}

/// A tonic collector that records each request's metadata (where `grpc-encoding` shows).
struct GrpcCollector(Received);

#[tonic::async_trait]
impl TraceService for GrpcCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request.metadata().clone().into_headers();
        self.0
            .requests
            .lock()
            .expect("receiver lock")
            .push((headers, request.into_inner()));
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test]
async fn grpc_gzip_is_negotiated_with_a_tonic_collector() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received = Received::default();
    let gzip = tonic::codec::CompressionEncoding::Gzip;
    let svc = TraceServiceServer::new(GrpcCollector(received.clone()))
        .accept_compressed(gzip)
        .send_compressed(gzip);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let telemetry = Telemetry::start(config(Protocol::Grpc, format!("http://{addr}"), true));
    let c = chain(21);
    for span in [c.a_in.clone(), c.a_out.clone(), c.b_in.clone()] {
        telemetry.sink().record(span);
    }
    telemetry.flush().await;
    assert_eq!(received.len(), 3, "all three spans exported");
    let requests = received.requests.lock().expect("lock").clone();
    let headers = &requests[0].0;
    assert_eq!(
        headers.get("grpc-encoding").and_then(|v| v.to_str().ok()),
        Some("gzip"),
        "the request was compressed: {headers:?}"
    );
    assert_eq!(
        headers.get("x-api-key").and_then(|v| v.to_str().ok()),
        Some("s3cret")
    );
    assert_eq!(metric(&telemetry, "stitch_spans_exported_total", &[]), 3.0);
    telemetry.shutdown(Duration::from_secs(5)).await;
}

/// An OTLP/HTTP collector answering each request with the next scripted status (then 200).
struct Scripted {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<(HeaderMap, ExportTraceServiceRequest)>>>,
}

async fn scripted_collector(script: Vec<(StatusCode, Option<&'static str>)>) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(script);
    let (n, r) = (requests.clone(), received.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (n, r, script) = (n.clone(), r.clone(), script.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (n, r, script) = (n.clone(), r.clone(), script.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await?.to_bytes();
                        let i = n.fetch_add(1, Ordering::SeqCst);
                        let (status, retry_after) =
                            script.get(i).copied().unwrap_or((StatusCode::OK, None));
                        if status == StatusCode::OK
                            && let Ok(msg) =
                                <ExportTraceServiceRequest as prost::Message>::decode(body)
                        {
                            r.lock().expect("lock").push((parts.headers, msg));
                        }
                        let mut resp = http::Response::new(Full::new(Bytes::new()));
                        *resp.status_mut() = status;
                        if let Some(after) = retry_after {
                            resp.headers_mut().insert(
                                http::header::RETRY_AFTER,
                                http::HeaderValue::from_static(after),
                            );
                        }
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Scripted {
        addr,
        requests,
        received,
    }
}

#[tokio::test]
async fn http_throttled_batch_is_retried_and_a_rejected_one_is_not() {
    // 503 with Retry-After, then 502: both retried; the third attempt is accepted.
    let collector = scripted_collector(vec![
        (StatusCode::SERVICE_UNAVAILABLE, Some("0")),
        (StatusCode::BAD_GATEWAY, None),
    ])
    .await;
    let telemetry = Telemetry::start(config(
        Protocol::HttpProtobuf,
        format!("http://{}/v1/traces", collector.addr),
        false,
    ));
    telemetry.sink().record(chain(22).a_in);
    telemetry.flush().await;
    assert_eq!(collector.requests.load(Ordering::SeqCst), 3);
    assert_eq!(collector.received.lock().expect("lock").len(), 1);
    assert_eq!(metric(&telemetry, "stitch_spans_exported_total", &[]), 1.0);
    telemetry.shutdown(Duration::from_secs(5)).await;

    // 400: the collector will never take this batch; one attempt, dropped and counted.
    let collector = scripted_collector(vec![(StatusCode::BAD_REQUEST, None)]).await;
    let telemetry = Telemetry::start(config(
        Protocol::HttpProtobuf,
        format!("http://{}/v1/traces", collector.addr),
        false,
    ));
    telemetry.sink().record(chain(23).a_in);
    telemetry.flush().await;
    assert_eq!(collector.requests.load(Ordering::SeqCst), 1, "not retried");
    assert_eq!(
        metric(
            &telemetry,
            "stitch_spans_dropped_total",
            &[("reason", "export_failed")]
        ),
        1.0
    );
    assert_eq!(metric(&telemetry, "stitch_spans_exported_total", &[]), 0.0);
    telemetry.shutdown(Duration::from_secs(5)).await;
}
