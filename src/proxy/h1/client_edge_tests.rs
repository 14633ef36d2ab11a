//! Tests of [`super::client`] against a raw upstream writing exact bytes: spellings and reason
//! phrases kept, interim responses, protocol switches, connection persistence, early answers,
//! failures before a head (helpers in `client_test_support`).

use std::error::Error as _;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderName;
use http::{Method, Request, StatusCode, Uri};
use http_body::Frame;
use http_body_util::{Empty, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use super::client::{Connection, SendError};
use super::client_test_support::{
    BodyBroke, Channel, SETTINGS, answer_and_hold, connect, get, raw_upstream, read_to_end,
    request, try_send,
};
use super::ext::ReasonPhrase;
use super::head::{HeadError, HeaderCase, parse_request};
use super::server_test_support::GUARD;

/// An upstream that answers `bytes` to one request and holds the connection open.
async fn answering(bytes: &'static [u8]) -> Connection {
    let addr = raw_upstream(move |stream, _| answer_and_hold(stream, bytes)).await;
    connect(addr).await
}

#[tokio::test]
async fn header_case_and_an_obs_text_reason_are_kept_both_ways() {
    let (seen_tx, seen) = oneshot::channel();
    let addr = raw_upstream(move |stream, head| async move {
        let _ = seen_tx.send(head);
        answer_and_hold(
            stream,
            b"HTTP/1.1 200 Caf\xe9 Ok\r\nX-Custom-NAME: a\r\nx-lower: b\r\nContent-Length: 2\r\n\r\nok",
        )
        .await;
    })
    .await;
    let (head, _) = parse_request(
        b"GET /p?q=1 HTTP/1.1\r\nHost: upstream\r\nX-Mixed-Case: 1\r\nX-EMPTY:\r\n\r\n",
        &SETTINGS.limits,
    )
    .expect("parses")
    .expect("complete");
    let mut req = Request::new(Empty::<Bytes>::new());
    *req.uri_mut() = head.uri;
    *req.headers_mut() = head.headers;
    req.extensions_mut().insert(head.case);
    let ex = try_send(connect(addr).await, req).await.expect("exchange");
    assert_eq!(
        seen.await.expect("head"),
        "GET /p?q=1 HTTP/1.1\r\nHost: upstream\r\nX-Mixed-Case: 1\r\nX-EMPTY: \r\n\r\n"
    );
    let reason = ex
        .response
        .extensions()
        .get::<ReasonPhrase>()
        .expect("reason");
    assert_eq!(&reason.0[..], b"Caf\xe9 Ok");
    let case = ex.response.extensions().get::<HeaderCase>().expect("case");
    let name = HeaderName::from_static("x-custom-name");
    assert_eq!(case.spellings(&name).next(), Some(&b"X-Custom-NAME"[..]));
    assert_eq!(read_to_end(ex.response).await.text(), "ok");
    assert!(ex.reuse.reclaim().is_some());
}

#[tokio::test]
async fn a_canonical_reason_adds_no_extension() {
    let conn = answering(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
    let ex = try_send(conn, get("/")).await.expect("exchange");
    assert_eq!(ex.response.status(), StatusCode::NOT_FOUND);
    assert!(ex.response.extensions().get::<ReasonPhrase>().is_none());
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let conn = answering(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let ex = try_send(conn, get("/")).await.expect("exchange");
    assert_eq!(ex.response.status(), StatusCode::OK);
    assert_eq!(read_to_end(ex.response).await.text(), "ok");
    assert!(ex.reuse.reclaim().is_some());
}

#[tokio::test]
async fn switching_protocols_hands_over_the_socket_with_leftover_bytes() {
    let addr = raw_upstream(|mut stream, head| async move {
        assert!(head.contains("upgrade: websocket\r\n"), "{head}");
        stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nearly")
            .await
            .expect("answer");
        let mut ping = [0u8; 4];
        stream.read_exact(&mut ping).await.expect("ping");
        assert_eq!(&ping, b"ping");
        stream.write_all(b"pong").await.expect("pong");
    })
    .await;
    let req = Request::get("/ws")
        .header("host", "upstream")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let ex = try_send(connect(addr).await, req).await.expect("exchange");
    assert_eq!(ex.response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert!(
        ex.reuse.reclaim().is_none(),
        "a switched connection is the tunnel's"
    );
    let mut tunnel = ex.upgraded.expect("upgraded");
    let mut early = [0u8; 5];
    tunnel.read_exact(&mut early).await.expect("leftover");
    assert_eq!(&early, b"early");
    tunnel.write_all(b"ping").await.expect("ping");
    let mut pong = [0u8; 4];
    tunnel.read_exact(&mut pong).await.expect("pong");
    assert_eq!(&pong, b"pong");
}

#[tokio::test]
async fn a_2xx_to_connect_opens_a_tunnel() {
    let addr = raw_upstream(|mut stream, head| async move {
        assert!(
            head.starts_with("CONNECT example.com:443 HTTP/1.1\r\n"),
            "{head}"
        );
        stream
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .expect("answer");
        let mut hello = [0u8; 5];
        stream.read_exact(&mut hello).await.expect("hello");
        stream.write_all(&hello).await.expect("echo");
    })
    .await;
    let mut req = Request::new(Empty::<Bytes>::new());
    *req.method_mut() = Method::CONNECT;
    *req.uri_mut() = Uri::from_static("example.com:443");
    let ex = try_send(connect(addr).await, req).await.expect("exchange");
    assert_eq!(ex.response.status(), StatusCode::OK);
    let mut tunnel = ex.upgraded.expect("a tunnel");
    tunnel.write_all(b"hello").await.expect("write");
    let mut echo = [0u8; 5];
    tunnel.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"hello");
}

#[tokio::test]
async fn connection_close_in_the_response_is_not_reclaimed() {
    let conn =
        answering(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok").await;
    let ex = try_send(conn, get("/")).await.expect("exchange");
    assert_eq!(read_to_end(ex.response).await.text(), "ok");
    assert!(ex.reuse.reclaim().is_none());
}

#[tokio::test]
async fn an_http10_response_without_keep_alive_is_not_reclaimed() {
    let conn = answering(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let ex = try_send(conn, get("/")).await.expect("exchange");
    assert_eq!(read_to_end(ex.response).await.text(), "ok");
    assert!(ex.reuse.reclaim().is_none());
}

#[tokio::test]
async fn a_close_delimited_body_ends_at_the_close() {
    let addr = raw_upstream(|mut stream, _| async move {
        stream
            .write_all(b"HTTP/1.1 200 OK\r\n\r\nall of ")
            .await
            .expect("answer");
        stream.write_all(b"this").await.expect("more");
    })
    .await;
    let ex = try_send(connect(addr).await, get("/"))
        .await
        .expect("exchange");
    assert_eq!(read_to_end(ex.response).await.text(), "all of this");
    assert!(ex.reuse.reclaim().is_none());
}

#[tokio::test]
async fn bytes_after_a_response_make_the_connection_unusable() {
    let conn = answering(b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n\r\n").await;
    let ex = try_send(conn, get("/")).await.expect("exchange");
    // Either read with the head or not yet: in both cases the connection must not be reused
    // as if clean; give the bytes time to arrive, then reclaim checks the buffer or the
    // pool's `is_reusable` sees them.
    tokio::time::sleep(Duration::from_millis(50)).await;
    if let Some(mut conn) = ex.reuse.reclaim() {
        assert!(
            !conn.is_reusable(),
            "unexpected bytes are seen before reuse"
        );
    }
}

#[tokio::test]
async fn an_early_answer_is_delivered_while_the_request_body_streams() {
    let addr = raw_upstream(|stream, _| {
        answer_and_hold(
            stream,
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig",
        )
    })
    .await;
    let (tx, body) = Channel::starting_with(b"first");
    let req = request(Method::POST, "/upload", body);
    let ex = try_send(connect(addr).await, req).await.expect("exchange");
    assert_eq!(ex.response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(read_to_end(ex.response).await.text(), "big");
    assert!(
        ex.reuse.reclaim().is_none(),
        "the request body is unfinished"
    );
    // The writer task was stopped: the body's channel is closed.
    tokio::time::timeout(GUARD, tx.closed())
        .await
        .expect("the body writer ends");
}

/// An answer before the request body was written: the body is still finished, but the
/// connection is not reused, even with an upstream that drains the body as this one does
/// (one that does not would read the rest of the body as the next request: smuggling).
#[tokio::test]
async fn an_early_answer_never_returns_its_connection_to_the_pool() {
    let addr = raw_upstream(|mut stream, _| async move {
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await
            .expect("answer");
        // Reads the chunked body to its last chunk, then waits for the next request.
        let mut seen = Vec::new();
        while !seen.ends_with(b"0\r\n\r\n") {
            seen.push(stream.read_u8().await.expect("body"));
        }
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink).await;
    })
    .await;
    let (tx, body) = Channel::starting_with(b"part");
    let req = request(Method::POST, "/", body);
    let ex = try_send(connect(addr).await, req).await.expect("exchange");
    assert_eq!(read_to_end(ex.response).await.text(), "ok");
    tx.send(Ok(Frame::data(Bytes::from_static(b"rest"))))
        .await
        .expect("sent");
    drop(tx);
    // The spawned writer finishes the body (a few wake-ups away).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        ex.reuse.reclaim().is_none(),
        "answered before the request was written: not reused"
    );
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_not_reusable() {
    let (close_tx, close) = oneshot::channel::<()>();
    let addr = raw_upstream(|mut stream, _| async move {
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .await
            .expect("answer");
        let _ = close.await;
    })
    .await;
    let ex = try_send(connect(addr).await, get("/"))
        .await
        .expect("exchange");
    let mut conn = ex.reuse.reclaim().expect("reusable");
    assert!(conn.is_reusable(), "open and quiet");
    close_tx.send(()).expect("close");
    tokio::time::timeout(GUARD, async {
        while conn.is_reusable() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the close is seen");
}

#[tokio::test]
async fn a_request_not_written_at_all_comes_back() {
    let addr = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            // A reset, not a close: the next write on the connection fails.
            socket2::SockRef::from(&stream)
                .set_linger(Some(Duration::ZERO))
                .expect("linger");
            drop(stream);
        });
        addr
    };
    let mut conn = connect(addr).await;
    tokio::time::timeout(GUARD, async {
        while conn.is_reusable() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the reset is seen");
    let err = try_send(conn, get("/retry-me")).await.expect_err("fails");
    let SendError::Unsent { request, .. } = err else {
        panic!("the request comes back: {err:?}");
    };
    assert_eq!(request.uri(), "/retry-me");
}

#[tokio::test]
async fn a_close_before_the_head_is_an_error() {
    let addr = raw_upstream(|stream, _| async move { drop(stream) }).await;
    let err = try_send(connect(addr).await, get("/"))
        .await
        .expect_err("fails");
    assert!(
        matches!(err, SendError::Closed | SendError::Io(_)),
        "the request was written, so it does not come back: {err:?}"
    );
}

#[tokio::test]
async fn a_response_head_over_the_limits_is_refused() {
    let mut big = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..200 {
        big.extend_from_slice(format!("x-filler-{i}: {}\r\n", "v".repeat(60)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    let big: &'static [u8] = big.leak();
    let err = try_send(answering(big).await, get("/"))
        .await
        .expect_err("too large");
    assert!(
        matches!(err, SendError::Head(HeadError::TooLarge)),
        "{err:?}"
    );

    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..40 {
        many.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let many: &'static [u8] = many.leak();
    let err = try_send(answering(many).await, get("/"))
        .await
        .expect_err("too many fields");
    assert!(
        matches!(err, SendError::Head(HeadError::TooLarge)),
        "{err:?}"
    );
}

#[tokio::test]
async fn untrustworthy_response_framing_is_refused() {
    let conn = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd").await;
    let err = try_send(conn, get("/")).await.expect_err("refused");
    assert!(matches!(err, SendError::Framing(_)), "{err:?}");
}

#[tokio::test]
async fn a_request_body_error_is_the_failures_source() {
    let addr = raw_upstream(|stream, _| answer_and_hold(stream, b"")).await;
    let (tx, body) = Channel::starting_with(b"some");
    tx.send(Err(BodyBroke)).await.expect("sent");
    let req = request(Method::POST, "/", body);
    let err = try_send(connect(addr).await, req)
        .await
        .expect_err("the body failed");
    assert!(matches!(err, SendError::Body(_)), "{err:?}");
    let source = err.source().expect("a source");
    assert!(source.downcast_ref::<BodyBroke>().is_some(), "{source:?}");
}

#[tokio::test]
async fn a_body_shorter_than_its_content_length_fails_the_exchange() {
    let addr = raw_upstream(|stream, _| answer_and_hold(stream, b"")).await;
    let req = Request::post("/")
        .header("host", "upstream")
        .header("content-length", "10")
        .body(Full::new(Bytes::from_static(b"short")))
        .expect("request");
    let err = try_send(connect(addr).await, req)
        .await
        .expect_err("short body");
    assert!(matches!(err, SendError::Body(_)), "{err:?}");
}

#[tokio::test]
async fn dropping_the_send_future_stops_writing_the_request_body() {
    // The upstream reads the head and never answers.
    let addr = raw_upstream(|stream, _| answer_and_hold(stream, b"")).await;
    let (tx, body) = Channel::starting_with(b"first");
    let req = request(Method::POST, "/", body);
    let conn = connect(addr).await;
    let sending = conn.send(req, &SETTINGS);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), sending)
            .await
            .is_err(),
        "no answer yet"
    );
    // The future is gone, and with it the body: nothing keeps writing.
    tokio::time::timeout(GUARD, tx.closed())
        .await
        .expect("the body was dropped");
}

#[tokio::test]
async fn a_request_body_failing_after_the_answer_ends_the_request_side() {
    let (got_tx, got) = oneshot::channel();
    let addr = raw_upstream(|mut stream, _| async move {
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await
            .expect("answer");
        let mut body = Vec::new();
        let _ = stream.read_to_end(&mut body).await;
        let _ = got_tx.send(body);
    })
    .await;
    let (tx, body) = Channel::starting_with(b"part");
    let req = request(Method::POST, "/", body);
    let ex = try_send(connect(addr).await, req).await.expect("exchange");
    assert_eq!(read_to_end(ex.response).await.text(), "ok");
    tx.send(Err(BodyBroke)).await.expect("sent");
    // The writer task shuts its half: the upstream sees the request end, unfinished.
    let body = tokio::time::timeout(GUARD, got)
        .await
        .expect("EOF")
        .expect("body");
    assert_eq!(body, b"4\r\npart\r\n");
    assert!(ex.reuse.reclaim().is_none());
}
