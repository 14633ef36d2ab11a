//! HTTP/2 (h2c prior knowledge) and gRPC through stitch in explicit mode: multiplexing onto
//! one upstream connection, trailers, `:authority` routing on the outbound listener, all four
//! gRPC modes, status pass-through, cancellation, and errors on a closed upstream.

use std::sync::atomic::Ordering;

use futures::StreamExt;
use tonic::{Code, Request};

use crate::support;
use crate::support::grpc::{self, FAIL_CODE, FAIL_MESSAGE, GrpcUpstream, Msg};
use crate::support::upstream::{BARRIER_SIZE, FIXED_BODY, HttpUpstream};
use crate::support::{Loopback, collect_body, eventually, h2_client, h2_get, within};

#[tokio::test]
async fn h2c_100_concurrent_streams_share_one_upstream_connection() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let (client, _conn) = h2_client(stitch.inbound).await;
    // `/barrier` answers only once all 100 requests are in flight at the upstream together,
    // so this completes only if stitch really multiplexes them concurrently.
    let calls = (0..BARRIER_SIZE).map(|i| {
        let mut client = client.clone();
        async move {
            let resp = client
                .send_request(h2_get(up.addr, &format!("/barrier?i={i}")))
                .await
                .expect("response");
            assert_eq!(resp.status(), 200);
            collect_body(resp.into_body()).await.0
        }
    });
    let bodies = within(
        "100 concurrent h2 streams",
        futures::future::join_all(calls),
    )
    .await;
    assert!(bodies.iter().all(|b| b == "all arrived"));
    let recorded = up.wait_for(BARRIER_SIZE).await;
    assert!(
        recorded.iter().all(|r| r.version == http::Version::HTTP_2),
        "forwarded as h2"
    );
    assert_eq!(
        up.connections(),
        1,
        "one client connection → one pooled upstream connection"
    );
}

#[tokio::test]
async fn h2_response_trailers_are_forwarded() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let (mut client, _conn) = h2_client(stitch.inbound).await;
    let resp = within(
        "response",
        client.send_request(h2_get(up.addr, "/trailers")),
    )
    .await
    .expect("response");
    assert_eq!(resp.status(), 200);
    let (body, trailers) = collect_body(resp.into_body()).await;
    assert_eq!(body, "with trailers");
    let trailers = trailers.expect("trailers reach the client");
    assert_eq!(
        trailers.get("x-checksum").map(|v| v.as_bytes()),
        Some(&b"42"[..])
    );
    assert_eq!(
        trailers.get("x-trailer-two").map(|v| v.as_bytes()),
        Some(&b"b"[..])
    );
}

#[tokio::test]
async fn h2c_on_outbound_is_routed_by_authority() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::new().start().await;
    let (mut client, _conn) = h2_client(stitch.outbound).await;
    let resp = within(
        "response",
        client.send_request(h2_get(up.addr, "/by/authority?x=1")),
    )
    .await
    .expect("response");
    assert_eq!(resp.status(), 200);
    assert_eq!(collect_body(resp.into_body()).await.0, FIXED_BODY);
    let recorded = up.wait_for(1).await;
    assert_eq!(recorded[0].target, "/by/authority?x=1");
}

#[tokio::test]
async fn h2_closed_upstream_port_gives_502_with_a_text_cause() {
    let closed = support::closed_port().await;
    let stitch = Loopback::to(closed).start().await;
    let (mut client, _conn) = h2_client(stitch.inbound).await;
    let resp = within("response", client.send_request(h2_get(closed, "/")))
        .await
        .expect("a response, not a reset");
    assert_eq!(resp.status(), 502);
    let body =
        String::from_utf8_lossy(&collect_body(resp.into_body()).await.0).to_ascii_lowercase();
    assert!(
        !body.is_empty() && body.len() < 1024,
        "a short body: {body:?}"
    );
    assert!(
        body.contains("refused"),
        "the body names the cause (connection refused): {body:?}"
    );
}

#[tokio::test]
async fn grpc_unary() {
    let up = GrpcUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let mut client = grpc::client(stitch.inbound, up.addr).await;
    let resp = within(
        "unary call",
        client.unary(
            Request::new(Msg {
                text: "ping".into(),
                n: 41,
            }),
            grpc::method("Unary"),
            grpc::codec(),
        ),
    )
    .await
    .expect("unary succeeds");
    assert_eq!(
        resp.into_inner(),
        Msg {
            text: "ping".into(),
            n: 42
        }
    );
}

#[tokio::test]
async fn grpc_server_streaming() {
    let up = GrpcUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let mut client = grpc::client(stitch.inbound, up.addr).await;
    let resp = within(
        "server-streaming call",
        client.server_streaming(
            Request::new(Msg {
                text: "item".into(),
                n: 50,
            }),
            grpc::method("ServerStream"),
            grpc::codec(),
        ),
    )
    .await
    .expect("call starts");
    let items: Vec<Msg> = within(
        "all streamed messages",
        resp.into_inner().map(|m| m.expect("message")).collect(),
    )
    .await;
    assert_eq!(items.len(), 50);
    assert_eq!(
        items[49],
        Msg {
            text: "item-49".into(),
            n: 49
        }
    );
}

#[tokio::test]
async fn grpc_client_streaming() {
    let up = GrpcUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let mut client = grpc::client(stitch.inbound, up.addr).await;
    let outbound = futures::stream::iter((0..20).map(|i| Msg {
        text: format!("m{i}"),
        n: i,
    }));
    let resp = within(
        "client-streaming call",
        client.client_streaming(
            Request::new(outbound),
            grpc::method("ClientStream"),
            grpc::codec(),
        ),
    )
    .await
    .expect("call succeeds")
    .into_inner();
    assert_eq!(resp.n, 20);
    assert!(resp.text.starts_with("m0,m1,") && resp.text.ends_with(",m19"));
}

#[tokio::test]
async fn grpc_bidi_streaming_interleaves() {
    let up = GrpcUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let mut client = grpc::client(stitch.inbound, up.addr).await;
    // Send one message at a time and wait for its echo before the next: this only works if
    // both directions stream independently through stitch.
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(1);
    let outbound =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let tx_first = tx.clone();
    tx_first
        .send(Msg {
            text: "a0".into(),
            n: 0,
        })
        .await
        .expect("queue first");
    let resp = within(
        "bidi call",
        client.streaming(Request::new(outbound), grpc::method("Bidi"), grpc::codec()),
    )
    .await
    .expect("call starts");
    let mut inbound = resp.into_inner();
    for i in 0..10u32 {
        let echo = within("bidi echo", inbound.message())
            .await
            .expect("no error")
            .expect("a message");
        assert_eq!(
            echo,
            Msg {
                text: format!("echo:a{i}"),
                n: i
            }
        );
        if i < 9 {
            tx.send(Msg {
                text: format!("a{}", i + 1),
                n: i + 1,
            })
            .await
            .expect("queue next");
        }
    }
    drop((tx, tx_first));
    assert!(
        within("end of stream", inbound.message())
            .await
            .expect("clean end")
            .is_none()
    );
}

#[tokio::test]
async fn grpc_error_status_message_and_metadata_pass_through_untouched() {
    let up = GrpcUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let mut client = grpc::client(stitch.inbound, up.addr).await;
    let status = within(
        "failing call",
        client.unary(
            Request::new(Msg::default()),
            grpc::method("Fail"),
            grpc::codec(),
        ),
    )
    .await
    .expect_err("the call fails");
    assert_eq!(status.code(), FAIL_CODE);
    assert_eq!(status.message(), FAIL_MESSAGE);
    assert_eq!(
        status
            .metadata()
            .get("x-fail-reason")
            .and_then(|v| v.to_str().ok()),
        Some("locked")
    );
}

#[tokio::test]
async fn grpc_status_in_trailers_after_messages_is_forwarded() {
    let up = GrpcUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let mut client = grpc::client(stitch.inbound, up.addr).await;
    let resp = within(
        "call",
        client.server_streaming(
            Request::new(Msg::default()),
            grpc::method("StreamThenAbort"),
            grpc::codec(),
        ),
    )
    .await
    .expect("call starts");
    let mut stream = resp.into_inner();
    let mut got = Vec::new();
    let status = within("stream to end", async {
        loop {
            match stream.message().await {
                Ok(Some(m)) => got.push(m.text),
                Ok(None) => panic!("stream ended without the trailing status"),
                Err(status) => return status,
            }
        }
    })
    .await;
    assert_eq!(got, ["one", "two"]);
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(status.message(), "aborted after two");
    assert_eq!(
        status
            .metadata()
            .get("x-abort-reason")
            .and_then(|v| v.to_str().ok()),
        Some("stopped-at-two"),
        "custom trailer metadata survives"
    );
}

#[tokio::test]
async fn grpc_cancellation_reaches_the_upstream() {
    let up = GrpcUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let mut client = grpc::client(stitch.inbound, up.addr).await;
    let resp = within(
        "endless call",
        client.server_streaming(
            Request::new(Msg::default()),
            grpc::method("Endless"),
            grpc::codec(),
        ),
    )
    .await
    .expect("call starts");
    let mut stream = resp.into_inner();
    let first = within("first message", stream.message())
        .await
        .expect("no error")
        .expect("a message");
    assert_eq!(first.text, "first");
    assert_eq!(
        up.endless_dropped.load(Ordering::SeqCst),
        0,
        "the call is still running"
    );
    // Dropping the response stream makes the client reset the HTTP/2 stream; the upstream
    // handler only ever ends if stitch passes that reset on.
    drop(stream);
    eventually("the upstream to see the cancellation", async || {
        up.endless_dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    // The shared connection survives the cancelled stream.
    within("client ready", client.ready())
        .await
        .expect("channel ready");
    let ok = within(
        "unary after cancel",
        client.unary(
            Request::new(Msg {
                text: "still".into(),
                n: 1,
            }),
            grpc::method("Unary"),
            grpc::codec(),
        ),
    )
    .await
    .expect("the connection is still usable");
    assert_eq!(ok.into_inner().text, "still");
}

#[tokio::test]
async fn grpc_on_outbound_is_routed_by_authority() {
    let up = GrpcUpstream::start().await;
    let stitch = Loopback::new().start().await;
    let mut client = grpc::client(stitch.outbound, up.addr).await;
    let resp = within(
        "unary via outbound",
        client.unary(
            Request::new(Msg {
                text: "out".into(),
                n: 1,
            }),
            grpc::method("Unary"),
            grpc::codec(),
        ),
    )
    .await
    .expect("routed to the upstream named by :authority");
    assert_eq!(
        resp.into_inner(),
        Msg {
            text: "out".into(),
            n: 2
        }
    );
}

#[tokio::test]
async fn grpc_closed_upstream_port_gives_unavailable_with_a_message() {
    let closed = support::closed_port().await;
    let stitch = Loopback::to(closed).start().await;
    let mut client = grpc::client(stitch.inbound, closed).await;
    let status = within(
        "call to a closed port",
        client.unary(
            Request::new(Msg::default()),
            grpc::method("Unary"),
            grpc::codec(),
        ),
    )
    .await
    .expect_err("the call fails");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        !status.message().is_empty(),
        "UNAVAILABLE carries a message"
    );
    // tonic also maps a bare HTTP 502 to UNAVAILABLE; make sure stitch sent a real gRPC status.
    assert!(
        !status.message().contains("HTTP status code"),
        "stitch must answer with grpc-status 14, not a plain HTTP error: {:?}",
        status.message()
    );
}

#[tokio::test]
async fn h2_request_body_streams_to_the_upstream_and_back() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let (mut client, _conn) = h2_client(stitch.inbound).await;
    let payload: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 249) as u8).collect();
    let req = http::Request::post(format!("http://{}/echo", up.addr))
        .body(http_body_util::Full::new(bytes::Bytes::from(
            payload.clone(),
        )))
        .expect("valid request");
    let resp = within("h2 echo", client.send_request(req))
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    let (body, _) = collect_body(resp.into_body()).await;
    assert!(
        body == payload,
        "3 MiB came back altered ({} bytes)",
        body.len()
    );
    assert_eq!(up.wait_for(1).await[0].body.len(), payload.len());
}

#[tokio::test]
async fn grpc_upstream_hanging_up_gives_unavailable() {
    let hang_up = support::tcp::hang_up_server().await;
    let stitch = Loopback::to(hang_up).start().await;
    let mut client = grpc::client(stitch.inbound, hang_up).await;
    let status = within(
        "call to an upstream that hangs up",
        client.unary(
            Request::new(Msg::default()),
            grpc::method("Unary"),
            grpc::codec(),
        ),
    )
    .await
    .expect_err("the call fails");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(!status.message().is_empty());
    assert!(
        !status.message().contains("HTTP status code"),
        "a real grpc-status: {:?}",
        status.message()
    );
}
