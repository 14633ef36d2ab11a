//! What the server tests share: a wire-level client that reads responses as RFC 9112 frames
//! them, an echo service, a body of unknown length, and a driver on a real socket.

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
use super::head::HeadLimits;
use super::incoming::Incoming;
use super::server::{ServerSettings, serve};
use crate::proxy::http::server::ServerLimits;
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
    (
        Client::new(client),
        spawn_serve(server, service, settings, shutdown, lease),
    )
}

/// Spawns the driver on the server end `io`, its first head due `header_read_timeout` from now
/// (as from accept). A connection handed back to be parked (only with
/// [`ServerSettings::park_after`] set) is dropped, i.e. closed.
pub(super) fn spawn_serve<I, S, B>(
    io: I,
    service: S,
    settings: ServerSettings,
    shutdown: ShutdownHandle,
    lease: Option<Arc<ConnectionLease>>,
) -> JoinHandle<Result<(), Error>>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    tokio::spawn(async move {
        let deadline = Instant::now() + settings.header_read_timeout;
        serve(
            io,
            Bytes::new(),
            service,
            &settings,
            &shutdown,
            lease.as_ref(),
            deadline,
        )
        .await
        .map(drop)
    })
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
