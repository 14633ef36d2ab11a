//! Tunnels (a `101 Switching Protocols`, a `CONNECT`) stay in stitch's accounting until they
//! close: they hold their `--max-connections` permit and their place in
//! `stitch_open_connections`, their bytes are counted exactly, and the drain waits for them and
//! closes them at `--drain-timeout` — in-process and through the real binary on SIGTERM.
//!
//! The upstream is a real hyper HTTP/1 server that switches to a raw echo protocol on
//! `Upgrade: echo` (a WebSocket without the framing, so byte counts are exact), or the raw
//! TCP echo server behind a `CONNECT`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::metrics::{metric, scrape};
use crate::support::process::spawn_stitch;
use crate::support::tcp::{EOF_MARKER, echo_server};
use crate::support::upstream::HttpUpstream;
use crate::support::wire::Wire;
use crate::support::{DEADLINE, Loopback, eventually, get, h1_client, listener, within};

/// A hyper HTTP/1 server: `Upgrade: echo` is answered `101` and the connection then echoes
/// raw bytes until the client's EOF; anything else gets `200 plain`.
struct UpgradeBackend {
    addr: SocketAddr,
    /// Requests that reached the backend.
    requests: Arc<AtomicUsize>,
}

impl UpgradeBackend {
    async fn start() -> Self {
        let (listener, addr) = listener().await;
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        seen.fetch_add(1, Ordering::SeqCst);
                        async move { Ok::<_, Infallible>(answer(req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        UpgradeBackend { addr, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn answer(mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.headers().get(http::header::UPGRADE).is_none() {
        return Response::new(Full::new(Bytes::from_static(b"plain")));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = io.shutdown().await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, "echo")
        .header(http::header::CONNECTION, "upgrade")
        .body(Full::new(Bytes::new()))
        .expect("valid response")
}

/// A client's tunnel through stitch, with every byte it wrote and read counted.
struct Tunnel {
    wire: Wire,
    written: usize,
    read: usize,
}

impl Tunnel {
    /// `GET` with `Upgrade: echo` to `stitch`; returns once the `101` arrived.
    async fn upgrade(stitch: SocketAddr, backend: SocketAddr) -> Self {
        let head = format!(
            "GET /echo HTTP/1.1\r\nHost: {backend}\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n"
        );
        Tunnel::open(stitch, head, 101).await
    }

    /// `CONNECT target` to stitch's explicit outbound proxy; returns once the `200` arrived.
    async fn connect(proxy: SocketAddr, target: SocketAddr) -> Self {
        let head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        Tunnel::open(proxy, head, 200).await
    }

    async fn open(addr: SocketAddr, head: String, status: u16) -> Self {
        let mut wire = Wire::connect(addr).await;
        wire.send(head.as_bytes()).await;
        // The head only: a tunnel's response has no body to frame.
        let answer = within("the tunnel's response head", wire.read_head())
            .await
            .expect("read the response head")
            .expect("a response head");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "expected {status}, got {text:?}"
        );
        Tunnel {
            wire,
            written: head.len(),
            read: answer.len(),
        }
    }

    /// Sends `payload` through the tunnel and checks the echo.
    async fn echo(&mut self, payload: &[u8]) {
        self.wire.send(payload).await;
        let back = within("the echo", self.wire.read_n(payload.len()))
            .await
            .expect("the echo arrives");
        assert!(back == payload, "the echo differs from what was sent");
        self.written += payload.len();
        self.read += payload.len();
    }

    /// Half-closes, then reads until stitch closes the client side; returns what came after.
    async fn close(&mut self) -> Vec<u8> {
        self.wire.stream.shutdown().await.expect("half-close");
        let rest = within("the tunnel to close", self.wire.read_to_close())
            .await
            .expect("a clean close");
        self.read += rest.len();
        rest
    }
}

#[tokio::test]
async fn two_open_websocket_tunnels_make_a_third_client_wait_at_max_connections_2() {
    let backend = UpgradeBackend::start().await;
    let stitch = Loopback::to(backend.addr)
        .with(|s| s.max_connections = 2)
        .start()
        .await;
    let mut first = Tunnel::upgrade(stitch.inbound, backend.addr).await;
    let mut second = Tunnel::upgrade(stitch.inbound, backend.addr).await;
    first.echo(b"first").await;
    second.echo(b"second").await;
    let open = metric(
        &scrape(stitch.admin).await,
        "stitch_open_connections",
        &[("direction", "inbound")],
    );
    assert_eq!(open, 2.0, "both tunnels count as open connections");

    // The third client's connection completes in the kernel's backlog; stitch must not serve
    // it while both permits are held by tunnels.
    let mut third = Wire::connect(stitch.inbound).await;
    third
        .send(
            format!(
                "GET /plain HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                backend.addr
            )
            .as_bytes(),
        )
        .await;
    let early = tokio::time::timeout(Duration::from_secs(1), third.try_read_response(false)).await;
    assert!(
        early.is_err(),
        "the third client was served while two tunnels held both permits: {early:?}"
    );
    assert_eq!(
        backend.requests(),
        2,
        "only the two upgrades reached the app"
    );

    first.close().await;
    let resp = third.read_response(false).await;
    assert_eq!(resp.status, 200, "served once a tunnel closed");
    assert_eq!(resp.body, b"plain");
    second.echo(b"still open").await;
}

#[tokio::test]
async fn upgrade_tunnel_bytes_are_counted_exactly_once_it_closes() {
    let backend = UpgradeBackend::start().await;
    let stitch = Loopback::to(backend.addr).start().await;
    let mut tunnel = Tunnel::upgrade(stitch.inbound, backend.addr).await;
    tunnel.echo(b"hello through the tunnel").await;
    tunnel.echo(&vec![0x5Au8; 300 * 1024]).await;
    let rest = tunnel.close().await;
    assert!(
        rest.is_empty(),
        "the echo sends nothing after the client's EOF"
    );
    let (written, read) = (tunnel.written as f64, tunnel.read as f64);
    eventually("the tunnel's bytes in the byte metrics", async || {
        let text = scrape(stitch.admin).await;
        metric(
            &text,
            "stitch_request_bytes_total",
            &[("direction", "inbound")],
        ) == written
            && metric(
                &text,
                "stitch_response_bytes_total",
                &[("direction", "inbound")],
            ) == read
            && metric(
                &text,
                "stitch_open_connections",
                &[("direction", "inbound")],
            ) == 0.0
    })
    .await;
}

#[tokio::test]
async fn connect_tunnel_counts_as_open_and_its_bytes_are_counted_exactly() {
    let echo = echo_server().await;
    let stitch = Loopback::new().start().await;
    let mut tunnel = Tunnel::connect(stitch.outbound, echo).await;
    tunnel.echo(b"through CONNECT").await;
    tunnel.echo(&vec![0xC3u8; 100 * 1024]).await;
    let open = metric(
        &scrape(stitch.admin).await,
        "stitch_open_connections",
        &[("direction", "outbound")],
    );
    assert_eq!(open, 1.0, "the CONNECT tunnel counts as an open connection");
    let rest = tunnel.close().await;
    assert_eq!(rest, EOF_MARKER, "the half-close reached the echo server");
    let (written, read) = (tunnel.written as f64, tunnel.read as f64);
    eventually(
        "the CONNECT tunnel's bytes in the byte metrics",
        async || {
            let text = scrape(stitch.admin).await;
            metric(
                &text,
                "stitch_request_bytes_total",
                &[("direction", "outbound")],
            ) == written
                && metric(
                    &text,
                    "stitch_response_bytes_total",
                    &[("direction", "outbound")],
                ) == read
                && metric(
                    &text,
                    "stitch_open_connections",
                    &[("direction", "outbound")],
                ) == 0.0
        },
    )
    .await;
}

#[tokio::test]
async fn the_drain_waits_for_an_open_tunnel_and_closes_it_at_the_deadline() {
    let backend = UpgradeBackend::start().await;
    // Long enough for the echo below on a loaded machine: the tunnel must still be open then.
    let stitch = Loopback::to(backend.addr)
        .with(|s| s.drain_timeout = Duration::from_secs(3))
        .start()
        .await;
    let mut tunnel = Tunnel::upgrade(stitch.inbound, backend.addr).await;
    tunnel.echo(b"before shutdown").await;
    stitch.shutdown.trigger();
    // The drain waits for the tunnel: it still carries bytes after the signal.
    tunnel.echo(b"while draining").await;
    // This runtime outlives `run`, so only stitch closing the tunnel ends it.
    tunnel
        .wire
        .expect_closed_within(DEADLINE, "the tunnel closed at the drain deadline")
        .await;
    let mut stitch = stitch;
    stitch.run_returns("run() to return after the drain").await;
}

#[tokio::test]
async fn sigterm_with_an_open_tunnel_exits_within_the_drain_timeout() {
    let backend = UpgradeBackend::start().await;
    // 3 s: long enough for the echo below on a loaded machine.
    let mut stitch = spawn_stitch(backend.addr, &["--drain-timeout", "3s"]).await;
    let mut tunnel = Tunnel::upgrade(stitch.inbound, backend.addr).await;
    tunnel.echo(b"before SIGTERM").await;
    let signalled = Instant::now();
    stitch.terminate();
    tunnel.echo(b"while draining").await;
    // Generous against the 3 s deadline on a shared machine; without the deadline the tunnel
    // would hold the drain for ever.
    let code = stitch.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "a clean exit after the drain");
    tunnel
        .wire
        .expect_closed_within(DEADLINE, "the tunnel closed by the exit")
        .await;
    let mut logged_deadline = false;
    within("the rest of stitch's log", async {
        while let Some(line) = stitch.log_lines.recv().await {
            logged_deadline |= line.contains("drain deadline passed");
        }
    })
    .await;
    assert!(
        logged_deadline,
        "the drain waited for the tunnel until the deadline ({:?} after SIGTERM)",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn the_drain_deadline_also_closes_an_http_connection_whose_request_never_ends() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr)
        .with(|s| s.drain_timeout = Duration::from_secs(1))
        .start()
        .await;
    let mut client = h1_client(stitch.inbound).await;
    // `/slow` waits for a gate this test never opens.
    let in_flight = tokio::spawn(client.send_request(get(up.addr, "/slow")));
    up.wait_for(1).await;
    stitch.shutdown.trigger();
    let answer = within("the stuck request to end with the drain", in_flight)
        .await
        .expect("task");
    assert!(
        answer.is_err(),
        "the connection was closed at the deadline, not answered: {answer:?}"
    );
    let mut stitch = stitch;
    stitch.run_returns("run() to return after the drain").await;
}
