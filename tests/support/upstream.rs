//! A real HTTP upstream (hyper, h1 and h2c on one port) that records every request and
//! answers according to the request path:
//!
//! | path | answer |
//! | --- | --- |
//! | `/echo` | 200, the request body back |
//! | `/count` | 200, the number of request body bytes (streamed, never kept) |
//! | `/status/NNN` | status NNN, no body |
//! | `/gated` | 200 chunked: `first;`, then waits for [`HttpUpstream::open_gate`], then `second;third` |
//! | `/slow` | waits for the gate, then 200 `slow done` |
//! | `/barrier` | waits until [`BARRIER_SIZE`] `/barrier` requests are in flight, then 200 |
//! | `/trailers` | 200 body `with trailers` plus trailers `x-checksum: 42`, `x-trailer-two: b` |
//! | `/infinite` | 200, an endless body of 64 KiB blocks; [`HttpUpstream::produced`] counts what was handed to hyper |
//! | `/resp-hop` | 200 with hop-by-hop response fields that must not reach the client |
//! | anything else | 200 [`FIXED_BODY`] with a Content-Length |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{Barrier, Semaphore};

/// Body of every path without a script.
pub const FIXED_BODY: &str = "hello from upstream";
/// How many `/barrier` requests must be in flight together before any is answered.
pub const BARRIER_SIZE: usize = 100;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// One request as the upstream application saw it (after hyper's parsing).
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: Method,
    /// Request target as parsed by hyper (origin-form path and query for HTTP/1).
    pub target: String,
    /// Protocol version.
    pub version: Version,
    /// Header fields (names lower-cased by hyper).
    pub headers: HeaderMap,
    /// The whole request body (empty for `/count`).
    pub body: Bytes,
    /// Which accepted connection carried it (0-based).
    pub conn: usize,
}

struct State {
    requests: Mutex<Vec<Recorded>>,
    connections: AtomicUsize,
    closed: AtomicUsize,
    gate: Semaphore,
    barrier: Barrier,
    produced: std::sync::atomic::AtomicU64,
}

/// Handle to a running recording upstream.
#[derive(Clone)]
pub struct HttpUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl HttpUpstream {
    /// Starts the upstream on a loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        let state = Arc::new(State {
            requests: Mutex::default(),
            connections: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            gate: Semaphore::new(0),
            barrier: Barrier::new(BARRIER_SIZE),
            produced: std::sync::atomic::AtomicU64::new(0),
        });
        let accept_state = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = accept_state.connections.fetch_add(1, Ordering::SeqCst);
                let state = accept_state.clone();
                tokio::spawn(async move {
                    let svc_state = state.clone();
                    let svc =
                        hyper::service::service_fn(move |req| handle(svc_state.clone(), conn, req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                    state.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        HttpUpstream { addr, state }
    }

    /// Everything recorded so far.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("recorder lock").clone()
    }

    /// Waits until `n` requests were recorded and returns all of them.
    pub async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        super::eventually(&format!("{n} request(s) at the upstream"), async || {
            self.state.requests.lock().expect("recorder lock").len() >= n
        })
        .await;
        self.recorded()
    }

    /// How many TCP connections the upstream accepted.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Bytes of `/infinite` bodies accepted by hyper so far (they may sit in socket buffers).
    pub fn produced(&self) -> u64 {
        self.state.produced.load(Ordering::SeqCst)
    }

    /// How many accepted connections have ended (closed by either side).
    pub fn closed_connections(&self) -> usize {
        self.state.closed.load(Ordering::SeqCst)
    }

    /// Lets `n` waiting `/gated` or `/slow` requests continue.
    pub fn open_gate(&self, n: usize) {
        self.state.gate.add_permits(n);
    }
}

fn full(body: impl Into<Bytes>) -> RespBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body fed frame by frame from a channel, so a script can pause mid-stream.
fn channel_body() -> (tokio::sync::mpsc::Sender<Frame<Bytes>>, RespBody) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Frame<Bytes>>(4);
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|f| (Ok::<_, BoxError>(f), rx))
    });
    (tx, StreamBody::new(stream.boxed()).boxed_unsync())
}

async fn handle(
    state: Arc<State>,
    conn: usize,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.to_string(), |pq| pq.as_str().to_owned());
    let mut recorded = Recorded {
        method: parts.method.clone(),
        target,
        version: parts.version,
        headers: parts.headers.clone(),
        body: Bytes::new(),
        conn,
    };
    if path == "/count" {
        let mut body = body;
        let mut total: u64 = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => total += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => break,
            }
        }
        state.requests.lock().expect("recorder lock").push(recorded);
        return Ok(Response::new(full(total.to_string())));
    }
    recorded.body = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => Bytes::from_static(b"<body error>"),
    };
    let echo = recorded.body.clone();
    state.requests.lock().expect("recorder lock").push(recorded);

    let response = match path.as_str() {
        "/echo" => Response::new(full(echo)),
        "/gated" => {
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                let _ = tx.send(Frame::data(Bytes::from_static(b"first;"))).await;
                if let Ok(permit) = state.gate.acquire().await {
                    permit.forget();
                }
                let _ = tx.send(Frame::data(Bytes::from_static(b"second;"))).await;
                let _ = tx.send(Frame::data(Bytes::from_static(b"third"))).await;
            });
            Response::new(body)
        }
        "/slow" => {
            if let Ok(permit) = state.gate.acquire().await {
                permit.forget();
            }
            Response::new(full("slow done"))
        }
        "/barrier" => {
            state.barrier.wait().await;
            Response::new(full("all arrived"))
        }
        "/trailers" => {
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                let _ = tx
                    .send(Frame::data(Bytes::from_static(b"with trailers")))
                    .await;
                let mut trailers = HeaderMap::new();
                trailers.insert("x-checksum", http::HeaderValue::from_static("42"));
                trailers.insert("x-trailer-two", http::HeaderValue::from_static("b"));
                let _ = tx.send(Frame::trailers(trailers)).await;
            });
            Response::new(body)
        }
        "/infinite" => {
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                let block = Bytes::from(vec![b'x'; 64 * 1024]);
                while tx.send(Frame::data(block.clone())).await.is_ok() {
                    state
                        .produced
                        .fetch_add(block.len() as u64, Ordering::SeqCst);
                }
            });
            Response::new(body)
        }
        "/resp-hop" => Response::builder()
            .header("connection", "x-resp-hop")
            .header("x-resp-hop", "must not reach the client")
            .header("keep-alive", "timeout=5")
            .header("x-resp-keep", "yes")
            .body(full(FIXED_BODY))
            .expect("valid response"),
        p if p.starts_with("/status/") => {
            let code = p["/status/".len()..].parse::<u16>().ok();
            let status = code
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::BAD_REQUEST);
            Response::builder()
                .status(status)
                .body(full(Bytes::new()))
                .expect("valid response")
        }
        _ => Response::new(full(FIXED_BODY)),
    };
    Ok(response)
}
