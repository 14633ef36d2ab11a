//! What the integration tests share: stitch started in-process on loopback port 0
//! ([`Loopback`]) or as the real binary ([`process`]), real upstream servers (hyper h1/h2c,
//! tonic gRPC, raw TCP, WebSocket) that record what reached them, a raw-socket HTTP/1 client
//! for byte-exact checks, real OTLP collectors ([`telemetry`]), the trace tests' apps
//! ([`trace`]) and one strict metrics parser ([`metrics`]).
//!
//! Every wait is bounded by [`DEADLINE`] so a broken proxy fails a test instead of hanging it.

pub mod grpc;
pub mod k8s;
pub mod metrics;
pub mod process;
pub mod tcp;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod wire;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use stitch::app::{Settings, StartError, Stitch};
use stitch::shutdown::ShutdownHandle;
use stitch::telemetry::TelemetryConfig;
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

/// Polls `check` until it holds, failing the test with `what` after [`DEADLINE`].
pub async fn eventually(what: &str, check: impl AsyncFnMut() -> bool) {
    assert!(
        holds_within(DEADLINE, check).await,
        "timed out after {DEADLINE:?} waiting for: {what}"
    );
}

/// Polls `check` every 20 ms until it holds (`true`) or `deadline` passes (`false`): for the
/// tests whose bound is itself the property under test, or longer than [`DEADLINE`].
#[must_use]
pub async fn holds_within(deadline: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port-0 listener on loopback, and its address.
pub async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = l.local_addr().expect("bound listener has an address");
    (l, addr)
}

/// Serves `respond` on `listener` (HTTP/1 and h2c, as a real app can) for the rest of the
/// test, one task per connection.
pub fn serve_http<F, Fut, B>(listener: TcpListener, respond: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let respond = respond.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let answer = respond(req);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

/// A loopback address nothing listens on (bound once, then released).
pub async fn closed_port() -> SocketAddr {
    listener().await.1
}

/// Sends SIGHUP to this test process, as an operator would to reload the rules. Call it only
/// after a SIGHUP handler is installed (`reload_on_sighup`, `watch` in a runtime): without one
/// the signal ends the process.
pub fn send_sighup() {
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::HUP)
        .expect("SIGHUP delivered");
}

/// A stitch with every listener on 127.0.0.1 port 0 and the default settings, built up from
/// there: the one loopback configuration every in-process test starts from.
#[derive(Debug)]
pub struct Loopback {
    settings: Settings,
}

impl Loopback {
    /// No inbound target: the inbound listener has nowhere to send connections.
    pub fn new() -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Loopback {
            settings: Settings {
                inbound_listen: loopback,
                outbound_listen: vec![loopback],
                admin_listen: loopback,
                ..Settings::default()
            },
        }
    }

    /// Explicit inbound mode: every inbound connection goes to `target`.
    pub fn to(target: SocketAddr) -> Self {
        let mut this = Loopback::new();
        this.settings.inbound_target = Some(target.to_string());
        this
    }

    /// The rules file (watched and hot-reloaded), or the built-in rules.
    pub fn rules(mut self, path: Option<PathBuf>) -> Self {
        self.settings.config = path;
        self
    }

    /// The span pipeline; its `service_name` names the spans.
    pub fn telemetry(mut self, telemetry: TelemetryConfig) -> Self {
        self.settings.telemetry = telemetry;
        self
    }

    /// `--service-name`: wins over the telemetry config's.
    pub fn service(mut self, name: &str) -> Self {
        self.settings.service_name = Some(name.to_owned());
        self
    }

    /// Any other setting.
    pub fn with(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        change(&mut self.settings);
        self
    }

    /// Binds every listener; nothing is served until [`StitchUnderTest::serve`].
    pub async fn bind(self) -> Stitch {
        Stitch::bind(self.settings).await.expect("stitch binds")
    }

    /// Binds and serves; returns once `/ready` answers 200.
    pub async fn start(self) -> StitchUnderTest {
        StitchUnderTest::serve(self.bind().await).await
    }

    /// Binds and starts serving, without waiting for `/ready` (tests of what waits for it).
    pub async fn launch(self) -> StitchUnderTest {
        StitchUnderTest::spawn(self.bind().await)
    }
}

/// A running in-process stitch; dropping it triggers shutdown.
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

impl StitchUnderTest {
    fn spawn(stitch: Stitch) -> Self {
        StitchUnderTest {
            inbound: stitch.inbound_addr(),
            outbound: stitch.outbound_addrs()[0],
            admin: stitch.admin_addr(),
            shutdown: stitch.shutdown_handle(),
            task: tokio::spawn(stitch.run()),
        }
    }

    /// Waits for `Stitch::run` to return `Ok` (after a shutdown), within the deadline.
    pub async fn run_returns(&mut self, what: &str) {
        within(what, &mut self.task)
            .await
            .expect("the run task did not panic")
            .expect("run() returns Ok");
    }

    /// Runs a bound stitch; returns once `/ready` answers 200 (listeners serving, rules
    /// watcher installed).
    pub async fn serve(stitch: Stitch) -> Self {
        let running = StitchUnderTest::spawn(stitch);
        let admin = running.admin;
        eventually("stitch to be ready", async || {
            http_request(admin, "GET", "/ready", &[], Vec::new())
                .await
                .0
                == StatusCode::OK
        })
        .await;
        running
    }
}

/// One HTTP/1.1 request on a fresh connection to `addr` (the admin server, a collector, an
/// app); returns status, headers and the whole body.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut sender = h1_client(addr).await;
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).expect("request");
    let resp = within("the response head", sender.send_request(req))
        .await
        .expect("response");
    let (parts, body) = resp.into_parts();
    let body = within("the response body", body.collect())
        .await
        .expect("body")
        .to_bytes();
    (parts.status, parts.headers, body)
}

/// `GET path` on a fresh connection: status, headers, body.
pub async fn fetch(addr: SocketAddr, path: &str) -> (StatusCode, HeaderMap, Bytes) {
    http_request(addr, "GET", path, &[], Vec::new()).await
}

/// `GET path`, which must answer 200 with JSON.
pub async fn fetch_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, _, body) = fetch(addr, path).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "GET {path}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).expect("JSON body")
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
