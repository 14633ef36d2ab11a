//! The headline check, end to end through two real stitch instances:
//! client → stitch A inbound → app A → stitch A outbound → stitch B inbound → app B (gRPC,
//! failing with UNAVAILABLE). A real tonic OTLP collector receives the spans; the tree must
//! be one trace with every parent present, the right kinds, attributes, nested timings and
//! the gRPC status of the failing call.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use stitch::telemetry::{ExportConfig, Protocol, TelemetryConfig};
use tokio::net::{TcpListener, TcpStream};

use crate::support::telemetry::{Received, attr, grpc_collector};
use crate::support::{Loopback, holds_within, listener, serve_http};

/// App B: a gRPC server whose every call fails with a trailers-only UNAVAILABLE.
async fn app_b() -> SocketAddr {
    let (listener, addr) = listener().await;
    serve_http(listener, |_req| async {
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/grpc")
            .header("grpc-status", "14")
            .header("grpc-message", "out of stock service down")
            .body(Empty::<Bytes>::new())
            .expect("response")
    });
    addr
}

/// App A: an instrumented HTTP/1 app that, per request, calls B over gRPC (h2c) through its
/// own stitch's outbound listener, carrying the `traceparent` it received.
fn app_a(listener: TcpListener, stitch_a_outbound: SocketAddr, stitch_b_inbound: SocketAddr) {
    serve_http(listener, move |req| async move {
        let traceparent = req.headers().get("traceparent").cloned();
        let io = TokioIo::new(
            TcpStream::connect(stitch_a_outbound)
                .await
                .expect("connect outbound"),
        );
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        let mut call = Request::post(format!(
            "http://{stitch_b_inbound}/shop.v1.Inventory/Reserve"
        ))
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
        if let Some(tp) = traceparent {
            call = call.header("traceparent", tp);
        }
        let grpc = sender
            .send_request(
                call.body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
                    .expect("call"),
            )
            .await
            .expect("gRPC response");
        let status = grpc
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        let _ = grpc.into_body().collect().await;
        Response::new(Full::new(Bytes::from(format!("grpc-status {status}"))))
    });
}

/// A stitch exporting OTLP/gRPC to `collector` as `service`.
fn stitch(service: &str, target: SocketAddr, collector: SocketAddr) -> Loopback {
    Loopback::to(target)
        .service(service)
        .telemetry(TelemetryConfig {
            export: Some(ExportConfig::new(
                Protocol::Grpc,
                format!("http://{collector}"),
            )),
            batch_delay: Duration::from_millis(20),
            ..TelemetryConfig::default()
        })
}

fn service_of(received: &Received, span_id: &[u8]) -> Option<String> {
    let requests = received.requests.lock().expect("lock");
    requests
        .iter()
        .flat_map(|(_, r)| r.resource_spans.iter())
        .find_map(|rs| {
            let has = rs
                .scope_spans
                .iter()
                .flat_map(|ss| ss.spans.iter())
                .any(|s| s.span_id == span_id);
            if !has {
                return None;
            }
            rs.resource
                .as_ref()?
                .attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hop_chain_arrives_as_one_tree() {
    let (collector, received) = grpc_collector().await;

    let b_app = app_b().await;
    let stitch_b = stitch("inventory", b_app, collector).start().await;

    // App A's listener is bound first so stitch A can target it; it serves once stitch A's
    // outbound address is known.
    let (a_app, a_app_addr) = listener().await;
    let stitch_a = stitch("orders", a_app_addr, collector).start().await;
    let a_inbound = stitch_a.inbound;
    app_a(a_app, stitch_a.outbound, stitch_b.inbound);

    // The client: a plain request with no trace context.
    let (status, _, body) = crate::support::http_request(
        a_inbound,
        "GET",
        "/orders/42",
        &[("user-agent", "e2e/1")],
        Vec::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        &body[..],
        b"grpc-status 14",
        "the failing gRPC status reached app A"
    );

    let arrived = holds_within(Duration::from_secs(15), async || received.len() >= 3).await;
    assert!(arrived, "three spans exported, got {}", received.len());
    let spans = received.spans();
    assert_eq!(spans.len(), 3, "exactly one span per hop: {spans:#?}");
    let trace_id = &spans[0].trace_id;
    assert!(
        spans.iter().all(|s| &s.trace_id == trace_id),
        "one trace id"
    );

    let a_server = spans
        .iter()
        .find(|s| s.parent_span_id.is_empty())
        .expect("a root");
    let a_client = spans
        .iter()
        .find(|s| s.parent_span_id == a_server.span_id)
        .expect("A's client span");
    let b_server = spans
        .iter()
        .find(|s| s.parent_span_id == a_client.span_id)
        .expect("B's server span");
    assert_eq!(
        (a_server.kind, a_client.kind, b_server.kind),
        (2, 3, 2),
        "server, client, server"
    );
    assert_eq!(
        service_of(&received, &a_server.span_id).as_deref(),
        Some("orders")
    );
    assert_eq!(
        service_of(&received, &a_client.span_id).as_deref(),
        Some("orders")
    );
    assert_eq!(
        service_of(&received, &b_server.span_id).as_deref(),
        Some("inventory")
    );

    assert_eq!(a_server.name, "GET");
    assert_eq!(
        attr(a_server, "http.request.method"),
        Some(&Value::StringValue("GET".into()))
    );
    assert_eq!(
        attr(a_server, "url.path"),
        Some(&Value::StringValue("/orders/42".into()))
    );
    assert_eq!(
        attr(a_server, "http.response.status_code"),
        Some(&Value::IntValue(200))
    );
    assert_eq!(
        a_server.status.as_ref().map_or(0, |s| s.code),
        0,
        "a 200 stays unset"
    );

    for (who, span) in [("A client", a_client), ("B server", b_server)] {
        assert_eq!(span.name, "shop.v1.Inventory/Reserve", "{who}");
        assert_eq!(
            attr(span, "rpc.system"),
            Some(&Value::StringValue("grpc".into())),
            "{who}"
        );
        assert_eq!(
            attr(span, "rpc.service"),
            Some(&Value::StringValue("shop.v1.Inventory".into())),
            "{who}"
        );
        assert_eq!(
            attr(span, "rpc.method"),
            Some(&Value::StringValue("Reserve".into())),
            "{who}"
        );
        assert_eq!(
            attr(span, "rpc.grpc.status_code"),
            Some(&Value::IntValue(14)),
            "{who}"
        );
        assert_eq!(
            attr(span, "error.type"),
            Some(&Value::StringValue("UNAVAILABLE".into())),
            "{who}"
        );
        assert_eq!(
            span.status.as_ref().map(|s| s.code),
            Some(2),
            "{who}: status Error"
        );
    }

    // Timings nest: A server ⊇ A client ⊇ B server (one host, one clock). Ends get a small
    // tolerance: B's server span ends when B has written the last frame, A's client span
    // when A has read it, and the two tasks record their clocks independently.
    const END_TOLERANCE_NS: u64 = 5_000_000;
    assert!(a_server.start_time_unix_nano <= a_client.start_time_unix_nano);
    assert!(a_client.start_time_unix_nano <= b_server.start_time_unix_nano);
    assert!(
        b_server.end_time_unix_nano <= a_client.end_time_unix_nano + END_TOLERANCE_NS,
        "B ends {} ns after A's client span",
        b_server
            .end_time_unix_nano
            .saturating_sub(a_client.end_time_unix_nano)
    );
    assert!(a_client.end_time_unix_nano <= a_server.end_time_unix_nano);
    eprintln!(
        "B server end - A client end = {} ns",
        b_server.end_time_unix_nano as i128 - a_client.end_time_unix_nano as i128
    );

    stitch_a.shutdown.trigger();
    stitch_b.shutdown.trigger();
    for mut stitch in [stitch_a, stitch_b] {
        let _ = tokio::time::timeout(Duration::from_secs(40), &mut stitch.task).await;
    }
}
