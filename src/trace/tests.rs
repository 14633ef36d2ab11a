//! The trace layer without sockets: `TraceLayer::layer(service_fn(..)).oneshot(req)` over an
//! inner service that answers the way the forwarder can, one test per way a request can end.
//! Each asserts exactly one span (none under `trace: false`) and exactly one request count.

use std::convert::Infallible;
use std::path::Path;

use bytes::Bytes;
use futures::FutureExt;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use tower::{ServiceExt, service_fn};

use super::*;
use crate::config::{CompiledRules, parse_rules};
use crate::telemetry::ring::TraceQuery;
use crate::telemetry::span::AttrValue;
use crate::telemetry::{Telemetry, TelemetryConfig, TraceRing};
use crate::upstream_failure::UpstreamFailure;

/// The trace layer's handles over a ring-only pipeline, and what the tests read back.
struct Fixture {
    handles: Arc<TraceHandles>,
    ring: TraceRing,
    metrics: Metrics,
    _telemetry: Telemetry,
}

fn fixture(rules: CompiledRules) -> Fixture {
    let telemetry = Telemetry::start(TelemetryConfig::default());
    let handles = TraceHandles {
        rules: RulesHandle::new(rules),
        inflight: Inflight::default(),
        sink: telemetry.sink(),
        metrics: telemetry.metrics(),
        record_query: false,
    };
    Fixture {
        handles: Arc::new(handles),
        ring: telemetry.ring(),
        metrics: telemetry.metrics(),
        _telemetry: telemetry,
    }
}

impl Fixture {
    fn layer(&self, http2: bool) -> TraceLayer {
        TraceLayer::new(
            self.handles.clone(),
            ConnInfo {
                direction: Direction::Inbound,
                client: "10.0.0.7:50000".parse().expect("literal address"),
                destination_port: Some(8080),
                http2,
            },
        )
    }

    /// The one span the ring holds; fails unless there is exactly one.
    fn only_span(&self) -> Arc<SpanRecord> {
        assert_eq!(self.ring.span_count(), 1, "exactly one span recorded");
        let query = TraceQuery {
            limit: 10,
            ..TraceQuery::default()
        };
        let trace = self.ring.recent(&query)[0].trace_id;
        let detail = self.ring.trace(&trace).expect("the span's trace");
        detail.spans[0].span.clone()
    }

    /// `stitch_requests_total` summed over every series whose labels contain `labels`.
    fn requests(&self, labels: &str) -> f64 {
        self.metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with("stitch_requests_total{") && l.contains(labels))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// Exactly one request was counted, and it was in `status_class`.
    fn assert_one_request(&self, status_class: &str) {
        assert_eq!(self.requests(""), 1.0, "exactly one request counted");
        let class = format!("status_class=\"{status_class}\"");
        assert_eq!(self.requests(&class), 1.0, "counted as {status_class}");
    }
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header(http::header::HOST, "orders.svc:8080")
        .body(Empty::new())
        .expect("valid request")
}

fn error_type(span: &SpanRecord) -> Option<String> {
    match span.attr(semconv::ERROR_TYPE) {
        Some(AttrValue::Str(s)) => Some(s.into()),
        _ => None,
    }
}

#[tokio::test]
async fn end_of_stream_records_one_span_and_one_request() {
    let f = fixture(CompiledRules::default());
    let inner = service_fn(|_req: Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
    });
    let resp = f.layer(false).layer(inner).oneshot(get("/orders/1")).await;
    let body = resp.expect("infallible").into_body().collect().await;
    assert_eq!(body.expect("body").to_bytes(), "hello");
    let span = f.only_span();
    assert_eq!(span.kind, SpanKind::Server);
    assert_eq!(
        span.attr(semconv::HTTP_RESPONSE_STATUS_CODE),
        Some(AttrValue::Int(200))
    );
    assert!(!span.status.is_error(), "{:?}", span.status);
    f.assert_one_request("2xx");
}

#[tokio::test]
async fn trailers_end_the_hop_and_carry_the_grpc_status() {
    let f = fixture(CompiledRules::default());
    let inner = service_fn(|_req: Request<Empty<Bytes>>| async {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("5"));
        let body = Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))
            .with_trailers(async move { Some(Ok(trailers)) });
        Ok::<_, Infallible>(Response::new(body))
    });
    let req = Request::post("http://inventory:50051/shop.v1.Inventory/Reserve")
        .version(http::Version::HTTP_2)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .body(Empty::<Bytes>::new())
        .expect("valid request");
    let resp = f.layer(true).layer(inner).oneshot(req).await;
    let collected = resp.expect("infallible").into_body().collect().await;
    assert!(
        collected.expect("body").trailers().is_some(),
        "trailers pass through"
    );
    let span = f.only_span();
    assert_eq!(span.name, "shop.v1.Inventory/Reserve");
    assert_eq!(
        span.attr(semconv::RPC_GRPC_STATUS_CODE),
        Some(AttrValue::Int(5))
    );
    assert_eq!(error_type(&span).as_deref(), Some("NOT_FOUND"));
    f.assert_one_request("2xx");
    assert_eq!(f.requests("protocol=\"grpc\""), 1.0);
}

#[tokio::test]
async fn a_body_error_ends_the_hop_as_failed() {
    let f = fixture(CompiledRules::default());
    let inner = service_fn(|_req: Request<Empty<Bytes>>| async {
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"partial"))),
            Err(std::io::Error::other("upstream reset mid-body")),
        ];
        Ok::<_, Infallible>(Response::new(StreamBody::new(futures::stream::iter(
            frames,
        ))))
    });
    let resp = f.layer(false).layer(inner).oneshot(get("/download")).await;
    let body = resp.expect("infallible").into_body().collect().await;
    assert!(body.is_err(), "the body error reaches the server");
    let span = f.only_span();
    assert_eq!(error_type(&span).as_deref(), Some("response_body_error"));
    assert!(span.status.is_error());
    f.assert_one_request("2xx");
}

#[tokio::test]
async fn a_client_gone_mid_body_cancels_the_hop() {
    let f = fixture(CompiledRules::default());
    let inner = service_fn(|_req: Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"never read"))))
    });
    let resp = f.layer(false).layer(inner).oneshot(get("/slow")).await;
    drop(resp.expect("infallible"));
    let span = f.only_span();
    assert_eq!(error_type(&span).as_deref(), Some("cancelled"));
    f.assert_one_request("2xx");
}

#[tokio::test]
async fn a_client_gone_before_the_response_head_counts_a_failed_request() {
    let f = fixture(CompiledRules::default());
    let inner = service_fn(|_req: Request<Empty<Bytes>>| {
        std::future::pending::<Result<Response<Empty<Bytes>>, Infallible>>()
    });
    let mut exchange = Box::pin(f.layer(false).layer(inner).oneshot(get("/hangs")));
    assert!(
        (&mut exchange).now_or_never().is_none(),
        "no response head yet"
    );
    drop(exchange);
    let span = f.only_span();
    assert_eq!(error_type(&span).as_deref(), Some("cancelled"));
    f.assert_one_request("failed");
}

#[tokio::test]
async fn a_head_response_dropped_unpolled_is_a_normal_end() {
    let f = fixture(CompiledRules::default());
    let inner = service_fn(|_req: Request<Empty<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    });
    let req = Request::head("/orders/1")
        .header(http::header::HOST, "orders.svc:8080")
        .body(Empty::<Bytes>::new())
        .expect("valid request");
    let resp = f.layer(false).layer(inner).oneshot(req).await;
    // What hyper does with a HEAD answer: the body is dropped without being polled.
    drop(resp.expect("infallible"));
    let span = f.only_span();
    assert_eq!(span.name, "HEAD");
    assert_eq!(error_type(&span), None, "not a cancellation");
    assert!(!span.status.is_error());
    f.assert_one_request("2xx");
}

#[tokio::test]
async fn an_upstream_failure_marks_the_span_with_its_kind() {
    let f = fixture(CompiledRules::default());
    let inner = service_fn(|_req: Request<Empty<Bytes>>| async {
        let mut resp = Response::new(Full::new(Bytes::from_static(b"stitch: refused\n")));
        *resp.status_mut() = StatusCode::BAD_GATEWAY;
        resp.extensions_mut()
            .insert(UpstreamFailure("connect_error"));
        Ok::<_, Infallible>(resp)
    });
    let resp = f.layer(false).layer(inner).oneshot(get("/orders/1")).await;
    let resp = resp.expect("infallible");
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let _ = resp.into_body().collect().await;
    let span = f.only_span();
    assert_eq!(error_type(&span).as_deref(), Some("connect_error"));
    assert!(span.status.is_error());
    f.assert_one_request("5xx");
}

#[tokio::test]
async fn an_inner_service_error_fails_the_hop() {
    let f = fixture(CompiledRules::default());
    let inner = service_fn(|_req: Request<Empty<Bytes>>| async {
        Err::<Response<Empty<Bytes>>, _>(std::io::Error::other("inner service failed"))
    });
    let resp = f.layer(false).layer(inner).oneshot(get("/orders/1")).await;
    assert!(resp.is_err(), "the layer passes the inner error on");
    let span = f.only_span();
    assert_eq!(error_type(&span).as_deref(), Some("internal"));
    f.assert_one_request("failed");
}

#[tokio::test]
async fn trace_false_counts_the_request_but_records_no_span() {
    let rules = "rules:\n  - match: { path_prefix: /healthz }\n    trace: false\n";
    let f = fixture(parse_rules(rules, Path::new("rules.yaml")).expect("valid rules"));
    let inner = service_fn(|req: Request<Empty<Bytes>>| async move {
        assert!(
            req.headers().get("traceparent").is_none(),
            "forwarded untouched"
        );
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"live"))))
    });
    let resp = f
        .layer(false)
        .layer(inner)
        .oneshot(get("/healthz/live"))
        .await;
    let _ = resp.expect("infallible").into_body().collect().await;
    assert_eq!(f.ring.span_count(), 0, "no span");
    f.assert_one_request("2xx");
}
