//! Tests of [`super::server`] over real sockets: exchanges, bodies, framing of responses,
//! refusals. The shared helpers (a wire-level client, an echo service) are used by
//! `server_edge_tests` too.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::chunked::{ChunkedDecoder, Decoded};
use super::error::{BoxError, Error};
use super::head::{HeadLimits, HeaderCase};
use super::incoming::Incoming;
use super::server::{ServerSettings, serve};
use crate::proxy::http::server::ServerLimits;
use crate::proxy::http::validate::Rejection;
use crate::proxy::lease::ConnectionLease;
use crate::shutdown::ShutdownHandle;

/// Generous real-time bound on a step that should take milliseconds: a hang guard only.
pub(super) const GUARD: Duration = Duration::from_secs(10);

pub(super) fn settings() -> ServerSettings {
    ServerSettings::new(&ServerLimits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(3600),
        max_header_bytes: 8192,
        max_headers: 16,
        h2_max_concurrent_streams: 100,
        h2_idle_timeout: Duration::from_secs(60),
    })
}

/// The echo service's answer: `METHOD target body`, the number of data frames the body came
/// in (`x-frames`), its trailers (`x-trailers`); `400 body-error` when the body failed.
pub(super) async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, mut body) = req.into_parts();
    let (mut frames, mut data, mut trailers) = (0, Vec::new(), String::new());
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(d) => {
                    frames += 1;
                    data.extend_from_slice(&d);
                }
                Err(frame) => {
                    for (n, v) in frame.into_trailers().unwrap_or_default().iter() {
                        trailers.push_str(&format!("{n}={};", v.to_str().unwrap_or("?")));
                    }
                }
            },
            Err(e) => {
                let mut r = Response::new(Full::new(Bytes::from(format!("body-error {e}"))));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                return Ok(r);
            }
        }
    }
    let text = format!(
        "{} {} {}",
        parts.method,
        parts.uri,
        String::from_utf8_lossy(&data)
    );
    Ok(Response::builder()
        .header("x-frames", frames)
        .header("x-trailers", trailers)
        .body(Full::new(Bytes::from(text)))
        .expect("response"))
}

/// A body of unknown length (no size hint): sent chunked or close-delimited.
pub(super) struct Pieces(pub VecDeque<Bytes>);

impl Body for Pieces {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// Serves one accepted TCP connection with `service`; the client end and the driver's task.
pub(super) async fn serve_tcp<S, B>(
    service: S,
    settings: ServerSettings,
    shutdown: ShutdownHandle,
    lease: Option<Arc<ConnectionLease>>,
) -> (Client<TcpStream>, JoinHandle<Result<(), Error>>)
where
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = TcpStream::connect(addr).await.expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    let task = tokio::spawn(async move {
        let deadline = Instant::now() + settings.header_read_timeout;
        serve(
            server,
            Bytes::new(),
            service,
            &settings,
            &shutdown,
            lease.as_ref(),
            deadline,
        )
        .await
    });
    (Client::new(client), task)
}

/// A response as read off the wire.
#[derive(Debug)]
pub(super) struct Reply {
    pub status: u16,
    /// The head as received (status line and fields, CRLFs included).
    pub head: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub(super) fn header(&self, name: &str) -> Option<String> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A wire-level HTTP/1 client: writes bytes, reads responses framed as RFC 9112 says.
pub(super) struct Client<S> {
    pub io: S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub(super) fn new(io: S) -> Self {
        Client {
            io,
            buf: BytesMut::new(),
        }
    }

    pub(super) async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("send");
    }

    async fn more(&mut self) -> usize {
        tokio::time::timeout(GUARD, self.io.read_buf(&mut self.buf))
            .await
            .expect("the server answers")
            .unwrap_or(0)
    }

    /// Reads one response (`head_request`: the request was HEAD, or a CONNECT answered 2xx, so
    /// there is no body).
    pub(super) async fn response(&mut self, head_request: bool) -> Reply {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.more().await > 0,
                "closed inside a head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8_lossy(&self.buf.split_to(end)).into_owned();
        let status: u16 = head[9..12].parse().expect("status");
        let mut reply = Reply {
            status,
            head,
            body: Vec::new(),
        };
        let te = reply.header("transfer-encoding");
        if head_request || status < 200 || status == 204 || status == 304 {
            return reply;
        }
        if let Some(n) = reply.header("content-length") {
            let n: usize = n.parse().expect("length");
            while self.buf.len() < n {
                assert!(self.more().await > 0, "closed inside a body");
            }
            reply.body = self.buf.split_to(n).to_vec();
        } else if te.is_some() {
            let mut decoder = ChunkedDecoder::new(HeadLimits {
                max_head_bytes: 8192,
                max_headers: 16,
            });
            loop {
                match decoder.decode(&mut self.buf).expect("chunked") {
                    Decoded::Data(d) => reply.body.extend_from_slice(&d),
                    Decoded::Trailers(_) => {}
                    Decoded::End => break,
                    Decoded::NeedMore => assert!(self.more().await > 0, "closed in chunks"),
                }
            }
        } else {
            while self.more().await > 0 {}
            reply.body = self.buf.split().to_vec();
        }
        reply
    }

    /// The next `n` bytes (after a hand-over: whatever followed the head comes first).
    pub(super) async fn read_n(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.more().await > 0, "closed early");
        }
        self.buf.split_to(n).to_vec()
    }

    /// Whether the server closed the connection (after anything still unread).
    pub(super) async fn closed(&mut self) -> bool {
        self.more().await == 0
    }
}

async fn echo_tcp() -> (Client<TcpStream>, JoinHandle<Result<(), Error>>) {
    serve_tcp(
        tower::service_fn(echo),
        settings(),
        ShutdownHandle::default(),
        None,
    )
    .await
}

#[tokio::test]
async fn keep_alive_serves_two_requests_on_one_connection() {
    let (mut c, task) = echo_tcp().await;
    c.send(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "GET /one "));
    assert_eq!(r.header("content-length").as_deref(), Some("9"));
    assert!(r.header("date").is_none() && r.header("connection").is_none());
    c.send(b"POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.text(), "POST /two hello");
    drop(c);
    task.await.expect("task").expect("a clean end");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (mut c, _task) = echo_tcp().await;
    c.send(
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: a\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(c.response(false).await.text(), "POST /a abc");
    assert_eq!(c.response(false).await.text(), "GET /b ");
    let last = c.response(false).await;
    assert_eq!(last.text(), "GET /c ");
    assert!(c.closed().await, "Connection: close ends it");
}

#[tokio::test]
async fn a_chunked_body_streams_to_the_service_in_pieces_with_its_trailers() {
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Bytes>();
    let first_tx = std::sync::Mutex::new(Some(first_tx));
    let service = tower::service_fn(move |req: Request<Incoming>| {
        let first_tx = first_tx.lock().expect("lock").take();
        async move {
            let mut body = req.into_body();
            let first = body.frame().await.expect("a frame").expect("ok");
            let _ = first_tx
                .expect("once")
                .send(first.into_data().expect("data"));
            let rest = body.collect().await.expect("rest");
            let trailers = rest.trailers().cloned().unwrap_or_default();
            let text = format!(
                "{} t={:?}",
                String::from_utf8_lossy(&rest.to_bytes()),
                trailers.get("x-sum")
            );
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
        }
    });
    let (mut c, _task) = serve_tcp(service, settings(), ShutdownHandle::default(), None).await;
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n")
        .await;
    let first = tokio::time::timeout(GUARD, first_rx)
        .await
        .expect("first piece");
    assert_eq!(
        &first.expect("sent")[..],
        b"hello",
        "before the rest was sent"
    );
    c.send(b"6\r\n world\r\n0\r\nX-Sum: 7\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!(r.text(), " world t=Some(\"7\")");
}

#[tokio::test]
async fn a_content_length_body_and_a_malformed_chunked_body() {
    let (mut c, _task) = echo_tcp().await;
    c.send(b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world")
        .await;
    assert_eq!(c.response(false).await.text(), "PUT /x hello world");
    c.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\n",
    )
    .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("chunk"), "{}", r.text());
    assert!(c.closed().await, "a broken body ends the connection");
}

#[tokio::test]
async fn expect_100_continue_is_answered_when_the_body_is_first_read() {
    let (mut c, _task) = echo_tcp().await;
    c.send(b"POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let interim = c.response(false).await;
    assert_eq!(interim.status, 100);
    c.send(b"ok").await;
    assert_eq!(c.response(false).await.text(), "POST /e ok");
    // A service that answers without reading the body sends no 100, and the connection
    // closes (the body's bytes were never read).
    let service = tower::service_fn(|_req: Request<Incoming>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"no"))))
    });
    let (mut c, _task) = serve_tcp(service, settings(), ShutdownHandle::default(), None).await;
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!((r.status, r.text().as_str()), (200, "no"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn head_204_and_304_have_no_body_and_the_connection_stays_usable() {
    let service = tower::service_fn(|req: Request<Incoming>| async move {
        let status = match req.uri().path() {
            "/204" => 204,
            "/304" => 304,
            _ => 200,
        };
        let mut r = Response::new(Full::new(Bytes::from_static(b"twelve bytes")));
        *r.status_mut() = StatusCode::from_u16(status).expect("status");
        Ok::<_, Infallible>(r)
    });
    let (mut c, _task) = serve_tcp(service, settings(), ShutdownHandle::default(), None).await;
    c.send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let r = c.response(true).await;
    assert_eq!(r.status, 200);
    c.send(b"GET /204 HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(c.response(false).await.status, 204);
    c.send(b"GET /304 HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(c.response(false).await.status, 304);
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!(
        r.text(),
        "twelve bytes",
        "no stray body bytes came before it"
    );
}

fn unsized_body_service() -> impl tower::Service<
    Request<Incoming>,
    Response = Response<Pieces>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Pieces>, Infallible>> + Send,
> + Send
+ 'static {
    tower::service_fn(|_req: Request<Incoming>| async {
        let pieces = [&b"streamed "[..], b"in ", b"pieces"].map(Bytes::from_static);
        Ok::<_, Infallible>(Response::new(Pieces(pieces.into())))
    })
}

#[tokio::test]
async fn an_unsized_body_is_chunked_to_1_1_and_close_delimited_to_1_0() {
    let (mut c, _task) = serve_tcp(
        unsized_body_service(),
        settings(),
        ShutdownHandle::default(),
        None,
    )
    .await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let r = c.response(false).await;
    assert_eq!(r.header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(r.text(), "streamed in pieces");

    let (mut c, _task) = serve_tcp(
        unsized_body_service(),
        settings(),
        ShutdownHandle::default(),
        None,
    )
    .await;
    c.send(b"GET / HTTP/1.0\r\n\r\n").await;
    let r = c.response(false).await;
    assert!(r.header("transfer-encoding").is_none() && r.header("content-length").is_none());
    assert_eq!(r.text(), "streamed in pieces", "read to the close");
}

#[tokio::test]
async fn http_1_0_closes_unless_keep_alive_and_connection_close_closes() {
    let (mut c, _task) = echo_tcp().await;
    c.send(b"GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.header("connection").as_deref(), Some("keep-alive"));
    c.send(b"GET /c HTTP/1.0\r\n\r\n").await;
    assert_eq!(c.response(false).await.text(), "GET /c ");
    assert!(
        c.closed().await,
        "1.0 without keep-alive ends after the response"
    );
}

/// Sends `request` on a fresh connection; the response, what followed it, and the result.
async fn refused(request: &[u8], settings: ServerSettings) -> (Reply, bool, Result<(), Error>) {
    let (mut c, task) = serve_tcp(
        tower::service_fn(echo),
        settings,
        ShutdownHandle::default(),
        None,
    )
    .await;
    c.send(request).await;
    let r = c.response(false).await;
    let closed = c.closed().await;
    let result = tokio::time::timeout(GUARD, task).await.expect("ends");
    (r, closed, result.expect("task"))
}

#[tokio::test]
async fn refused_heads_get_400_431_or_414_then_the_connection_closes() {
    let many: String = (0..17).map(|i| format!("x-{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nx: {}\r\n\r\n",
        "v".repeat(9000)
    );
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n".to_vec(), 400),
        (b"GET / HTTP/1.1\r\nbad name: v\r\n\r\n".to_vec(), 400),
        (
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
            400,
        ),
        (many.into_bytes(), 431),
        (big.into_bytes(), 431),
    ];
    for (request, want) in cases {
        let (r, closed, result) = refused(&request, settings()).await;
        let shown = String::from_utf8_lossy(&request[..request.len().min(40)]).into_owned();
        assert_eq!(r.status, want, "{shown}");
        assert_eq!(r.header("content-length").as_deref(), Some("0"), "{shown}");
        assert!(closed, "{shown}: closed after the refusal");
        let e = result.expect_err("reported");
        assert_eq!(e.refused_with().map(|s| s.as_u16()), Some(want), "{shown}");
    }
    let mut roomy = settings();
    roomy.limits.max_head_bytes = 200 * 1024;
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(70 * 1024));
    let (r, closed, _) = refused(long.as_bytes(), roomy).await;
    assert_eq!((r.status, closed), (414, true));
}

#[tokio::test]
async fn ambiguous_framing_is_refused_and_reported_for_the_metric() {
    let (r, closed, result) = refused(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        settings(),
    )
    .await;
    assert_eq!((r.status, closed), (400, true));
    let e = result.expect_err("reported");
    assert_eq!(e.rejection(), Some(Rejection::AmbiguousFraming));
}

#[tokio::test]
async fn bare_lf_heads_are_read_and_field_case_order_and_reason_are_kept() {
    let service = tower::service_fn(|req: Request<Incoming>| async move {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_FOUND;
        *r.headers_mut() = req.headers().clone();
        r.headers_mut().remove("host");
        if let Some(case) = req.extensions().get::<HeaderCase>() {
            r.extensions_mut().insert(case.clone());
        }
        r.extensions_mut()
            .insert(super::ext::ReasonPhrase(Bytes::from_static(
                b"Gone Fishing \xe9",
            )));
        Ok::<_, Infallible>(r)
    });
    let (mut c, _task) = serve_tcp(service, settings(), ShutdownHandle::default(), None).await;
    c.send(b"GET / HTTP/1.1\nHost: a\nX-Rep: 1\nX-EMPTY:\nx-rep: 2\n\n")
        .await;
    let r = c.response(false).await;
    assert!(
        r.head.starts_with("HTTP/1.1 404 Gone Fishing \u{fffd}\r\n"),
        "{:?}",
        r.head
    );
    // Per name, the values in received order, each with its own spelling (the map's order of
    // names is its own: `remove` swaps entries).
    assert!(r.head.contains("X-Rep: 1\r\nx-rep: 2\r\n"), "{:?}", r.head);
    assert!(r.head.contains("\r\nX-EMPTY: \r\n"), "{:?}", r.head);
}
