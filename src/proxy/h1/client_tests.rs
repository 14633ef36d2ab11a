//! Tests of [`super::client`] against a real hyper 1 server on loopback: keep-alive reuse,
//! request body framing, bodiless responses, chunked trailers, large streamed bodies
//! (helpers in `client_test_support`).

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body::Frame;
use http_body_util::{Empty, Full, StreamBody};

use super::client::Connection;
use super::client_test_support::{Channel, Upstream, connect, get, read_to_end, request, send};
use super::ext::{BoxRead, BoxWrite};

#[tokio::test]
async fn keep_alive_two_requests_reuse_one_connection() {
    let up = Upstream::start().await;
    let ex = send(connect(up.addr).await, get("/one")).await;
    assert_eq!(ex.response.status(), StatusCode::OK);
    read_to_end(ex.response).await;
    let mut conn = ex
        .reuse
        .reclaim()
        .expect("a keep-alive connection comes back");
    assert!(conn.is_reusable());
    let req = request(
        Method::POST,
        "/two",
        Full::new(Bytes::from_static(b"hello")),
    );
    let ex = send(conn, req).await;
    assert_eq!(read_to_end(ex.response).await.text(), "hello");
    assert!(ex.reuse.reclaim().is_some());
    assert_eq!(up.accepted(), 1, "both requests went on one connection");
}

#[tokio::test]
async fn an_idle_connection_holds_no_buffer() {
    // Structural: an idle connection is its two stream halves, nothing else.
    assert_eq!(
        size_of::<Connection>(),
        size_of::<BoxRead>() + size_of::<BoxWrite>()
    );
    // And the halves it gets back are the streams themselves, after a body that filled a
    // read buffer.
    let up = Upstream::start().await;
    let ex = send(connect(up.addr).await, get("/big/100000")).await;
    assert_eq!(read_to_end(ex.response).await.data.len(), 100_000);
    let conn = ex.reuse.reclaim().expect("reusable");
    let ex = send(conn, get("/status/204")).await;
    assert_eq!(ex.response.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn post_with_content_length_is_sent_with_it() {
    let up = Upstream::start().await;
    // A Content-Length given and a body of unknown size: the given length frames it.
    let body = StreamBody::new(futures::stream::iter(vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"abc"))),
        Ok(Frame::data(Bytes::from_static(b"def"))),
    ]));
    let req = Request::post("/echo")
        .header("host", "upstream")
        .header("Content-Length", "6")
        .body(body)
        .expect("request");
    let ex = send(connect(up.addr).await, req).await;
    assert_eq!(ex.response.headers()["x-cl"], "6");
    assert_eq!(ex.response.headers()["x-te"], "-");
    assert_eq!(read_to_end(ex.response).await.text(), "abcdef");
    assert!(ex.reuse.reclaim().is_some());
}

#[tokio::test]
async fn an_exact_size_hint_adds_content_length() {
    let up = Upstream::start().await;
    let req = request(
        Method::PUT,
        "/echo",
        Full::new(Bytes::from_static(b"sized")),
    );
    let ex = send(connect(up.addr).await, req).await;
    assert_eq!(ex.response.headers()["x-cl"], "5");
    assert_eq!(ex.response.headers()["x-te"], "-");
    assert_eq!(read_to_end(ex.response).await.text(), "sized");
}

#[tokio::test]
async fn an_empty_post_goes_without_framing_fields_as_hyper_sent_it() {
    let up = Upstream::start().await;
    let req = request(Method::POST, "/echo", Empty::<Bytes>::new());
    let ex = send(connect(up.addr).await, req).await;
    assert_eq!(ex.response.headers()["x-cl"], "-");
    assert_eq!(ex.response.headers()["x-te"], "-");
    assert_eq!(read_to_end(ex.response).await.text(), "");
    assert!(ex.reuse.reclaim().is_some());
}

#[tokio::test]
async fn unknown_length_goes_chunked_with_trailers() {
    let up = Upstream::start().await;
    let (tx, body) = Channel::new();
    let req = request(Method::POST, "/echo", body);
    let feed = tokio::spawn(async move {
        for piece in ["one ", "two ", "three"] {
            tx.send(Ok(Frame::data(Bytes::from(piece)))).await.ok();
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", "7".parse().expect("value"));
        tx.send(Ok(Frame::trailers(trailers))).await.ok();
    });
    let ex = send(connect(up.addr).await, req).await;
    feed.await.expect("fed");
    assert_eq!(ex.response.headers()["x-te"], "chunked");
    assert_eq!(ex.response.headers()["x-cl"], "-");
    assert_eq!(ex.response.headers()["x-trailers"], "x-sum=7;");
    assert_eq!(read_to_end(ex.response).await.text(), "one two three");
    assert!(ex.reuse.reclaim().is_some());
}

#[tokio::test]
async fn a_get_with_a_body_of_unknown_length_sends_none_as_hyper_did() {
    let up = Upstream::start().await;
    let (tx, body) = Channel::new();
    drop(tx.send(Ok(Frame::data(Bytes::from("ignored")))).await);
    let req = request(Method::GET, "/echo", body);
    let ex = send(connect(up.addr).await, req).await;
    assert_eq!(ex.response.headers()["x-te"], "-");
    assert_eq!(read_to_end(ex.response).await.text(), "");
}

#[tokio::test]
async fn head_response_has_no_body_and_the_connection_is_reused() {
    let up = Upstream::start().await;
    let req = request(Method::HEAD, "/big/1000", Empty::<Bytes>::new());
    let ex = send(connect(up.addr).await, req).await;
    assert_eq!(ex.response.status(), StatusCode::OK);
    assert_eq!(read_to_end(ex.response).await.data.len(), 0);
    let conn = ex.reuse.reclaim().expect("reusable after HEAD");
    let ex = send(conn, get("/echo")).await;
    assert_eq!(ex.response.status(), StatusCode::OK);
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn status_204_and_304_have_no_body() {
    let up = Upstream::start().await;
    let mut conn = connect(up.addr).await;
    for code in [204, 304, 204] {
        let ex = send(conn, get(&format!("/status/{code}"))).await;
        assert_eq!(ex.response.status().as_u16(), code);
        assert_eq!(read_to_end(ex.response).await.data.len(), 0);
        conn = ex.reuse.reclaim().expect("reusable");
    }
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn chunked_response_trailers_arrive_as_a_trailers_frame() {
    let up = Upstream::start().await;
    // hyper's server sends trailers only to a client that says it takes them.
    let req = Request::get("/trailers")
        .header("host", "upstream")
        .header("te", "trailers")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let ex = send(connect(up.addr).await, req).await;
    assert_eq!(ex.response.headers()["transfer-encoding"], "chunked");
    let read = read_to_end(ex.response).await;
    assert_eq!(read.text(), "hello world");
    let trailers = read.trailers.expect("trailers");
    assert_eq!(trailers["x-checksum"], "42");
    assert!(ex.reuse.reclaim().is_some());
}

#[tokio::test]
async fn large_bodies_stream_both_ways_without_being_buffered() {
    const SIZE: usize = 8 * 1024 * 1024;
    let up = Upstream::start().await;
    let ex = send(connect(up.addr).await, get(&format!("/big/{SIZE}"))).await;
    let read = read_to_end(ex.response).await;
    assert_eq!(read.data.len(), SIZE);
    assert!(
        read.frames > 64,
        "streamed in pieces: {} frames",
        read.frames
    );
    assert!(
        read.largest_frame <= 256 * 1024,
        "no frame holds much: {}",
        read.largest_frame
    );
    let conn = ex.reuse.reclaim().expect("reusable");

    let (tx, body) = Channel::new();
    let feed = tokio::spawn(async move {
        for _ in 0..SIZE / (256 * 1024) {
            let frame = Frame::data(Bytes::from(vec![b'y'; 256 * 1024]));
            if tx.send(Ok(frame)).await.is_err() {
                break;
            }
        }
    });
    let req = request(Method::POST, "/count", body);
    let ex = send(conn, req).await;
    assert_eq!(read_to_end(ex.response).await.text(), SIZE.to_string());
    feed.await.expect("fed");
    assert!(ex.reuse.reclaim().is_some());
    assert_eq!(up.accepted(), 1);
}

#[tokio::test]
async fn a_request_saying_close_is_not_reclaimed() {
    let up = Upstream::start().await;
    let mut req = get("/echo");
    req.headers_mut()
        .insert("connection", http::HeaderValue::from_static("close"));
    let ex = send(connect(up.addr).await, req).await;
    assert_eq!(ex.response.status(), StatusCode::OK);
    read_to_end(ex.response).await;
    assert!(ex.reuse.reclaim().is_none());
}

#[tokio::test]
async fn a_response_body_dropped_midway_gives_nothing_back() {
    let up = Upstream::start().await;
    let ex = send(connect(up.addr).await, get("/big/1000000")).await;
    let mut body = ex.response.into_body();
    let first = http_body_util::BodyExt::frame(&mut body).await;
    assert!(first.is_some_and(|f| f.is_ok()));
    drop(body);
    assert!(
        ex.reuse.reclaim().is_none(),
        "where the next response starts is unknown"
    );
}

#[test]
fn request_framing_follows_hyper() {
    use http::{HeaderValue, Version};

    use super::client::plan;
    use super::response::Outgoing;

    let framed = |method: Method, version, fields: &[(&str, &str)], end, exact| {
        let mut headers = HeaderMap::new();
        for (n, v) in fields {
            headers.append(
                http::header::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        let outgoing = plan(&method, version, &mut headers, end, exact);
        let cl = headers
            .get("content-length")
            .map(|v| v.to_str().expect("text").to_owned());
        let te = headers
            .get_all("transfer-encoding")
            .iter()
            .map(|v| v.to_str().expect("text").to_owned())
            .collect::<Vec<_>>()
            .join(",");
        (outgoing, cl, te)
    };
    let v11 = Version::HTTP_11;
    let v10 = Version::HTTP_10;
    // A body at its end: nothing, no field added, a stray Transfer-Encoding removed.
    assert_eq!(
        framed(
            Method::POST,
            v11,
            &[("transfer-encoding", "chunked")],
            true,
            Some(0)
        ),
        (Outgoing::None, None, String::new())
    );
    // A Content-Length given wins over the size hint.
    assert_eq!(
        framed(
            Method::POST,
            v11,
            &[("content-length", "7")],
            false,
            Some(3)
        ),
        (Outgoing::Length(7), Some("7".into()), String::new())
    );
    // Exact size: added; unknown: chunked, but not for GET / HEAD / CONNECT.
    assert_eq!(
        framed(Method::PUT, v11, &[], false, Some(3)),
        (Outgoing::Length(3), Some("3".into()), String::new())
    );
    assert_eq!(
        framed(Method::POST, v11, &[], false, None),
        (Outgoing::Chunked, None, "chunked".into())
    );
    for method in [Method::GET, Method::HEAD, Method::CONNECT] {
        assert_eq!(
            framed(method, v11, &[], false, None),
            (Outgoing::None, None, String::new())
        );
    }
    // A Transfer-Encoding given is kept, chunked made last, the length dropped.
    assert_eq!(
        framed(
            Method::POST,
            v11,
            &[("transfer-encoding", "gzip"), ("content-length", "4")],
            false,
            None
        ),
        (Outgoing::Chunked, None, "gzip,chunked".into())
    );
    // Malformed lengths are never forwarded.
    assert_eq!(
        framed(
            Method::POST,
            v11,
            &[("content-length", "1, 2")],
            false,
            Some(5)
        ),
        (Outgoing::Length(5), Some("5".into()), String::new())
    );
    // HTTP/1.0 cannot chunk: length, exact size, or no body.
    assert_eq!(
        framed(
            Method::POST,
            v10,
            &[("transfer-encoding", "chunked")],
            false,
            None
        ),
        (Outgoing::None, None, String::new())
    );
    assert_eq!(
        framed(Method::POST, v10, &[], false, Some(2)),
        (Outgoing::Length(2), Some("2".into()), String::new())
    );
}

#[test]
fn what_the_pool_keeps_and_moves_is_send() {
    fn send<T: Send>() {}
    send::<Connection>();
    send::<super::client::Exchange>();
    send::<super::client::Reuse>();
    send::<super::client::SendError<Full<Bytes>>>();
}

/// A write half that counts the writes that went through.
struct Counting {
    inner: tokio::net::tcp::OwnedWriteHalf,
    writes: Arc<AtomicUsize>,
}

impl tokio::io::AsyncWrite for Counting {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if polled.is_ready() {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn a_head_and_a_small_body_go_out_in_one_write() {
    let up = Upstream::start().await;
    let stream = tokio::net::TcpStream::connect(up.addr)
        .await
        .expect("connect");
    let (read, inner) = stream.into_split();
    let writes = Arc::default();
    let write = Counting {
        inner,
        writes: Arc::clone(&writes),
    };
    let conn = Connection::new(Box::new(read), Box::new(write));
    let req = request(
        Method::POST,
        "/echo",
        Full::new(Bytes::from(vec![b'z'; 1000])),
    );
    let ex = send(conn, req).await;
    assert_eq!(read_to_end(ex.response).await.data.len(), 1000);
    assert_eq!(writes.load(Ordering::SeqCst), 1);
    // A chunked body whose frames are all ready: one write too (head, chunks, trailers).
    let conn = ex.reuse.reclaim().expect("reusable");
    let mut trailers = HeaderMap::new();
    trailers.insert("x-t", http::HeaderValue::from_static("1"));
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"a"))),
        Ok(Frame::data(Bytes::from_static(b"b"))),
        Ok(Frame::trailers(trailers)),
    ];
    let req = request(
        Method::POST,
        "/echo",
        StreamBody::new(futures::stream::iter(frames)),
    );
    let ex = send(conn, req).await;
    assert_eq!(ex.response.headers()["x-trailers"], "x-t=1;");
    assert_eq!(read_to_end(ex.response).await.text(), "ab");
    assert_eq!(writes.load(Ordering::SeqCst), 2);
}

/// The send future is part of every in-flight request's future: it holds the request once
/// (1128 bytes with an `Incoming` body when written; 1480 when the head was framed inside it).
#[tokio::test]
async fn the_send_future_stays_small() {
    let up = Upstream::start().await;
    let conn = connect(up.addr).await;
    let req = request(Method::POST, "/", super::incoming::Incoming::empty());
    let sending = conn.send(req, &super::client_test_support::SETTINGS);
    assert!(
        size_of_val(&sending) <= 1280,
        "{} bytes",
        size_of_val(&sending)
    );
}
