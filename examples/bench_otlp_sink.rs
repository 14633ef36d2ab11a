//! The benchmark's OTLP/HTTP receiver: accepts `POST /v1/traces`, reads the body to the end
//! and answers an empty `ExportTraceServiceResponse` (a protobuf message with no fields is zero
//! bytes), without decoding. `GET /stats` reports what arrived as JSON.
//!
//! Why not a real collector: it shares a core with the load generators, and decoding every
//! span there delayed the generators by milliseconds (the gRPC p99 doubled), which showed the
//! collector's cost, not the proxy's. A real collector runs on other machines; the proxy's
//! export cost (conversion, encoding, sending) is the same against this sink. Every export
//! still completes, so spans dropped by stitch stay visible in its own counters.
//!
//! With `--count-spans` (for `make soak`, not the benchmark) it decodes each export and prints
//! `spans N` on stdout before answering, so the spans of every incarnation of a collector that
//! is stopped and started again add up exactly: a span stitch counts as exported was printed.
//!
//! Usage: `bench_otlp_sink 127.0.0.1:PORT [--count-spans]`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    bytes: AtomicU64,
    /// Spans decoded, when counting.
    spans: AtomicU64,
    count_spans: bool,
}

fn main() -> std::io::Result<()> {
    let listen: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_default()
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let count_spans = std::env::args().any(|a| a == "--count-spans");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, count_spans))
}

async fn serve(listen: SocketAddr, count_spans: bool) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let stats = Arc::new(Stats {
        count_spans,
        ..Stats::default()
    });
    loop {
        let (stream, _) = listener.accept().await?;
        let stats = stats.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(stats.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    stats: Arc<Stats>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/v1/traces") => {
            let mut body = req.into_body();
            let mut received = 0u64;
            let mut kept = Vec::new();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        let data = frame.data_ref().map_or(&[][..], |d| &d[..]);
                        received += data.len() as u64;
                        if stats.count_spans {
                            kept.extend_from_slice(data);
                        }
                    }
                    Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
                }
            }
            if stats.count_spans {
                let Some(spans) = count_spans(&kept) else {
                    return Ok(status(StatusCode::BAD_REQUEST));
                };
                stats.spans.fetch_add(spans, Ordering::Relaxed);
                println!("spans {spans}");
            }
            stats.requests.fetch_add(1, Ordering::Relaxed);
            stats.bytes.fetch_add(received, Ordering::Relaxed);
            let mut resp = Response::new(Full::new(Bytes::new()));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            );
            Ok(resp)
        }
        (&Method::GET, "/stats") => {
            let json = format!(
                "{{\"requests\":{},\"bytes\":{},\"spans\":{}}}\n",
                stats.requests.load(Ordering::Relaxed),
                stats.bytes.load(Ordering::Relaxed),
                stats.spans.load(Ordering::Relaxed)
            );
            Ok(Response::new(Full::new(Bytes::from(json))))
        }
        _ => Ok(status(StatusCode::NOT_FOUND)),
    }
}

/// Spans in an uncompressed protobuf `ExportTraceServiceRequest` (stitch sends them so unless
/// `OTEL_EXPORTER_OTLP_COMPRESSION` is set), or `None` if it does not decode.
fn count_spans(body: &[u8]) -> Option<u64> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    let request = <ExportTraceServiceRequest as prost::Message>::decode(body).ok()?;
    let spans = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len() as u64)
        .sum();
    Some(spans)
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = code;
    resp
}
