//! Tests of [`super::server`] at a connection's edges: timeouts (paused clock), what an idle
//! connection holds, shutdown, the connection cap, protocol switches and tunnels, and hostile
//! input.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::error::Error;
use super::ext::OnUpgrade;
use super::incoming::Incoming;
use super::server::{IdleProbe, ServerSettings, serve};
use super::server_test_support::{Client, GUARD, echo, serve_tcp, settings, spawn_serve};
use crate::direction::Direction;
use crate::proxy::cap::IDLE_ENOUGH;
use crate::proxy::io::ProxyIo;
use crate::proxy::lease::ConnectionLease;
use crate::shutdown::ShutdownHandle;
use crate::telemetry::Metrics;

fn lease(shutdown: &ShutdownHandle, room: Option<Arc<Notify>>) -> Arc<ConnectionLease> {
    let permit = Arc::new(Semaphore::new(1))
        .try_acquire_owned()
        .expect("a free permit");
    let lease = ConnectionLease::new(
        permit,
        &Metrics::new(),
        Direction::Inbound,
        shutdown.clone(),
    );
    Arc::new(match room {
        Some(notify) => lease.closed_for_room_by(notify),
        None => lease,
    })
}

/// Serves the echo service on one end of an in-memory pipe (paused-clock tests: a socket adds
/// nothing there).
fn echo_duplex(
    settings: ServerSettings,
    shutdown: ShutdownHandle,
    lease: Option<Arc<ConnectionLease>>,
) -> (Client<DuplexStream>, JoinHandle<Result<(), Error>>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let task = spawn_serve(server, tower::service_fn(echo), settings, shutdown, lease);
    (Client::new(client), task)
}

#[tokio::test(start_paused = true)]
async fn the_first_head_has_the_header_read_timeout_from_accept() {
    let started = Instant::now();
    let (mut c, task) = echo_duplex(settings(), ShutdownHandle::default(), None);
    c.send(b"GET / HTTP/1.1\r\nHost").await;
    let result = task.await.expect("task");
    assert!(matches!(result, Err(Error::HeaderTimeout)), "{result:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_later_head_has_the_timeout_from_its_first_byte_after_any_idle_time() {
    let started = Instant::now();
    let (mut c, task) = echo_duplex(settings(), ShutdownHandle::default(), None);
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    c.response(false).await;
    tokio::time::sleep(Duration::from_secs(600)).await;
    c.send(b"GET / HT").await;
    let result = task.await.expect("task");
    assert!(matches!(result, Err(Error::HeaderTimeout)), "{result:?}");
    assert_eq!(started.elapsed(), Duration::from_secs(610));
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_closes_at_the_idle_timeout() {
    let started = Instant::now();
    let (mut c, task) = echo_duplex(settings(), ShutdownHandle::default(), None);
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    c.response(false).await;
    task.await.expect("task").expect("a quiet close");
    assert!(c.closed().await);
    assert_eq!(started.elapsed(), Duration::from_secs(3600));
}

#[tokio::test]
async fn an_idle_connection_holds_no_buffer() {
    let probe = Arc::new(IdleProbe::default());
    let mut settings = settings();
    settings.idle_probe = Some(probe.clone());
    let (mut c, _task) = serve_tcp(
        tower::service_fn(echo),
        settings,
        ShutdownHandle::default(),
        None,
    )
    .await;
    for _ in 0..2 {
        c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody")
            .await;
        assert_eq!(c.response(false).await.text(), "POST / body");
        tokio::time::timeout(GUARD, probe.parked.notified())
            .await
            .expect("the connection waits idle");
        let held = probe
            .read_capacity
            .load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(held, 0, "read buffer bytes held while idle");
    }
}

#[tokio::test]
async fn shutdown_closes_an_idle_connection_at_once() {
    let shutdown = ShutdownHandle::default();
    let (mut c, task) = echo_duplex(settings(), shutdown.clone(), None);
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    c.response(false).await;
    shutdown.trigger();
    tokio::time::timeout(GUARD, task)
        .await
        .expect("closed at once")
        .expect("task")
        .expect("quietly");
    assert!(c.closed().await);
}

/// A service that answers once `release` is notified (an exchange kept in flight).
fn held_service(
    release: Arc<Notify>,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
> + Send
+ 'static {
    tower::service_fn(move |_req: Request<Incoming>| {
        let release = release.clone();
        async move {
            release.notified().await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"done"))))
        }
    })
}

#[tokio::test]
async fn shutdown_lets_a_busy_exchange_finish_with_connection_close() {
    let shutdown = ShutdownHandle::default();
    let release = Arc::new(Notify::new());
    let (mut c, task) = serve_tcp(
        held_service(release.clone()),
        settings(),
        shutdown.clone(),
        None,
    )
    .await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    tokio::task::yield_now().await;
    shutdown.trigger();
    release.notify_one();
    let r = c.response(false).await;
    assert_eq!(r.text(), "done");
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(c.closed().await);
    task.await.expect("task").expect("clean");
}

#[tokio::test]
async fn the_drain_deadline_closes_a_busy_connection() {
    let shutdown = ShutdownHandle::default();
    let release = Arc::new(Notify::new());
    let (mut c, task) = serve_tcp(held_service(release), settings(), shutdown.clone(), None).await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    shutdown.spawn(task);
    shutdown.trigger();
    assert!(
        !shutdown.drain(Duration::from_millis(50)).await,
        "still busy at the deadline"
    );
    assert!(c.closed().await, "closed at the deadline, unanswered");
}

#[tokio::test(start_paused = true)]
async fn a_client_at_the_cap_closes_a_connection_idle_for_a_second_only() {
    let room = Arc::new(Notify::new());
    let shutdown = ShutdownHandle::default();
    let lease = lease(&shutdown, Some(room.clone()));
    let (mut c, task) = echo_duplex(settings(), shutdown, Some(lease));
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    c.response(false).await;
    tokio::time::sleep(IDLE_ENOUGH / 2).await;
    room.notify_waiters();
    tokio::task::yield_now().await;
    assert!(!task.is_finished(), "idle for half a second: kept");
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    c.response(false).await;
    tokio::time::sleep(IDLE_ENOUGH * 2).await;
    room.notify_waiters();
    task.await.expect("task").expect("closed quietly");
    assert!(c.closed().await);
}

/// A service that switches protocols (or opens a `CONNECT` tunnel) and echoes the tunnel's
/// bytes back upper-cased.
fn switching_service() -> impl tower::Service<
    Request<Incoming>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
> + Send
+ 'static {
    tower::service_fn(|mut req: Request<Incoming>| async move {
        let on = req.extensions_mut().remove::<OnUpgrade>().expect("offered");
        tokio::spawn(async move {
            let mut io = on.await.expect("handed over");
            let mut buf = [0u8; 64];
            loop {
                let n = io.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf[..n].make_ascii_uppercase();
                let _ = io.write_all(&buf[..n]).await;
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        if req.method() != Method::CONNECT {
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("upgrade", "echo".parse().expect("value"));
        }
        Ok::<_, Infallible>(r)
    })
}

#[tokio::test]
async fn a_101_hands_the_socket_over_with_the_bytes_read_past_the_head() {
    let (mut c, task) = serve_tcp(
        switching_service(),
        settings(),
        ShutdownHandle::default(),
        None,
    )
    .await;
    c.send(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\nearly")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.status, 101);
    assert!(r.header("connection").is_none(), "{}", r.head);
    task.await.expect("task").expect("handed over");
    assert_eq!(c.read_n(5).await, b"EARLY");
    c.send(b"later").await;
    assert_eq!(c.read_n(5).await, b"LATER");
}

#[tokio::test]
async fn a_connect_tunnel_gets_the_leftover_bytes_once_and_counts_them_once() {
    let shutdown = ShutdownHandle::default();
    let lease = lease(&shutdown, None);
    let (client, server) = tokio::io::duplex(64 * 1024);
    let counted = ProxyIo::new(server)
        .replaying(BytesMut::from(
            &b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n"[..],
        ))
        .counted(lease.clone());
    let settings = settings();
    let conn_lease = lease.clone();
    let task = tokio::spawn(async move {
        serve(
            counted,
            Bytes::new(),
            switching_service(),
            &settings,
            &shutdown,
            Some(&conn_lease),
            Instant::now() + Duration::from_secs(10),
        )
        .await
    });
    let mut c = Client::new(client);
    c.send(b"\r\nhello").await;
    let r = c.response(true).await;
    assert_eq!((r.status, r.header("content-length")), (200, None));
    assert_eq!(c.read_n(5).await, b"HELLO");
    task.await.expect("task").expect("handed over");
    let sent = b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\nhello".len() as u64;
    assert_eq!(
        lease.counts().read(),
        sent,
        "every client byte counted once"
    );
}

#[tokio::test]
async fn a_response_other_than_101_keeps_the_connection_http() {
    let (tx, mut refused) = tokio::sync::mpsc::unbounded_channel();
    let service = tower::service_fn(move |mut req: Request<Incoming>| {
        let on = req.extensions_mut().remove::<OnUpgrade>();
        let tx = tx.clone();
        async move {
            if let Some(on) = on {
                tokio::spawn(async move { tx.send(on.await.is_err()) });
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }
    });
    let (mut c, _task) = serve_tcp(service, settings(), ShutdownHandle::default(), None).await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n")
        .await;
    assert_eq!(c.response(false).await.status, 200);
    let gone = tokio::time::timeout(GUARD, refused.recv())
        .await
        .expect("resolved");
    assert_eq!(gone, Some(true), "no hand-over after a 200");
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(c.response(false).await.status, 200, "still HTTP");
}

/// Arbitrary bytes, or a valid request head followed by arbitrary bytes.
fn hostile() -> impl Strategy<Value = Vec<u8>> {
    let heads = prop::sample::select(vec![
        &b""[..],
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\nExpect: 100-continue\r\n\r\n",
        b"CONNECT a:1 HTTP/1.1\r\n\r\n",
    ]);
    (heads, prop::collection::vec(any::<u8>(), 0..800)).prop_map(|(head, tail)| {
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(&tail);
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn hostile_bytes_never_panic_the_server_and_the_connection_always_ends(bytes in hostile()) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let started = Instant::now();
            let (mut c, task) = echo_duplex(settings(), ShutdownHandle::default(), None);
            let _ = c.io.write_all(&bytes).await;
            let _ = c.io.shutdown().await;
            let mut sink = Vec::new();
            let _ = c.io.read_to_end(&mut sink).await;
            let joined = task.await;
            assert!(joined.is_ok(), "the driver never panics");
            // Paused clock: no time passed, so the end of input ended it, not a timeout.
            assert!(started.elapsed() < Duration::from_secs(1), "ended by the end of input");
        });
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_held_past_the_response_is_waited_for_at_most_the_idle_timeout() {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let service = tower::service_fn(|req: Request<Incoming>| async move {
        // Keeps the body, never reads it, answers at once.
        tokio::spawn(async move {
            let _body = req.into_body();
            std::future::pending::<()>().await;
        });
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"early"))))
    });
    let settings = settings();
    let started = Instant::now();
    let task = tokio::spawn(async move {
        let shutdown = ShutdownHandle::default();
        let deadline = Instant::now() + settings.header_read_timeout;
        serve(
            server,
            Bytes::new(),
            service,
            &settings,
            &shutdown,
            None,
            deadline,
        )
        .await
    });
    let mut c = Client::new(client);
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n")
        .await;
    assert_eq!(c.response(false).await.text(), "early");
    task.await.expect("task").expect("closed quietly");
    assert_eq!(started.elapsed(), Duration::from_secs(3600));
}

/// Tells when it is dropped (a service future abandoned by the driver).
struct DropFlag(Arc<Notify>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// A service that reads the request body to its end, says so on `called`, then never
/// answers; `dropped` is notified when the driver abandons its future.
fn hanging_service(
    called: Arc<Notify>,
    dropped: Arc<Notify>,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
> + Send
+ 'static {
    tower::service_fn(move |req: Request<Incoming>| {
        let (called, flag) = (called.clone(), DropFlag(dropped.clone()));
        async move {
            let _flag = flag;
            let body = http_body_util::BodyExt::collect(req.into_body()).await;
            assert!(body.is_ok(), "the body arrives whole");
            called.notify_one();
            std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>().await
        }
    })
}

/// Asserts the driver's task ends (within [`GUARD`]) with [`Error::ClientClosed`].
async fn ends_as_client_closed(task: JoinHandle<Result<(), Error>>) {
    let ended = tokio::time::timeout(GUARD, task)
        .await
        .expect("the driver ends")
        .expect("task");
    assert!(matches!(ended, Err(Error::ClientClosed)), "{ended:?}");
}

/// As hyper did (no half-close support): a client that closes its connection while its
/// request is served abandons the exchange, so the service's future (and the span it holds)
/// ends as cancelled instead of waiting for an upstream nobody will read. Bodiless, and
/// with a body already read to its end.
#[tokio::test]
async fn a_client_closing_while_its_request_is_served_abandons_the_exchange() {
    for request in [
        &b"GET /hang HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"POST /hang HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd",
    ] {
        let (called, dropped) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let service = hanging_service(called.clone(), dropped.clone());
        let (mut c, task) = serve_tcp(service, settings(), ShutdownHandle::default(), None).await;
        c.send(request).await;
        tokio::time::timeout(GUARD, called.notified())
            .await
            .expect("the service got the request");
        drop(c);
        tokio::time::timeout(GUARD, dropped.notified())
            .await
            .expect("the service's future is dropped");
        ends_as_client_closed(task).await;
    }
}

/// Requests pipelined behind one another, then a half-close: every request with another
/// one behind it is answered; the last, with nothing behind it when the close arrives, is
/// abandoned like any request whose client closed (hyper and nginx do the same).
#[tokio::test]
async fn pipelined_requests_then_a_half_close_are_answered_but_the_last() {
    let service = tower::service_fn(|req: Request<Incoming>| async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        echo(req).await
    });
    let (mut c, task) = serve_tcp(service, settings(), ShutdownHandle::default(), None).await;
    c.send(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    c.io.shutdown().await.expect("half-close");
    assert_eq!(c.response(false).await.text(), "GET /a ");
    assert!(c.closed().await, "the last request is abandoned");
    ends_as_client_closed(task).await;
}

/// A request body the service dropped unread makes the connection unusable: the response
/// says `Connection: close` (as the response writer documents), then the connection closes.
#[tokio::test]
async fn an_unusable_request_body_gets_connection_close() {
    let service = tower::service_fn(|req: Request<Incoming>| async move {
        drop(req.into_body());
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"early"))))
    });
    let (mut c, task) = serve_tcp(service, settings(), ShutdownHandle::default(), None).await;
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        .await;
    let r = c.response(false).await;
    assert_eq!(r.text(), "early");
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    assert!(c.closed().await);
    let _ = task.await;
}

/// A `101` to a request that asked for no switch (a misbehaving upstream) ends HTTP/1 on
/// the connection: nothing after it is parsed as a request.
#[tokio::test]
async fn a_101_to_a_plain_request_ends_the_connection() {
    let service = tower::service_fn(|req: Request<Incoming>| async move {
        let mut r = Response::new(Full::new(Bytes::new()));
        if req.uri().path() == "/switch" {
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        }
        Ok::<_, Infallible>(r)
    });
    let (mut c, _task) = serve_tcp(service, settings(), ShutdownHandle::default(), None).await;
    c.send(b"GET /switch HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(c.response(false).await.status, 101);
    c.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(c.closed().await, "no longer parsed as HTTP/1 after a 101");
}

/// A client that closes its connection before its request body's end (a half-close here, so
/// the test can see what comes back) has left: the service's answer to the broken body — a
/// forwarder's error response — is dropped unwritten and the exchange ends as the client's
/// close.
#[tokio::test]
async fn a_client_closing_before_its_body_ends_abandons_the_exchange() {
    let service = tower::service_fn(|req: Request<Incoming>| async move {
        let mut body = req.into_body();
        while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
            if frame.is_err() {
                break;
            }
        }
        let mut resp = Response::new(Full::new(Bytes::from_static(b"upstream failed")));
        *resp.status_mut() = StatusCode::BAD_GATEWAY;
        Ok::<_, Infallible>(resp)
    });
    let (mut c, task) = serve_tcp(service, settings(), ShutdownHandle::default(), None).await;
    c.send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
        .await;
    c.io.shutdown().await.expect("half-close");
    assert!(
        c.closed().await,
        "no answer is written to a client that left"
    );
    ends_as_client_closed(task).await;
}
