//! HTTP/1.1 through stitch in explicit mode, against a real hyper upstream: keep-alive,
//! chunked bodies, 100-continue, bodiless responses, HTTP/1.0, WebSocket, the outbound
//! listener as a plain proxy (absolute-form, Host routing, CONNECT), hop-by-hop handling,
//! byte-exact targets, and 502 on a closed upstream.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use tokio::io::AsyncWriteExt;

use crate::support;
use crate::support::tcp::{
    EOF_MARKER, echo_server, hang_up_server, unresponsive_port, websocket_echo_server,
};
use crate::support::upstream::{FIXED_BODY, HttpUpstream};
use crate::support::wire::{RawUpstream, Wire, roundtrip};
use crate::support::{Loopback, collect_body, get, h1_client, within};

#[tokio::test]
async fn keep_alive_two_requests_share_one_client_and_one_upstream_connection() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let mut client = h1_client(stitch.inbound).await;
    for path in ["/first", "/second"] {
        within("client ready", client.ready())
            .await
            .expect("connection stays open");
        let resp = within("response", client.send_request(get(up.addr, path)))
            .await
            .expect("response");
        assert_eq!(resp.status(), 200);
        assert_eq!(collect_body(resp.into_body()).await.0, FIXED_BODY);
    }
    let recorded = up.wait_for(2).await;
    assert_eq!(recorded[0].target, "/first");
    assert_eq!(recorded[1].target, "/second");
    assert_eq!(
        up.connections(),
        1,
        "the upstream connection must be pooled and reused for the second request"
    );
    assert_eq!(recorded[0].conn, recorded[1].conn);
}

#[tokio::test]
async fn chunked_request_body_reaches_upstream_intact() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let mut wire = Wire::connect(stitch.inbound).await;
    wire.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;ext=1\r\n,\r\n6\r\n world\r\n0\r\n\r\n",
            up.addr
        )
        .as_bytes(),
    )
    .await;
    let resp = wire.read_response(false).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "hello, world");
    let recorded = up.wait_for(1).await;
    assert_eq!(recorded[0].body, "hello, world");
    assert!(
        recorded[0].headers.get("content-length").is_none()
            || recorded[0].headers.get("transfer-encoding").is_none(),
        "never both framing headers upstream"
    );
}

#[tokio::test]
async fn chunked_response_is_streamed_not_buffered() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let mut client = h1_client(stitch.inbound).await;
    let resp = within("response head", client.send_request(get(up.addr, "/gated")))
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("content-length").is_none(),
        "an unknown-length body must not get a Content-Length (that needs buffering)"
    );
    let mut body = resp.into_body();
    // The upstream holds the rest of the body until the gate opens, so the first chunk can
    // only arrive here if stitch forwards it as it comes.
    let first = within("first chunk before the upstream finished", async {
        use http_body_util::BodyExt;
        loop {
            let frame = body.frame().await.expect("a frame").expect("no body error");
            if let Ok(data) = frame.into_data()
                && !data.is_empty()
            {
                return data;
            }
        }
    })
    .await;
    assert_eq!(first, "first;");
    up.open_gate(1);
    let (rest, _) = collect_body(body).await;
    assert_eq!(rest, "second;third");
}

#[tokio::test]
async fn expect_100_continue_gets_interim_response_before_the_body() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let mut wire = Wire::connect(stitch.inbound).await;
    wire.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: {}\r\nContent-Length: 7\r\nExpect: 100-continue\r\n\r\n",
            up.addr
        )
        .as_bytes(),
    )
    .await;
    let interim = wire.read_response(false).await;
    assert_eq!(interim.status, 100, "the client must be told to continue");
    wire.send(b"payload").await;
    let resp = wire.read_response(false).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "payload");
}

#[tokio::test]
async fn head_response_has_no_body_and_connection_stays_usable() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let mut wire = Wire::connect(stitch.inbound).await;
    wire.send(format!("HEAD /thing HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr).as_bytes())
        .await;
    let head = wire.read_response(true).await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length").as_deref(),
        Some(FIXED_BODY.len().to_string().as_str()),
        "HEAD keeps the length the GET would have"
    );
    // If any body bytes followed the HEAD response, they would corrupt this next response.
    wire.send(format!("GET /after HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr).as_bytes())
        .await;
    let next = wire.read_response(false).await;
    assert_eq!(next.status, 200);
    assert_eq!(next.text(), FIXED_BODY);
    assert_eq!(up.wait_for(2).await[0].method, "HEAD");
}

#[tokio::test]
async fn status_204_and_304_have_no_body() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let mut wire = Wire::connect(stitch.inbound).await;
    for code in [204u16, 304] {
        wire.send(format!("GET /status/{code} HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr).as_bytes())
            .await;
        let resp = wire.read_response(false).await;
        assert_eq!(resp.status, code);
        assert!(
            resp.header("transfer-encoding").is_none(),
            "{code} must not be chunked"
        );
    }
    wire.send(format!("GET /after HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr).as_bytes())
        .await;
    let next = wire.read_response(false).await;
    assert_eq!(
        next.text(),
        FIXED_BODY,
        "no stray bytes after a bodiless response"
    );
}

#[tokio::test]
async fn http10_client_gets_a_complete_response_and_a_close() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let mut wire = Wire::connect(stitch.inbound).await;
    wire.send(format!("GET /old HTTP/1.0\r\nHost: {}\r\n\r\n", up.addr).as_bytes())
        .await;
    let resp = wire.read_response(false).await;
    assert_eq!(resp.status, 200);
    assert!(
        !resp.chunked,
        "an HTTP/1.0 client cannot read chunked encoding"
    );
    assert_eq!(resp.text(), FIXED_BODY);
    wire.expect_closed_within(support::DEADLINE, "HTTP/1.0 without keep-alive closes")
        .await;
    assert_eq!(up.wait_for(1).await[0].target, "/old");
}

#[tokio::test]
async fn websocket_echo_through_the_upgrade_tunnel() {
    let ws_addr = websocket_echo_server().await;
    let stitch = Loopback::to(ws_addr).start().await;
    let stream = support::connect(stitch.inbound).await;
    let (mut ws, resp) = within(
        "WebSocket handshake",
        tokio_tungstenite::client_async(format!("ws://{ws_addr}/socket"), stream),
    )
    .await
    .expect("the 101 comes back through stitch");
    assert_eq!(resp.status(), 101);
    use tokio_tungstenite::tungstenite::Message;
    let big = vec![0xA5u8; 200 * 1024];
    for msg in [
        Message::text("hello through stitch"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::binary(big),
    ] {
        within("ws send", ws.send(msg.clone()))
            .await
            .expect("ws send");
        let back = within("ws echo", ws.next())
            .await
            .expect("a message")
            .expect("no ws error");
        assert_eq!(back, msg);
    }
    within("ws close", ws.close(None))
        .await
        .expect("clean close");
}

#[tokio::test]
async fn outbound_absolute_form_request_goes_to_the_named_host() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::new().start().await;
    let resp = roundtrip(
        stitch.outbound,
        format!(
            "GET http://{0}/via/proxy?q=1 HTTP/1.1\r\nHost: {0}\r\n\r\n",
            up.addr
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), FIXED_BODY);
    let recorded = up.wait_for(1).await;
    assert_eq!(
        recorded[0].target, "/via/proxy?q=1",
        "origin-form towards the origin"
    );
    assert_eq!(
        recorded[0].headers.get("host").map(|h| h.as_bytes()),
        Some(up.addr.to_string().as_bytes())
    );
}

#[tokio::test]
async fn outbound_origin_form_request_is_routed_by_host() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::new().start().await;
    let resp = roundtrip(
        stitch.outbound,
        format!("GET /by/host HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr).as_bytes(),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), FIXED_BODY);
    assert_eq!(up.wait_for(1).await[0].target, "/by/host");
}

#[tokio::test]
async fn outbound_connect_tunnels_raw_bytes_both_ways() {
    let echo = echo_server().await;
    let stitch = Loopback::new().start().await;
    let mut wire = Wire::connect(stitch.outbound).await;
    wire.send(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes())
        .await;
    let resp = wire.read_response(true).await;
    assert_eq!(resp.status, 200, "CONNECT established");
    let payload = b"\x16\x03\x01 not http at all \x00\xff";
    wire.send(payload).await;
    assert_eq!(
        within("tunnel echo", wire.read_n(payload.len()))
            .await
            .expect("echo"),
        payload
    );
    within("half-close", wire.stream.shutdown())
        .await
        .expect("shutdown write");
    let rest = within("tunnel close", wire.read_to_close())
        .await
        .expect("read to close");
    assert_eq!(rest, EOF_MARKER, "half-close crosses the tunnel");
}

#[tokio::test]
async fn hop_by_hop_fields_removed_and_nothing_added() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let mut wire = Wire::connect(stitch.inbound).await;
    wire.send(
        format!(
            "GET /resp-hop HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive, X-Hop, TE\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nTE: deflate\r\nProxy-Connection: keep-alive\r\nX-End-To-End: kept\r\n\r\n",
            up.addr
        )
        .as_bytes(),
    )
    .await;
    let resp = wire.read_response(false).await;
    assert_eq!(resp.status, 200);
    let seen = &up.wait_for(1).await[0].headers;
    // Proxy-Authorization is deliberately not in this list: RFC 9110 §11.7.2 lets it travel
    // on to a next proxy, which in transparent mode is the one the app actually addressed.
    for name in ["x-hop", "keep-alive", "te", "proxy-connection"] {
        assert!(
            seen.get(name).is_none(),
            "hop-by-hop {name} reached the upstream: {seen:?}"
        );
    }
    if let Some(conn) = seen.get("connection") {
        let v = conn.to_str().unwrap_or_default().to_ascii_lowercase();
        assert!(
            !v.contains("x-hop") && !v.contains("te"),
            "Connection forwarded as sent: {v}"
        );
    }
    assert_eq!(
        seen.get("x-end-to-end").map(|v| v.as_bytes()),
        Some(&b"kept"[..])
    );
    for name in [
        "via",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
        "x-real-ip",
    ] {
        assert!(seen.get(name).is_none(), "stitch added {name}: {seen:?}");
    }
    // And the response direction.
    for name in ["x-resp-hop", "keep-alive"] {
        assert!(
            resp.header(name).is_none(),
            "hop-by-hop {name} reached the client: {:?}",
            String::from_utf8_lossy(&resp.head)
        );
    }
    assert_eq!(resp.header("x-resp-keep").as_deref(), Some("yes"));
    assert!(
        resp.header("via").is_none(),
        "stitch added Via to the response"
    );
}

#[tokio::test]
async fn request_target_and_query_are_forwarded_byte_for_byte() {
    let up = RawUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let targets: [&[u8]; 7] = [
        b"/a/%2F..%2fb/./c//d?x=1&y=%20&z=a+b&&=;",
        b"/p%2Fq/../r?b=%41%zz&c=&d+e=%2B",
        b"//double//slashes//",
        b"/matrix;p=1;q=2/x?",
        b"/%E2%82%AC/caf%C3%A9?q=%00%ff",
        b"/?a=1&a=2&a=3",
        b"/UPPER/lower/MiXeD?KEY=Value",
    ];
    for (i, target) in targets.iter().enumerate() {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(target);
        req.extend_from_slice(format!(" HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr).as_bytes());
        let resp = roundtrip(stitch.inbound, &req).await;
        assert_eq!(
            resp.status,
            200,
            "target {}",
            String::from_utf8_lossy(target)
        );
        let got = &up.wait_for(i + 1).await[i];
        assert_eq!(
            String::from_utf8_lossy(&got.target),
            String::from_utf8_lossy(target),
            "the target must not be normalised or re-encoded"
        );
    }
}

#[tokio::test]
async fn closed_upstream_port_gives_502_with_a_text_cause() {
    let closed = support::closed_port().await;
    let stitch = Loopback::to(closed).start().await;
    let resp = roundtrip(
        stitch.inbound,
        format!("GET / HTTP/1.1\r\nHost: {closed}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(resp.status, 502);
    let body = resp.text().to_ascii_lowercase();
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
async fn large_request_and_response_bodies_stream_through_intact() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let mut client = h1_client(stitch.inbound).await;
    let payload: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let req = http::Request::post("/echo")
        .header(http::header::HOST, up.addr.to_string())
        .body(Full::new(Bytes::from(payload.clone())))
        .expect("valid request");
    let resp = within("echo of 4 MiB", client.send_request(req))
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    let (body, _) = collect_body(resp.into_body()).await;
    assert!(
        body == payload,
        "4 MiB came back altered ({} bytes)",
        body.len()
    );
}

#[tokio::test]
async fn upstream_closing_before_the_response_gives_502() {
    let hang_up = hang_up_server().await;
    let stitch = Loopback::to(hang_up).start().await;
    let resp = roundtrip(
        stitch.inbound,
        format!("GET / HTTP/1.1\r\nHost: {hang_up}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(resp.status, 502);
    assert!(!resp.body.is_empty(), "the 502 names its cause");
}

#[tokio::test]
async fn connect_timeout_bounds_an_unresponsive_upstream() {
    let (silent, _keep) = unresponsive_port().await;
    let stitch = Loopback::to(silent)
        .with(|s| s.connect_timeout = std::time::Duration::from_millis(200))
        .start()
        .await;
    let started = std::time::Instant::now();
    let mut wire = Wire::connect(stitch.inbound).await;
    wire.send(format!("GET / HTTP/1.1\r\nHost: {silent}\r\n\r\n").as_bytes())
        .await;
    // Below the 3 s default: only the configured 200 ms can produce the answer this early.
    let resp = tokio::time::timeout(
        std::time::Duration::from_millis(2500),
        wire.try_read_response(false),
    )
    .await
    .expect("an answer well before the default connect timeout")
    .expect("a response");
    assert!(matches!(resp.status, 502 | 504), "status {}", resp.status);
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(150),
        "answered before the connect could time out"
    );
}

#[tokio::test]
async fn idle_pooled_upstream_connection_is_closed_after_the_idle_timeout() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr)
        .with(|s| s.upstream_idle_timeout = std::time::Duration::from_millis(300))
        .start()
        .await;
    let first = roundtrip(
        stitch.inbound,
        format!("GET /a HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr).as_bytes(),
    )
    .await;
    assert_eq!(first.status, 200);
    support::eventually("stitch to close its idle upstream connection", async || {
        up.closed_connections() == 1
    })
    .await;
    let second = roundtrip(
        stitch.inbound,
        format!("GET /b HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr).as_bytes(),
    )
    .await;
    assert_eq!(
        second.status, 200,
        "a fresh upstream connection replaces the expired one"
    );
    assert_eq!(up.connections(), 2);
}
