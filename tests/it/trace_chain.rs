//! Issue 4's 3-hop chain through real sockets: client → stitch A inbound → app A → stitch A
//! outbound → stitch B inbound → app B. App A makes one HTTP/1 call and one gRPC call (tonic
//! client over h2c) to B; app B answers the HTTP call with 200 and the gRPC call with a tonic
//! `PERMISSION_DENIED`. Run 1: both stitches export OTLP/gRPC to a real tonic collector and the
//! tree is asserted there. Run 2: A exports OTLP/HTTP-protobuf to B's admin `POST /v1/traces`
//! and B's `GET /traces/{id}` shows the whole chain with a clean verdict.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;
use stitch::telemetry::{ExportConfig, Protocol, TelemetryConfig};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::support::trace::{
    Handler, Log, Seen, proxy_get, raw_get, ring_only, serve_app, trace_with,
};
use crate::support::{
    DEADLINE, Loopback, StitchUnderTest, fetch, holds_within, listener, serve_http,
};

/// How long the slow gRPC answer waits before its trailers.
const STREAM_GAP: Duration = Duration::from_millis(300);
const GRPC_SERVICE: &str = "opentelemetry.proto.collector.trace.v1.TraceService";

// ---------------------------------------------------------------------------------------------
// A real OTLP/gRPC collector, and app B's gRPC service (the same generated server, failing).

/// Spans received by the collector, with the `service.name` of their resource.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<(String, Span)>>>);

impl Collected {
    fn of_trace(&self, trace_id: &[u8]) -> Vec<(String, Span)> {
        self.0
            .lock()
            .expect("collector lock")
            .iter()
            .filter(|(_, s)| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

struct Collector(Collected);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.0.lock().expect("collector lock");
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.clone())
                .map(|v| match v {
                    Any::StringValue(s) => s,
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                spans.extend(ss.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn collector() -> (SocketAddr, Collected) {
    let (l, addr) = listener().await;
    let collected = Collected::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(collected.clone())))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(l)),
    );
    (addr, collected)
}

/// App B's gRPC service: a tonic server that refuses every call.
struct OutOfStock;

#[tonic::async_trait]
impl TraceService for OutOfStock {
    async fn export(
        &self,
        _: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        Err(tonic::Status::permission_denied("out of stock"))
    }
}

type Body = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// App B: HTTP/1 and h2c on one port; gRPC requests go to the failing tonic service, anything
/// else gets 200. Records every request.
fn serve_app_b(listener: TcpListener) -> Log {
    let log = Log::default();
    let seen = log.clone();
    let grpc = TraceServiceServer::new(OutOfStock);
    serve_http(listener, move |req: Request<Incoming>| {
        let (seen, grpc) = (seen.clone(), grpc.clone());
        async move {
            seen.push(Seen {
                path: req.uri().path().to_owned(),
                headers: req.headers().clone(),
            });
            let grpc_call = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            let resp: http::Response<Body> = if grpc_call {
                let resp = grpc.oneshot(req).await.expect("tonic is infallible");
                resp.map(|b| b.map_err(Into::into).boxed_unsync())
            } else {
                let _ = req.into_body().collect().await;
                http::Response::new(
                    Full::new(Bytes::from_static(b"reserved\n"))
                        .map_err(|never| match never {})
                        .boxed_unsync(),
                )
            };
            resp
        }
    });
    log
}

/// App A: copies `traceparent` onto an HTTP call and a gRPC call to B (both through stitch A's
/// outbound listener); 200 when the HTTP call got 200 and the gRPC call PERMISSION_DENIED.
fn app_a(proxy: SocketAddr, b: SocketAddr) -> Handler {
    Arc::new(move |headers: HeaderMap| {
        Box::pin(async move {
            let tp = headers.get("traceparent").cloned();
            let copied: Vec<_> = tp
                .iter()
                .map(|v| (http::HeaderName::from_static("traceparent"), v.clone()))
                .collect();
            let http_ok = proxy_get(proxy, &format!("http://{b}/inventory/42"), &copied).await
                == Ok(StatusCode::OK);
            let grpc_denied = grpc_call(proxy, b, tp).await == Some(tonic::Code::PermissionDenied);
            if http_ok && grpc_denied {
                StatusCode::OK
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        })
    })
}

/// A tonic call to `b`'s gRPC service over h2c, connected to `proxy` with `:authority` = `b`.
async fn grpc_call(
    proxy: SocketAddr,
    b: SocketAddr,
    tp: Option<HeaderValue>,
) -> Option<tonic::Code> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{proxy}"))
        .ok()?
        .origin(format!("http://{b}").parse().ok()?)
        .connect()
        .await
        .ok()?;
    let mut req = tonic::Request::new(ExportTraceServiceRequest::default());
    if let Some(tp) = tp {
        let value = tp.to_str().ok()?.parse().ok()?;
        req.metadata_mut().insert("traceparent", value);
    }
    match TraceServiceClient::new(channel).export(req).await {
        Ok(_) => Some(tonic::Code::Ok),
        Err(status) => Some(status.code()),
    }
}

// ---------------------------------------------------------------------------------------------
// The chain.

struct Chain {
    a: StitchUnderTest,
    b: StitchUnderTest,
    app_a: Log,
    app_b: Log,
    trace_id: String,
}

fn telemetry(service: &str, export: Option<ExportConfig>) -> TelemetryConfig {
    TelemetryConfig {
        export: export.map(|mut e| {
            e.timeout = Duration::from_secs(2);
            e
        }),
        ..ring_only(service)
    }
}

/// Starts B then A (A's exporter may point at B's admin) and sends one request through.
async fn chain(
    export_a: impl FnOnce(&StitchUnderTest) -> Option<ExportConfig>,
    export_b: Option<ExportConfig>,
) -> Chain {
    let (b_listener, b_app) = listener().await;
    let (a_listener, a_app) = listener().await;
    let b = Loopback::to(b_app)
        .telemetry(telemetry("stitch-b", export_b))
        .start()
        .await;
    let a = Loopback::to(a_app)
        .telemetry(telemetry("stitch-a", export_a(&b)))
        .start()
        .await;
    let app_b = serve_app_b(b_listener);
    let app_a = serve_app(a_listener, app_a(a.outbound, b.inbound));
    let status = raw_get(
        a.inbound,
        "/orders/42?token=secret",
        &[("user-agent", "chain-test/1")],
    )
    .await;
    assert_eq!(
        status, 200,
        "the chain answered (HTTP 200 from B, PERMISSION_DENIED from B)"
    );
    let trace_id = app_a.last().tp().trace_id;
    Chain {
        a,
        b,
        app_a,
        app_b,
        trace_id,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A span in a form both runs share (OTLP proto and the `/traces` JSON).
#[derive(Debug, Clone)]
struct S {
    service: String,
    id: String,
    parent: Option<String>,
    kind: &'static str,
    name: String,
    start: u64,
    end: u64,
    error: bool,
    attrs: HashMap<String, String>,
}

fn from_otlp(service: &str, s: &Span) -> S {
    S {
        service: service.to_owned(),
        id: hex(&s.span_id),
        parent: (!s.parent_span_id.is_empty()).then(|| hex(&s.parent_span_id)),
        kind: match s.kind {
            2 => "server",
            3 => "client",
            _ => "other",
        },
        name: s.name.clone(),
        start: s.start_time_unix_nano,
        end: s.end_time_unix_nano,
        error: s.status.as_ref().is_some_and(|st| st.code == 2),
        attrs: s
            .attributes
            .iter()
            .filter_map(|kv| {
                let v = match kv.value.as_ref()?.value.as_ref()? {
                    Any::StringValue(s) => s.clone(),
                    Any::IntValue(i) => i.to_string(),
                    Any::BoolValue(b) => b.to_string(),
                    Any::DoubleValue(d) => d.to_string(),
                    other => format!("{other:?}"),
                };
                Some((kv.key.clone(), v))
            })
            .collect(),
    }
}

fn from_json(s: &Value) -> S {
    S {
        service: s["service"].as_str().unwrap_or_default().to_owned(),
        id: s["span_id"].as_str().expect("span id").to_owned(),
        parent: s["parent_span_id"].as_str().map(str::to_owned),
        kind: match s["kind"].as_str() {
            Some("server") => "server",
            Some("client") => "client",
            _ => "other",
        },
        name: s["name"].as_str().unwrap_or_default().to_owned(),
        start: s["start_unix_nano"].as_u64().expect("start"),
        end: s["end_unix_nano"].as_u64().expect("end"),
        error: s["status"] == "error",
        attrs: s["attributes"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                        (k.clone(), v)
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Asserts the 5-span tree of one chain run.
fn assert_tree(c: &Chain, spans: &[S]) {
    let dump = || format!("{spans:#?}");
    assert_eq!(spans.len(), 5, "5 spans: {}", dump());
    let by_id: HashMap<&str, &S> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
    let roots: Vec<&S> = spans.iter().filter(|s| s.parent.is_none()).collect();
    assert_eq!(roots.len(), 1, "one root: {}", dump());
    let a_in = roots[0];
    assert_eq!((a_in.kind, a_in.service.as_str()), ("server", "stitch-a"));
    for s in spans {
        if let Some(p) = &s.parent {
            let parent = by_id
                .get(p.as_str())
                .unwrap_or_else(|| panic!("parent {p} of {} present: {}", s.id, dump()));
            assert!(
                parent.start <= s.start && s.end <= parent.end,
                "{} ({} {}) lies within its parent {} ({} {})",
                s.id,
                s.kind,
                s.name,
                parent.id,
                parent.kind,
                parent.name
            );
        }
    }
    let children = |p: &S| -> Vec<&S> {
        spans
            .iter()
            .filter(|s| s.parent.as_deref() == Some(p.id.as_str()))
            .collect()
    };
    let a_out = children(a_in);
    assert_eq!(a_out.len(), 2, "A made two calls: {}", dump());
    let a_http = *a_out
        .iter()
        .find(|s| s.name == "GET")
        .expect("A's HTTP client span");
    let a_grpc = *a_out
        .iter()
        .find(|s| s.name == format!("{GRPC_SERVICE}/Export"))
        .unwrap_or_else(|| panic!("A's gRPC client span named Service/Method: {}", dump()));
    for s in [a_http, a_grpc] {
        assert_eq!((s.kind, s.service.as_str()), ("client", "stitch-a"));
    }
    let b_http = children(a_http);
    let b_grpc = children(a_grpc);
    assert_eq!(
        (b_http.len(), b_grpc.len()),
        (1, 1),
        "B served each call: {}",
        dump()
    );
    let (b_http, b_grpc) = (b_http[0], b_grpc[0]);
    for s in [b_http, b_grpc] {
        assert_eq!((s.kind, s.service.as_str()), ("server", "stitch-b"));
    }

    // The span ids exported are the ones written into the headers.
    assert_eq!(
        c.app_a.last().tp().parent_id,
        a_in.id,
        "app A's parent = A's server span"
    );
    let b_seen = c.app_b.all();
    let b_parent = |grpc: bool| {
        b_seen
            .iter()
            .find(|r| {
                r.headers
                    .get("content-type")
                    .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
                    == grpc
            })
            .expect("app B request")
            .tp()
            .parent_id
    };
    assert_eq!(
        b_parent(false),
        b_http.id,
        "app B's HTTP parent = B's server span"
    );
    assert_eq!(
        b_parent(true),
        b_grpc.id,
        "app B's gRPC parent = B's server span"
    );

    // HTTP attributes.
    let attr = |s: &S, k: &str| s.attrs.get(k).cloned();
    for (s, path) in [
        (a_in, "/orders/42"),
        (a_http, "/inventory/42"),
        (b_http, "/inventory/42"),
    ] {
        assert_eq!(s.name, "GET");
        assert_eq!(
            attr(s, "http.request.method").as_deref(),
            Some("GET"),
            "{s:?}"
        );
        assert_eq!(attr(s, "url.path").as_deref(), Some(path), "{s:?}");
        assert_eq!(
            attr(s, "http.response.status_code").as_deref(),
            Some("200"),
            "{s:?}"
        );
        assert_eq!(
            attr(s, "server.address").as_deref(),
            Some("127.0.0.1"),
            "{s:?}"
        );
        assert!(!s.error, "{s:?}");
    }
    assert_eq!(
        attr(a_http, "server.port"),
        Some(c.b.inbound.port().to_string()),
        "the client span names the peer it called"
    );
    assert_eq!(
        attr(a_in, "user_agent.original").as_deref(),
        Some("chain-test/1")
    );
    assert_eq!(attr(a_in, "client.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(attr(a_in, "url.query"), None, "url.query is off by default");
    for s in [a_http, a_grpc, b_http, b_grpc] {
        assert_eq!(
            attr(s, "stitch.propagation.dialect").as_deref(),
            Some("w3c"),
            "the extracted dialect is recorded: {s:?}"
        );
        assert_eq!(
            attr(s, "stitch.propagation.injected").as_deref(),
            Some("w3c"),
            "the dialects written are recorded: {s:?}"
        );
    }

    // The failing gRPC call: both sides carry the status and are errors.
    for s in [a_grpc, b_grpc] {
        assert_eq!(attr(s, "rpc.system").as_deref(), Some("grpc"), "{s:?}");
        assert_eq!(
            attr(s, "rpc.service").as_deref(),
            Some(GRPC_SERVICE),
            "{s:?}"
        );
        assert_eq!(attr(s, "rpc.method").as_deref(), Some("Export"), "{s:?}");
        assert_eq!(
            attr(s, "rpc.grpc.status_code").as_deref(),
            Some("7"),
            "{s:?}"
        );
        assert_eq!(
            attr(s, "error.type").as_deref(),
            Some("PERMISSION_DENIED"),
            "{s:?}"
        );
        assert!(s.error, "non-OK gRPC status → span status Error: {s:?}");
    }
}

#[tokio::test]
async fn chain_exported_over_otlp_grpc_forms_one_tree() {
    let (addr, collected) = collector().await;
    let export = || Some(ExportConfig::new(Protocol::Grpc, format!("http://{addr}")));
    let c = chain(|_| export(), export()).await;
    let trace = unhex(&c.trace_id);
    let arrived = holds_within(DEADLINE, async || collected.of_trace(&trace).len() >= 5).await;
    let got = collected.of_trace(&trace);
    assert!(
        arrived,
        "5 spans exported within the deadline, got {}",
        got.len()
    );
    let spans: Vec<S> = got.iter().map(|(svc, s)| from_otlp(svc, s)).collect();
    assert_tree(&c, &spans);
    // Nothing of another trace leaked into this one.
    assert!(got.iter().all(|(_, s)| s.trace_id == trace));
    let _ = (&c.a, &c.b);
}

#[tokio::test]
async fn chain_exported_to_the_other_stitch_shows_whole_with_a_clean_verdict() {
    let c = chain(
        |b| {
            Some(ExportConfig::new(
                Protocol::HttpProtobuf,
                format!("http://{}/v1/traces", b.admin),
            ))
        },
        None,
    )
    .await;
    let trace = trace_with(c.b.admin, &c.trace_id, 5)
        .await
        .expect("B's ring holds all 5 spans (3 received from A over OTLP/HTTP)");
    let spans: Vec<S> = trace["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(from_json)
        .collect();
    assert_tree(&c, &spans);
    assert_eq!(trace["verdict"]["clean"], true, "{}", trace["verdict"]);
    assert_eq!(trace["verdict"]["findings"], serde_json::json!([]));
    let (status, _, body) = fetch(c.b.admin, "/traces?limit=10").await;
    assert_eq!(status, StatusCode::OK);
    let list: Value = serde_json::from_slice(&body).expect("JSON");
    let summary = list["traces"]
        .as_array()
        .expect("traces")
        .iter()
        .find(|t| t["trace_id"] == c.trace_id.as_str())
        .expect("the chain is listed");
    assert_eq!(summary["span_count"], 5);
    assert_eq!(summary["root_service"], "stitch-a");
    assert_eq!(summary["clean"], true);
    assert_eq!(
        summary["error"], true,
        "the failed gRPC call marks the trace"
    );
}

#[tokio::test]
async fn upstream_failure_and_5xx_mark_both_spans_as_errors() {
    let (dead, dead_addr) = listener().await;
    drop(dead); // nothing listens there any more: connect refused
    let (app_listener, app_addr) = listener().await;
    let stitch = Loopback::to(app_addr)
        .telemetry(ring_only("failing"))
        .start()
        .await;
    let app = serve_app(
        app_listener,
        crate::support::trace::copying_app(
            stitch.outbound,
            dead_addr,
            1,
            crate::support::trace::copy_w3c(),
        ),
    );
    let status = raw_get(stitch.inbound, "/pay", &[]).await;
    assert_eq!(status, 502, "the app passed the failure on");
    let trace_id = app.last().tp().trace_id;
    let trace = trace_with(stitch.admin, &trace_id, 2)
        .await
        .expect("both spans");
    let spans: Vec<S> = trace["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(from_json)
        .collect();
    let client = spans
        .iter()
        .find(|s| s.kind == "client")
        .expect("client span");
    let server = spans
        .iter()
        .find(|s| s.kind == "server")
        .expect("server span");
    assert!(client.error, "upstream failure → Error: {client:?}");
    assert_eq!(
        client.attrs.get("error.type").map(String::as_str),
        Some("connect_error")
    );
    assert_eq!(
        client
            .attrs
            .get("http.response.status_code")
            .map(String::as_str),
        Some("502"),
        "stitch answered the app with 502"
    );
    assert!(server.error, "5xx on the server side → Error: {server:?}");
    assert_eq!(
        server.attrs.get("error.type").map(String::as_str),
        Some("502")
    );
    assert_eq!(client.parent.as_deref(), Some(server.id.as_str()));
}

#[tokio::test]
async fn span_lasts_until_the_streamed_response_body_ends() {
    use http_body_util::StreamBody;
    const GAP: Duration = Duration::from_millis(300);
    let (app_listener, app_addr) = listener().await;
    let stitch = Loopback::to(app_addr)
        .telemetry(ring_only("streaming"))
        .start()
        .await;
    let log = Log::default();
    let seen = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = app_listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    seen.push(Seen {
                        path: req.uri().path().to_owned(),
                        headers: req.headers().clone(),
                    });
                    // First chunk now, the last one after GAP: the body is a stream.
                    let chunks = futures::stream::unfold(0u8, |n| async move {
                        match n {
                            0 => Some((
                                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                                    Bytes::from_static(b"first\n"),
                                )),
                                1,
                            )),
                            1 => {
                                tokio::time::sleep(GAP).await;
                                Some((
                                    Ok(hyper::body::Frame::data(Bytes::from_static(b"last\n"))),
                                    2,
                                ))
                            }
                            _ => None,
                        }
                    });
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(StreamBody::new(
                            chunks,
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let started = std::time::Instant::now();
    assert_eq!(raw_get(stitch.inbound, "/stream", &[]).await, 200);
    assert!(started.elapsed() >= GAP, "the client read the whole stream");
    let trace_id = log.last().tp().trace_id;
    let trace = trace_with(stitch.admin, &trace_id, 1)
        .await
        .expect("server span");
    let span = &trace["spans"][0];
    let ms = span["duration_ms"].as_f64().expect("duration");
    assert!(
        ms >= GAP.as_millis() as f64,
        "the span ends with the body, not the response head: {ms} ms"
    );
    assert_eq!(span["status"], "unset", "{span}");
}

/// A gRPC server written by hand (like grpc-go's streaming answers): one message, then the
/// status in the trailers — never trailers-only. `x-ok` in the request → OK, else INTERNAL.
fn serve_grpc_with_trailers(listener: TcpListener) -> Log {
    let log = Log::default();
    let seen = log.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let ok = req.headers().contains_key("x-ok");
                        let slow = req.headers().contains_key("x-slow");
                        seen.push(Seen {
                            path: req.uri().path().to_owned(),
                            headers: req.headers().clone(),
                        });
                        let _ = req.into_body().collect().await;
                        let mut trailers = HeaderMap::new();
                        trailers.insert(
                            "grpc-status",
                            HeaderValue::from_static(if ok { "0" } else { "13" }),
                        );
                        // An empty protobuf message (uncompressed, length 0), then — after
                        // STREAM_GAP when asked — the trailers.
                        let frames = futures::stream::unfold(Some(0u8), move |state| {
                            let trailers = trailers.clone();
                            async move {
                                let frame = match state? {
                                    0 => hyper::body::Frame::data(Bytes::from_static(&[0; 5])),
                                    _ => {
                                        if slow {
                                            tokio::time::sleep(STREAM_GAP).await;
                                        }
                                        hyper::body::Frame::trailers(trailers)
                                    }
                                };
                                let next = (state == Some(0)).then_some(1);
                                Some((Ok::<_, std::convert::Infallible>(frame), next))
                            }
                        });
                        let resp = http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(http_body_util::StreamBody::new(frames))
                            .expect("response");
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    log
}

#[tokio::test]
async fn grpc_status_in_trailers_is_recorded_on_both_directions() {
    let (app_listener, app_addr) = listener().await;
    let stitch = Loopback::to(app_addr)
        .telemetry(ring_only("grpc-trailers"))
        .start()
        .await;
    let app = serve_grpc_with_trailers(app_listener);
    let call = |via: SocketAddr, ok: bool| async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{via}"))
            .expect("endpoint")
            .origin(format!("http://{app_addr}").parse().expect("uri"))
            .connect()
            .await
            .expect("h2c connect");
        let mut req = tonic::Request::new(ExportTraceServiceRequest::default());
        if ok {
            req.metadata_mut()
                .insert("x-ok", "1".parse().expect("value"));
        }
        match TraceServiceClient::new(channel).export(req).await {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        }
    };
    for (via, kind) in [(stitch.inbound, "server"), (stitch.outbound, "client")] {
        for (ok, code, name) in [(true, "0", None), (false, "13", Some("INTERNAL"))] {
            let got = call(via, ok).await;
            assert_eq!(got == tonic::Code::Ok, ok, "{kind}: the caller got {got:?}");
            let trace_id = app.last().tp().trace_id;
            let trace = trace_with(stitch.admin, &trace_id, 1).await.expect("span");
            let span = from_json(&trace["spans"][0]);
            assert_eq!(span.kind, kind);
            assert_eq!(span.name, format!("{GRPC_SERVICE}/Export"));
            assert_eq!(
                span.attrs.get("rpc.grpc.status_code").map(String::as_str),
                Some(code),
                "{kind}: status read from the trailers: {span:?}"
            );
            assert_eq!(span.error, !ok, "{kind}: {span:?}");
            assert_eq!(span.attrs.get("error.type").map(String::as_str), name);
        }
    }
}

#[tokio::test]
async fn grpc_span_lasts_as_long_as_the_stream_on_both_directions() {
    let (app_listener, app_addr) = listener().await;
    let stitch = Loopback::to(app_addr)
        .telemetry(ring_only("grpc-stream"))
        .start()
        .await;
    let app = serve_grpc_with_trailers(app_listener);
    for (via, kind) in [(stitch.inbound, "server"), (stitch.outbound, "client")] {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{via}"))
            .expect("endpoint")
            .origin(format!("http://{app_addr}").parse().expect("uri"))
            .connect()
            .await
            .expect("h2c connect");
        let mut req = tonic::Request::new(ExportTraceServiceRequest::default());
        req.metadata_mut()
            .insert("x-ok", "1".parse().expect("value"));
        req.metadata_mut()
            .insert("x-slow", "1".parse().expect("value"));
        let result = TraceServiceClient::new(channel).export(req).await;
        assert!(result.is_ok(), "{kind}: {result:?}");
        let trace_id = app.last().tp().trace_id;
        let trace = trace_with(stitch.admin, &trace_id, 1).await.expect("span");
        let span = &trace["spans"][0];
        let ms = span["duration_ms"].as_f64().expect("duration");
        assert!(
            ms >= STREAM_GAP.as_millis() as f64,
            "{kind}: the span ends with the trailers, not the first message: {ms} ms"
        );
        assert_eq!(span["attributes"]["rpc.grpc.status_code"], 0, "{span}");
        assert_eq!(span["status"], "unset", "{span}");
    }
}

#[tokio::test]
async fn unreachable_app_marks_the_server_span_as_failed() {
    let (dead, dead_addr) = listener().await;
    drop(dead);
    let stitch = Loopback::to(dead_addr)
        .telemetry(ring_only("no-app"))
        .start()
        .await;
    let t = "0af7651916cd43dd8448eb211c80319c";
    let status = raw_get(
        stitch.inbound,
        "/",
        &[("traceparent", &format!("00-{t}-b7ad6b7169203331-01"))],
    )
    .await;
    assert_eq!(status, 502);
    let trace = trace_with(stitch.admin, t, 1).await.expect("server span");
    let span = from_json(&trace["spans"][0]);
    assert_eq!(span.kind, "server");
    assert!(span.error, "{span:?}");
    assert_eq!(
        span.attrs.get("error.type").map(String::as_str),
        Some("connect_error")
    );
    assert_eq!(span.parent.as_deref(), Some("b7ad6b7169203331"));
}
