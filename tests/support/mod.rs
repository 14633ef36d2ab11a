//! Shared helpers for the data-path integration tests: stitch started in-process (or as the
//! real binary) on port 0, real upstream servers (hyper h1/h2c, tonic gRPC, raw TCP,
//! WebSocket) that record what reached them, and a raw-socket HTTP/1 client for byte-exact
//! checks.
//!
//! Every wait is bounded by [`DEADLINE`] so a broken proxy fails a test instead of hanging it.

// Each test binary uses a different subset of these helpers, and items are `pub` so the
// submodules can share them; neither is a sign of dead code in the suite as a whole.
#![allow(dead_code, unreachable_pub)]

pub mod grpc;
pub mod process;
pub mod tcp;
pub mod telemetry;
pub mod trace;
pub mod upstream;
pub mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use stitch::app::{Settings, StartError, Stitch};
use stitch::shutdown::ShutdownHandle;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Upper bound for any single wait in a test; generous because CI machines are shared.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Awaits `fut`, failing the test with `what` if it takes longer than [`DEADLINE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {DEADLINE:?} waiting for: {what}"),
    }
}

/// Polls `cond` until it holds, failing the test with `what` after [`DEADLINE`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// A loopback address nothing listens on (bound once, then released).
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = l.local_addr().expect("bound listener has an address");
    drop(l);
    addr
}

/// Test settings: every listener on loopback port 0, explicit inbound mode to `target`.
pub fn settings(target: Option<SocketAddr>) -> Settings {
    Settings {
        inbound_listen: "127.0.0.1:0".parse().expect("literal address"),
        outbound_listen: vec!["127.0.0.1:0".parse().expect("literal address")],
        admin_listen: "127.0.0.1:0".parse().expect("literal address"),
        inbound_target: target.map(|a| a.to_string()),
        ..Default::default()
    }
}

/// A running in-process stitch.
pub struct StitchUnderTest {
    /// Where the inbound listener is bound.
    pub inbound: SocketAddr,
    /// Where the (first) outbound listener is bound.
    pub outbound: SocketAddr,
    /// Where the admin server is bound.
    pub admin: SocketAddr,
    /// Triggers graceful shutdown.
    pub shutdown: ShutdownHandle,
    /// The `Stitch::run` task.
    pub task: JoinHandle<Result<(), StartError>>,
}

impl Drop for StitchUnderTest {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// Starts stitch in-process with `settings`.
pub async fn start_stitch(settings: Settings) -> StitchUnderTest {
    let stitch = Stitch::bind(settings).await.expect("stitch binds");
    StitchUnderTest {
        inbound: stitch.inbound_addr(),
        outbound: stitch.outbound_addrs()[0],
        admin: stitch.admin_addr(),
        shutdown: stitch.shutdown_handle(),
        task: tokio::spawn(stitch.run()),
    }
}

/// Starts stitch in-process, inbound forwarding to `target`, all other settings default.
pub async fn start_stitch_to(target: SocketAddr) -> StitchUnderTest {
    start_stitch(settings(Some(target))).await
}

/// Connects to `addr` within the deadline.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    within("TCP connect", TcpStream::connect(addr))
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

/// An HTTP/1.1 client connection (hyper) to `addr`; the connection task is spawned.
pub async fn h1_client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let io = TokioIo::new(connect(addr).await);
    let (send, conn) = within("h1 handshake", hyper::client::conn::http1::handshake(io))
        .await
        .expect("h1 handshake");
    tokio::spawn(conn.with_upgrades());
    send
}

/// An HTTP/2 prior-knowledge client connection (hyper) to `addr`, plus the connection task
/// (it finishes when the connection closes, e.g. after a GOAWAY).
pub async fn h2_client(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    JoinHandle<Result<(), hyper::Error>>,
) {
    let io = TokioIo::new(connect(addr).await);
    let (send, conn) = within(
        "h2 handshake",
        hyper::client::conn::http2::handshake(TokioExecutor::new(), io),
    )
    .await
    .expect("h2 handshake");
    (send, tokio::spawn(conn))
}

/// Collects a response body (data and trailers) within the deadline.
pub async fn collect_body(body: hyper::body::Incoming) -> (Bytes, Option<http::HeaderMap>) {
    use http_body_util::BodyExt;
    let collected = within("response body", body.collect())
        .await
        .expect("response body streams without error");
    let trailers = collected.trailers().cloned();
    (collected.to_bytes(), trailers)
}

/// An HTTP/1 GET request for `path` with a `Host` header and an empty body.
pub fn get(host: SocketAddr, path: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(path)
        .header(http::header::HOST, host.to_string())
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

/// An HTTP/2 GET request (absolute URI, so `:authority` names `authority`).
pub fn h2_get(authority: SocketAddr, path: &str) -> http::Request<Full<Bytes>> {
    http::Request::get(format!("http://{authority}{path}"))
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}
