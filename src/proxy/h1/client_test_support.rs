//! What the client driver's tests share: a real hyper 1 server as the upstream (accepts
//! counted), a raw one-connection upstream that writes exact bytes, request bodies fed from a
//! channel, and reading a response to its end.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::client::{ClientSettings, Connection, Exchange, SendError};
use super::error::BoxError;
use super::head::HeadLimits;
use super::incoming::Incoming;
use super::server_test_support::GUARD;
use super::server_test_support::Pieces;

/// Response head bounds small enough for the limit tests to reach.
pub(super) const SETTINGS: ClientSettings = ClientSettings {
    limits: HeadLimits {
        max_head_bytes: 8192,
        max_headers: 32,
    },
};

/// A connection to `addr`, split as the pool splits one.
pub(super) async fn connect(addr: SocketAddr) -> Connection {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (read, write) = stream.into_split();
    Connection::new(Box::new(read), Box::new(write))
}

/// A hyper 1 HTTP/1 server on loopback serving [`route`], and how many connections it
/// accepted.
pub(super) struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Connections accepted so far (reuse tests count them).
    pub accepts: Arc<AtomicUsize>,
}

impl Upstream {
    /// Listens on an ephemeral loopback port and serves every connection with [`route`].
    pub(super) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepts = Arc::new(AtomicUsize::new(0));
        let counted = accepts.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .preserve_header_case(true)
                        .serve_connection(TokioIo::new(stream), hyper::service::service_fn(route))
                        .await;
                });
            }
        });
        Upstream { addr, accepts }
    }

    /// How many connections it accepted.
    pub(super) fn accepted(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

/// A response body of the hyper upstream.
type UpBody = BoxBody<Bytes, Infallible>;

/// The hyper upstream's routes: `/status/N` answers N with no body; `/trailers` a chunked body
/// with a trailer; `/big/N` N bytes in 64 KiB frames of unknown total (chunked); `/count` the
/// number of request body bytes (not buffered); anything else echoes the request body, with
/// `x-cl`, `x-te` and `x-trailers` telling how it was framed.
async fn route(req: Request<hyper::body::Incoming>) -> Result<Response<UpBody>, Infallible> {
    let path = req.uri().path().to_owned();
    if let Some(code) = path.strip_prefix("/status/") {
        let mut r = Response::new(Full::new(Bytes::new()).boxed());
        *r.status_mut() = StatusCode::from_u16(code.parse().unwrap_or(500)).expect("status");
        return Ok(r);
    }
    if path == "/trailers" {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "42".parse().expect("value"));
        let frames = vec![
            Ok(Frame::data(Bytes::from_static(b"hello "))),
            Ok(Frame::data(Bytes::from_static(b"world"))),
            Ok(Frame::trailers(trailers)),
        ];
        // hyper writes only the trailer fields its `Trailer` field announces.
        return Ok(Response::builder()
            .header("trailer", "x-checksum")
            .body(StreamBody::new(futures::stream::iter(frames)).boxed())
            .expect("response"));
    }
    if let Some(n) = path.strip_prefix("/big/") {
        return Ok(Response::new(big(n.parse().unwrap_or(0)).boxed()));
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map_or("-".to_owned(), |v| v.to_str().unwrap_or("?").to_owned())
    };
    let (cl, te) = (header("content-length"), header("transfer-encoding"));
    let count = path == "/count";
    let mut body = req.into_body();
    let (mut data, mut total, mut trailers) = (Vec::new(), 0usize, String::new());
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            break;
        };
        match frame.into_data() {
            Ok(d) => {
                total += d.len();
                if !count {
                    data.extend_from_slice(&d);
                }
            }
            Err(frame) => {
                for (n, v) in frame.into_trailers().unwrap_or_default().iter() {
                    trailers.push_str(&format!("{n}={};", v.to_str().unwrap_or("?")));
                }
            }
        }
    }
    if count {
        data = total.to_string().into_bytes();
    }
    Ok(Response::builder()
        .header("x-cl", cl)
        .header("x-te", te)
        .header("x-trailers", trailers)
        .body(Full::new(Bytes::from(data)).boxed())
        .expect("response"))
}

/// `n` bytes of `x` in 64 KiB frames (one shared buffer), total unknown: sent chunked.
fn big(n: usize) -> Pieces {
    const FRAME: usize = 64 * 1024;
    let frame = Bytes::from(vec![b'x'; FRAME]);
    let mut frames: VecDeque<Bytes> = std::iter::repeat_n(frame.clone(), n / FRAME).collect();
    let rest = n % FRAME;
    if rest > 0 {
        frames.push_back(frame.slice(..rest));
    }
    Pieces(frames)
}

/// A request to `path` on the test upstream (`host` set, as the caller of the driver does).
pub(super) fn request<B>(method: Method, path: &str, body: B) -> Request<B> {
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = path.parse().expect("path");
    req.headers_mut()
        .insert("host", HeaderValue::from_static("upstream"));
    req
}

/// A `GET` without a body.
pub(super) fn get(path: &str) -> Request<Empty<Bytes>> {
    request(Method::GET, path, Empty::new())
}

/// Sends `req` on `conn`, within [`GUARD`].
pub(super) async fn try_send<B>(conn: Connection, req: Request<B>) -> Result<Exchange, SendError<B>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    tokio::time::timeout(GUARD, conn.send(req, &SETTINGS))
        .await
        .expect("the exchange ends")
}

/// [`try_send`], which must succeed.
pub(super) async fn send<B>(conn: Connection, req: Request<B>) -> Exchange
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    try_send(conn, req).await.expect("an exchange")
}

/// A request body's test error (the caller must find it as the failure's source).
#[derive(Debug, thiserror::Error)]
#[error("the client's body broke")]
pub(super) struct BodyBroke;

/// A request body fed frame by frame from a channel; unknown length, so sent chunked.
pub(super) struct Channel(pub mpsc::Receiver<Result<Frame<Bytes>, BodyBroke>>);

/// Feeds a [`Channel`].
pub(super) type Feed = mpsc::Sender<Result<Frame<Bytes>, BodyBroke>>;

impl Channel {
    /// A channel body and its feed (room for four frames).
    pub(super) fn new() -> (Feed, Self) {
        let (tx, rx) = mpsc::channel(4);
        (tx, Channel(rx))
    }

    /// A channel whose first frame, `first`, is ready at once.
    pub(super) fn starting_with(first: &'static [u8]) -> (Feed, Self) {
        let (tx, body) = Self::new();
        tx.try_send(Ok(Frame::data(Bytes::from_static(first))))
            .expect("room for one frame");
        (tx, body)
    }
}

impl Body for Channel {
    type Data = Bytes;
    type Error = BodyBroke;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyBroke>>> {
        self.0.poll_recv(cx)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A response read to its end: data, trailers, and the number of data frames.
pub(super) struct Read {
    /// The data frames, joined.
    pub data: Vec<u8>,
    /// The trailers frame, if any.
    pub trailers: Option<HeaderMap>,
    /// How many data frames (a streamed body comes in many).
    pub frames: usize,
    /// The largest data frame (a streamed body is never one big buffer).
    pub largest_frame: usize,
}

impl Read {
    /// The data as text (lossy).
    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// Reads the response's body to its end (and drops it), within [`GUARD`].
pub(super) async fn read_to_end(response: Response<Incoming>) -> Read {
    let mut body = response.into_body();
    let mut read = Read {
        data: Vec::new(),
        trailers: None,
        frames: 0,
        largest_frame: 0,
    };
    tokio::time::timeout(GUARD, async {
        while let Some(frame) = body.frame().await {
            match frame.expect("response body").into_data() {
                Ok(d) => {
                    read.frames += 1;
                    read.largest_frame = read.largest_frame.max(d.len());
                    read.data.extend_from_slice(&d);
                }
                Err(frame) => read.trailers = frame.into_trailers().ok(),
            }
        }
    })
    .await
    .expect("the body ends");
    read
}

/// A one-connection upstream that reads the request head and hands it (with the stream) to
/// `script`, which answers with exact bytes.
pub(super) async fn raw_upstream<F, Fut>(script: F) -> SocketAddr
where
    F: FnOnce(TcpStream, String) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let head = read_head(&mut stream).await;
        script(stream, head).await;
    });
    addr
}

/// Reads a request head byte by byte (nothing past it), lossily as text.
pub(super) async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read_u8().await {
            Ok(b) => head.push(b),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Writes `bytes` and keeps the connection open until the peer closes it.
pub(super) async fn answer_and_hold(mut stream: TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.expect("answer");
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink).await;
}
