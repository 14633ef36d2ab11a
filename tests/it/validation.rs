//! Request validation (issue 16): the HTTP/1 `Host` rules and chunk framing of RFC 9112, and
//! their HTTP/2 counterparts (RFC 9113 §8.1.1, §8.3.1). Each refused request is answered by
//! stitch and reaches the app not at all: every test here runs against a fresh upstream and
//! checks it never even accepted a connection.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::upstream::HttpUpstream;
use crate::support::wire::roundtrip;
use crate::support::{self, Loopback, StitchUnderTest, h2_client, within};

/// Sends `request` through a fresh stitch in front of a fresh upstream; asserts stitch answered
/// `400` with `Connection: close`, forwarded nothing, and counted `reason`.
async fn refused_before_the_app(request: &str, reason: &str) {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let request = request.replace("{host}", &up.addr.to_string());
    let resp = roundtrip(stitch.inbound, request.as_bytes()).await;
    assert_eq!(resp.status, 400, "{request:?} answered {}", resp.text());
    assert_eq!(
        resp.header("connection").as_deref(),
        Some("close"),
        "a 400 for a malformed request closes the connection"
    );
    assert_rejected_and_counted(&up, stitch.admin, reason).await;
}

/// The upstream never saw a connection, and `/metrics` counts one rejection for `reason`.
async fn assert_rejected_and_counted(up: &HttpUpstream, admin: std::net::SocketAddr, reason: &str) {
    let (_, _, metrics) = support::fetch(admin, "/metrics").await;
    let metrics = String::from_utf8_lossy(&metrics);
    let line = format!("stitch_requests_rejected_total{{reason=\"{reason}\"}} 1");
    assert!(
        metrics.lines().any(|l| l == line),
        "missing `{line}` in /metrics:\n{}",
        metrics
            .lines()
            .filter(|l| l.contains("rejected"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        up.connections(),
        0,
        "the app must receive nothing: {:?}",
        up.recorded()
    );
}

#[tokio::test]
async fn two_host_headers_are_refused() {
    refused_before_the_app(
        "GET / HTTP/1.1\r\nHost: {host}\r\nHost: elsewhere.example\r\n\r\n",
        "duplicate_host",
    )
    .await;
}

#[tokio::test]
async fn an_http11_request_without_host_is_refused() {
    refused_before_the_app("GET / HTTP/1.1\r\nUser-Agent: t\r\n\r\n", "missing_host").await;
}

#[tokio::test]
async fn chunked_sent_twice_is_refused() {
    refused_before_the_app(
        "POST /echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "chunked_twice",
    )
    .await;
}

#[tokio::test]
async fn chunked_listed_twice_in_one_field_is_refused() {
    refused_before_the_app(
        "POST /echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "chunked_twice",
    )
    .await;
}

#[tokio::test]
async fn an_overflowing_chunk_size_is_a_client_error_not_a_bad_gateway() {
    refused_before_the_app(
        "POST /echo HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\nx\r\n0\r\n\r\n",
        "malformed_body",
    )
    .await;
}

#[tokio::test]
async fn a_valid_chunked_body_read_ahead_still_arrives_whole() {
    // The first chunk is held back while stitch checks it: it must still reach the app once,
    // in order, with the rest of the body.
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let request = format!(
        "POST /echo HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        up.addr
    );
    let resp = roundtrip(stitch.inbound, request.as_bytes()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body, b"hello world");
}

#[tokio::test]
async fn bare_lf_line_endings_reach_the_app_as_crlf() {
    // A raw listener captures the head exactly as stitch writes it.
    let (listener, addr) = support::listener().await;
    let captured = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
            let n = stream.read(&mut buf).await.expect("read head");
            assert!(n > 0, "stitch closed before a whole head: {head:?}");
            head.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await
            .expect("answer");
        head
    });
    let stitch = Loopback::to(addr).start().await;
    let resp = roundtrip(
        stitch.inbound,
        format!("GET /lf HTTP/1.1\nHost: {addr}\nX-Bare: lf\n\n").as_bytes(),
    )
    .await;
    assert_eq!(resp.status, 200);
    let head = within("the captured head", captured)
        .await
        .expect("capture task");
    let text = String::from_utf8_lossy(&head);
    assert!(
        text.starts_with("GET /lf HTTP/1.1\r\n") && text.ends_with("\r\n\r\n"),
        "head: {text:?}"
    );
    let bare = head
        .iter()
        .enumerate()
        .filter(|(i, b)| **b == b'\n' && (*i == 0 || head[i - 1] != b'\r'))
        .count();
    assert_eq!(bare, 0, "every line ends in CRLF: {text:?}");
    assert!(text.contains("\r\nX-Bare: lf\r\n"), "head: {text:?}");
}

/// Sends `req` over HTTP/2 to `via` (a listener of `stitch`); asserts the `400`, that nothing
/// reached `up` and that `reason` was counted.
async fn h2_refused(
    stitch: &StitchUnderTest,
    via: std::net::SocketAddr,
    up: &HttpUpstream,
    req: http::Request<Full<Bytes>>,
    reason: &str,
) {
    let (mut client, _conn) = h2_client(via).await;
    let resp = within("h2 response", client.send_request(req))
        .await
        .expect("stitch answers");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_rejected_and_counted(up, stitch.admin, reason).await;
}

#[tokio::test]
async fn h2_host_disagreeing_with_authority_is_refused() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let req = http::Request::get(format!("http://{}/", up.addr))
        .header(http::header::HOST, "elsewhere.example")
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    h2_refused(&stitch, stitch.inbound, &up, req, "host_authority_mismatch").await;
}

#[tokio::test]
async fn h2_outbound_request_without_authority_is_refused() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::new().start().await;
    // Origin-form URI: hyper sends no `:authority`; `host` names the upstream, which RFC 9113
    // §8.3.1 does not let a router use in its place.
    let req = http::Request::get("/")
        .header(http::header::HOST, up.addr.to_string())
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    h2_refused(&stitch, stitch.outbound, &up, req, "missing_authority").await;
}

#[tokio::test]
async fn h2_content_length_disagreeing_with_data_is_reset_and_never_forwarded() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let (mut client, _conn) = h2_client(stitch.inbound).await;
    let req = http::Request::post(format!("http://{}/echo", up.addr))
        .header(http::header::CONTENT_LENGTH, "10")
        .body(Full::new(Bytes::from_static(b"abc")))
        .expect("valid request");
    let result = within("h2 response", client.send_request(req)).await;
    // h2 refuses the stream itself (RST_STREAM PROTOCOL_ERROR, RFC 9113 §8.1.1): no status.
    let err = result.expect_err("a malformed stream gets no response");
    let reason = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<h2::Error>())
        .and_then(h2::Error::reason);
    assert_eq!(reason, Some(h2::Reason::PROTOCOL_ERROR), "error: {err:?}");
    // A valid request on the same connection still goes through (the connection survives).
    let ok = within(
        "next h2 response",
        client.send_request(support::h2_get(up.addr, "/after")),
    )
    .await
    .expect("the connection still serves");
    assert_eq!(ok.status(), StatusCode::OK);
    let recorded = up.wait_for(1).await;
    assert_eq!(
        recorded.len(),
        1,
        "only one request reached the app: {recorded:?}"
    );
    assert!(
        recorded[0].target.ends_with("/after"),
        "the malformed request never reached the app: {recorded:?}"
    );
}

/// A client that closes its connection before its request body's end has left; that is no
/// malformed request and no upstream failure. Before the first chunk (while stitch reads
/// ahead for framing errors) it was counted as `malformed_body`; with part of a
/// `Content-Length` body sent it was answered `502 upstream_reset`. Both now count as the
/// client's `400` (as nginx logs a client that closed mid-body), which is never written:
/// nothing comes back on the connection, and no refusal and no 5xx are counted.
#[tokio::test]
async fn a_client_leaving_mid_body_is_its_400_not_a_refusal_or_an_upstream_failure() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    for request in [
        format!(
            "POST /echo HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n",
            up.addr
        ),
        format!(
            "POST /echo HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\n0123456789",
            up.addr
        ),
    ] {
        let mut client = tokio::net::TcpStream::connect(stitch.inbound)
            .await
            .expect("connect");
        client.write_all(request.as_bytes()).await.expect("send");
        client.shutdown().await.expect("half-close");
        let mut answer = Vec::new();
        within(
            "stitch closes the connection",
            client.read_to_end(&mut answer),
        )
        .await
        .expect("read");
        assert!(
            answer.is_empty(),
            "nothing is answered to a client that left: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    let counted =
        "stitch_requests_total{direction=\"inbound\",protocol=\"http1\",status_class=\"4xx\"} 2";
    let metrics = within("both requests are counted", async {
        loop {
            let (_, _, metrics) = support::fetch(stitch.admin, "/metrics").await;
            let metrics = String::from_utf8_lossy(&metrics).into_owned();
            if metrics.lines().any(|l| l == counted) {
                return metrics;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let wrong = |l: &&str| {
        (l.contains("reason=\"malformed_body\"") || l.contains("status_class=\"5xx\""))
            && !l.ends_with(" 0")
    };
    let wrong: Vec<&str> = metrics.lines().filter(wrong).collect();
    assert!(
        wrong.is_empty(),
        "counted as refused or as an upstream failure: {wrong:?}"
    );
}
