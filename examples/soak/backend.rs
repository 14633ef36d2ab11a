//! The soak's backend: one port for everything the load generator sends through stitch.
//!
//! - a connection whose first byte is `0x00` is an opaque echo (stitch relays such a
//!   connection untouched: no HTTP request starts with that byte);
//! - otherwise HTTP/1.1 or h2c (hyper-util's auto server, upgrades allowed):
//!   gRPC (`/bench.Echo/Unary`, `/bench.Echo/Stream`, raw echo), a WebSocket echo on any
//!   upgrade to `websocket`, `GET /bytes/N` (N zero bytes, streamed), `POST` (the body is
//!   drained and its length answered), anything else [`super::OK_BODY`].
//!
//! Every request it serves is counted by the `traceparent` stitch wrote: sampled, unsampled,
//! missing, or still the client's own span id ([`super::CLIENT_SPAN_ID`]: stitch did not
//! rewrite it). `GET /soak-stats`, asked directly, answers the counts.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tonic::body::Body;

/// Bytes per chunk of a `/bytes/N` download.
const CHUNK: usize = 64 * 1024;

/// How the requests that reached the backend were marked by stitch.
#[derive(Default)]
struct TraceCounts {
    sampled: AtomicU64,
    unsampled: AtomicU64,
    missing: AtomicU64,
    not_rewritten: AtomicU64,
}

impl TraceCounts {
    fn count(&self, headers: &HeaderMap) {
        let Some(value) = headers.get("traceparent").and_then(|v| v.to_str().ok()) else {
            self.missing.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let fields: Vec<&str> = value.trim().split('-').collect();
        let flags = fields.get(3).and_then(|f| u8::from_str_radix(f, 16).ok());
        let counter = match (fields.get(2), flags) {
            (Some(span), _) if *span == crate::CLIENT_SPAN_ID => &self.not_rewritten,
            (Some(_), Some(flags)) if flags & 1 == 1 => &self.sampled,
            (Some(_), Some(_)) => &self.unsampled,
            _ => &self.missing,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn json(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{{\"sampled\":{},\"unsampled\":{},\"missing\":{},\"not_rewritten\":{}}}\n",
            get(&self.sampled),
            get(&self.unsampled),
            get(&self.missing),
            get(&self.not_rewritten)
        )
    }
}

/// Serves until the process is stopped.
pub(crate) async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening {}", listener.local_addr()?);
    let counts = Arc::new(TraceCounts::default());
    let zeros = Bytes::from(vec![0u8; CHUNK]);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (counts, zeros) = (counts.clone(), zeros.clone());
        tokio::spawn(async move {
            let mut first = [0u8; 1];
            if matches!(stream.peek(&mut first).await, Ok(1)) && first[0] == 0 {
                return echo(stream).await;
            }
            let service = hyper::service::service_fn(move |req| {
                let (counts, zeros) = (counts.clone(), zeros.clone());
                async move { Ok::<_, Infallible>(handle(req, &counts, zeros).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Copies everything back until EOF, then closes.
async fn echo(mut stream: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = stream.shutdown().await;
}

async fn handle(req: Request<Incoming>, counts: &TraceCounts, zeros: Bytes) -> Response<Body> {
    if req.uri().path() == "/soak-stats" {
        return Response::new(Body::new(Full::new(Bytes::from(counts.json()))));
    }
    counts.count(req.headers());
    let headers = req.headers();
    if headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
    {
        return crate::grpc_echo::grpc_echo(req).await;
    }
    if headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
    {
        return websocket(req);
    }
    if let Some(len) = req.uri().path().strip_prefix("/bytes/") {
        return match len.parse::<u64>() {
            Ok(len) => download(len, zeros),
            Err(_) => status(StatusCode::BAD_REQUEST),
        };
    }
    if req.method() == Method::POST {
        let mut body = req.into_body();
        let mut received = 0u64;
        while let Some(Ok(frame)) = body.frame().await {
            received += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
        return Response::new(Body::new(Full::new(Bytes::from(received.to_string()))));
    }
    Response::new(Body::new(Full::new(Bytes::from_static(crate::OK_BODY))))
}

/// `len` zero bytes in shared chunks.
fn download(len: u64, zeros: Bytes) -> Response<Body> {
    let chunks = futures::stream::unfold(len, move |left| {
        let zeros = zeros.clone();
        async move {
            let n = usize::try_from(left.min(CHUNK as u64)).ok()?;
            (n > 0).then(|| {
                (
                    Ok::<_, Infallible>(Frame::data(zeros.slice(..n))),
                    left - n as u64,
                )
            })
        }
    });
    let mut resp = Response::new(Body::new(StreamBody::new(chunks)));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// Answers the upgrade and echoes WebSocket messages on the upgraded connection.
fn websocket(mut req: Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return status(StatusCode::BAD_REQUEST);
    };
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    return;
                }
            } else if msg.is_close() {
                let _ = ws.close(None).await;
                return;
            }
        }
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = status(StatusCode::SWITCHING_PROTOCOLS);
    let headers = resp.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert("sec-websocket-accept", accept);
    }
    resp
}

fn status(code: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = code;
    resp
}
