//! For the telemetry and admin tests: real OTLP receivers (tonic gRPC and hyper
//! HTTP/protobuf, optionally behind TLS), a black-hole collector, a realistic 3-hop span chain,
//! OTLP requests built from span records, and an admin server started on its own.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;

use stitch::telemetry::semconv::{RequestFacts, STITCH_PROPAGATION_DIALECT};
use stitch::telemetry::{SpanKind, SpanRecord};

/// What a receiver got: each request with its headers/metadata.
#[derive(Clone, Default)]
pub struct Received {
    pub requests: Arc<Mutex<Vec<(HeaderMap, ExportTraceServiceRequest)>>>,
}

impl Received {
    pub fn spans(&self) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
        self.requests
            .lock()
            .expect("receiver lock")
            .iter()
            .flat_map(|(_, r)| r.resource_spans.iter())
            .flat_map(|rs| rs.scope_spans.iter())
            .flat_map(|ss| ss.spans.iter().cloned())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.spans().len()
    }
}

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

/// A real tonic OTLP/gRPC collector on 127.0.0.1.
pub async fn grpc_collector() -> (SocketAddr, Received) {
    grpc_collector_on(TcpListener::bind("127.0.0.1:0").await.expect("bind"))
}

/// A real tonic OTLP/gRPC collector on an already bound listener.
pub fn grpc_collector_on(listener: TcpListener) -> (SocketAddr, Received) {
    let addr = listener.local_addr().expect("addr");
    let received = Received::default();
    let svc = TraceServiceServer::new(GrpcCollector(received.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (addr, received)
}

/// A real tonic OTLP/gRPC collector behind TLS with the given PEM identity.
pub async fn grpc_collector_tls(cert_pem: &str, key_pem: &str) -> (SocketAddr, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received = Received::default();
    let svc = TraceServiceServer::new(GrpcCollector(received.clone()));
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .expect("server TLS")
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (addr, received)
}

/// A real hyper OTLP/HTTP (protobuf) collector; `black_hole` switches it to accepting
/// connections and never answering.
pub struct HttpCollector {
    pub addr: SocketAddr,
    pub received: Received,
    pub black_hole: Arc<AtomicBool>,
    pub paths: Arc<Mutex<Vec<String>>>,
}

pub async fn http_collector(black_hole: bool) -> HttpCollector {
    http_collector_with(black_hole, None).await
}

/// The HTTP collector, optionally behind TLS.
pub async fn http_collector_with(
    black_hole: bool,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> HttpCollector {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received = Received::default();
    let hole = Arc::new(AtomicBool::new(black_hole));
    let paths = Arc::new(Mutex::new(Vec::new()));
    let (r, h, p) = (received.clone(), hole.clone(), paths.clone());
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            if h.load(Ordering::SeqCst) {
                held.push(stream); // accepted, never answered
                continue;
            }
            let (r, p, tls) = (r.clone(), p.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => serve_otlp_http(stream, r, p).await,
                    Some(acceptor) => {
                        if let Ok(tls_stream) = acceptor.accept(stream).await {
                            serve_otlp_http(tls_stream, r, p).await;
                        }
                    }
                }
            });
        }
    });
    HttpCollector {
        addr,
        received,
        black_hole: hole,
        paths,
    }
}

async fn serve_otlp_http<IO>(io: IO, r: Received, p: Arc<Mutex<Vec<String>>>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let (r, p) = (r.clone(), p.clone());
        async move {
            let (parts, body) = req.into_parts();
            p.lock().expect("paths").push(parts.uri.path().to_owned());
            let body = body.collect().await?.to_bytes();
            let status = match <ExportTraceServiceRequest as prost::Message>::decode(body) {
                Ok(msg) => {
                    r.requests.lock().expect("lock").push((parts.headers, msg));
                    StatusCode::OK
                }
                Err(_) => StatusCode::BAD_REQUEST,
            };
            let mut resp = http::Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-protobuf"),
            );
            Ok::<_, hyper::Error>(resp)
        }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
        .await;
}

/// The value of attribute `key` of an exported span.
pub fn attr<'a>(
    span: &'a opentelemetry_proto::tonic::trace::v1::Span,
    key: &str,
) -> Option<&'a opentelemetry_proto::tonic::common::v1::any_value::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// The spans of a 3-hop chain as the trace layers of two stitch instances would produce
/// them: client → A inbound (server) → app A → A outbound (client) → B inbound (server) →
/// app B, where B's gRPC call fails with UNAVAILABLE.
pub struct Chain {
    pub trace_id: [u8; 16],
    pub a_in: SpanRecord,
    pub a_out: SpanRecord,
    pub b_in: SpanRecord,
}

pub fn chain(seed: u8) -> Chain {
    let trace_id = [seed, 0xa1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
    let t0 = SystemTime::now() - Duration::from_millis(100);
    let ms = |n| t0 + Duration::from_millis(n);

    let req = Request::get("http://orders:8080/orders/42?token=secret")
        .header("user-agent", "curl/8.5")
        .body(())
        .expect("request");
    let (parts, _) = req.into_parts();
    let mut facts = RequestFacts::from_parts(&parts);
    facts.client_address = Some("10.0.0.7".parse().expect("ip"));
    let mut a_in = SpanRecord::for_request(
        trace_id,
        [seed, 1, 0, 0, 0, 0, 0, 1],
        None,
        SpanKind::Server,
        &facts,
        ms(0),
    );
    a_in.set_attr(STITCH_PROPAGATION_DIALECT, "none");
    a_in.record_response_head(StatusCode::OK, &HeaderMap::new());
    let a_in = a_in.finish(ms(50));

    let grpc = Request::post("http://inventory:50051/shop.v1.Inventory/Reserve")
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .body(())
        .expect("request");
    let (gparts, _) = grpc.into_parts();
    let gfacts = RequestFacts::from_parts(&gparts);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("14"));

    let mut a_out = SpanRecord::for_request(
        trace_id,
        [seed, 2, 0, 0, 0, 0, 0, 2],
        Some(a_in.span_id),
        SpanKind::Client,
        &gfacts,
        ms(10),
    );
    a_out.set_attr(STITCH_PROPAGATION_DIALECT, "w3c");
    a_out.record_response_head(StatusCode::OK, &HeaderMap::new());
    a_out.record_trailers(&trailers);
    let a_out = a_out.finish(ms(40));

    let mut b_in = SpanRecord::for_request(
        trace_id,
        [seed, 3, 0, 0, 0, 0, 0, 3],
        Some(a_out.span_id),
        SpanKind::Server,
        &gfacts,
        ms(12),
    );
    b_in.set_attr(STITCH_PROPAGATION_DIALECT, "w3c");
    b_in.record_response_head(StatusCode::OK, &HeaderMap::new());
    b_in.record_trailers(&trailers);
    let b_in = b_in.finish(ms(38));

    Chain {
        trace_id,
        a_in,
        a_out,
        b_in,
    }
}

pub fn hex(id: &[u8]) -> String {
    stitch::telemetry::span::to_hex(id)
}

/// An OTLP export request holding `spans` under a resource named `service`, as another
/// stitch instance or an OTel SDK would send it.
pub fn otlp_request(service: &str, spans: &[&SpanRecord]) -> ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    let nanos = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .expect("after epoch")
            .as_nanos() as u64
    };
    let string = |s: &str| AnyValue {
        value: Some(any_value::Value::StringValue(s.to_owned())),
    };
    let spans = spans
        .iter()
        .map(|s| Span {
            trace_id: s.trace_id.to_vec(),
            span_id: s.span_id.to_vec(),
            parent_span_id: s.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
            name: s.name.to_string(),
            kind: match s.kind {
                SpanKind::Server => 2,
                SpanKind::Client => 3,
                _ => 1,
            },
            start_time_unix_nano: nanos(s.start),
            end_time_unix_nano: nanos(s.end),
            attributes: s
                .all_attributes()
                .iter()
                .map(|a| KeyValue {
                    key: a.key.to_string(),
                    value: Some(match &a.value {
                        stitch::telemetry::AttrValue::Str(v) => string(v.as_str()),
                        stitch::telemetry::AttrValue::Int(i) => AnyValue {
                            value: Some(any_value::Value::IntValue(*i)),
                        },
                        stitch::telemetry::AttrValue::Bool(b) => AnyValue {
                            value: Some(any_value::Value::BoolValue(*b)),
                        },
                        stitch::telemetry::AttrValue::F64(f) => AnyValue {
                            value: Some(any_value::Value::DoubleValue(*f)),
                        },
                    }),
                    ..Default::default()
                })
                .collect(),
            status: s.status.is_error().then(|| Status {
                code: 2,
                message: "failed".to_owned(),
            }),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".to_owned(),
                    value: Some(string(service)),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Starts an admin server on 127.0.0.1:0 with `state`.
pub async fn admin(
    state: stitch::admin::AdminState,
) -> (SocketAddr, stitch::shutdown::ShutdownHandle) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = stitch::shutdown::ShutdownHandle::default();
    tokio::spawn(stitch::admin::serve(listener, state, shutdown.clone()));
    (addr, shutdown)
}

pub async fn post_protobuf(
    addr: SocketAddr,
    req: &ExportTraceServiceRequest,
) -> (StatusCode, HeaderMap, Bytes) {
    super::http_request(
        addr,
        "POST",
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        prost::Message::encode_to_vec(req),
    )
    .await
}

pub async fn post_json(
    addr: SocketAddr,
    req: &ExportTraceServiceRequest,
) -> (StatusCode, HeaderMap, Bytes) {
    super::http_request(
        addr,
        "POST",
        "/v1/traces",
        &[("content-type", "application/json")],
        serde_json::to_vec(req).expect("JSON"),
    )
    .await
}
