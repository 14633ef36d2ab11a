//! Upstream connections: HTTP/1 connections (stitch's own client driver,
//! [`crate::proxy::h1::client`]) are pooled per target and reused one request at a time; an
//! idle one holds its socket and nothing else, and is checked with one non-blocking read
//! before reuse. HTTP/2 (hyper) keeps one multiplexed connection per target, created single-flight: a burst of
//! concurrent streams shares one connection attempt instead of racing to open many, and its
//! outcome — the connection or the failure — reaches every stream waiting for it at once. A
//! failed attempt is forgotten, so the next stream tries again.
//!
//! The maps sit behind std mutexes held for a lookup, a push or a pop (never across an
//! `.await`); a lock poisoned by a panic elsewhere is recovered ([`lock`]) rather than
//! turned into a panic on the request path.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pin_project_lite::pin_project;
use tokio::sync::watch;

use super::request_body::RequestBody;
use crate::proxy::addrs::{OwnAddrs, Target};
use crate::proxy::error::ForwardError;
use crate::proxy::h1;
use crate::proxy::h1::client::{ClientSettings, Connection, Exchange, Reuse, SendError};
use crate::proxy::h1::ext::Upgraded;
use crate::proxy::selfloop::{OwnConnections, Tracked};
use crate::telemetry::Metrics;

/// Most idle HTTP/1 connections kept per target; more are closed on return. A pool never
/// holds more idle connections than it had requests in flight at once (a connection is idle
/// only after carrying one), and those are bounded by the connection cap and reaped after
/// `--upstream-idle-timeout`; an idle one costs its socket and nothing else. So this bound is
/// a backstop, set at the cap's default. It was 64: 5,000 concurrent clients on one worker
/// then opened and closed an upstream connection for about one request in ten, a fifth of
/// stitch's CPU went to `connect` and `close`, and the backend's accept queue churned.
const MAX_IDLE_PER_TARGET: usize = 10_000;

/// The longest the reaper waits between passes. An idle HTTP/1 connection has no task
/// watching it (that is what makes it cost nothing), so one the upstream closed (a Node
/// server's 5 s keep-alive, say) sits in CLOSE_WAIT until a checkout or the reaper's probe
/// finds it: this bounds how long, at one non-blocking read per idle connection per pass.
const REAP_AT_LEAST_EVERY: Duration = Duration::from_secs(5);

/// Settings of the upstream side.
#[derive(Debug, Clone)]
pub(crate) struct PoolSettings {
    /// Upper bound on a TCP connect.
    pub connect_timeout: Duration,
    /// Idle connections are closed after this long.
    pub idle_timeout: Duration,
}

/// The pools of all upstream connections of one stitch process.
#[derive(Debug)]
pub(crate) struct Pool {
    settings: PoolSettings,
    own: OwnAddrs,
    own_connections: OwnConnections,
    /// The HTTP/1 client driver's bounds on response heads.
    client: ClientSettings,
    /// Where upstream connects are counted.
    metrics: Metrics,
    h1_idle: Mutex<HashMap<Target, Vec<Idle>>>,
    h2: Mutex<HashMap<Target, H2Entry>>,
}

/// An idle HTTP/1 connection and when it became idle.
#[derive(Debug)]
struct Idle {
    conn: Connection,
    since: Instant,
}

/// A target's HTTP/2 connection, or the attempt to open it.
#[derive(Debug)]
struct H2Entry {
    slot: H2Slot,
    last_used: Instant,
}

#[derive(Debug)]
enum H2Slot {
    /// Open (or closed since: the next stream that finds it closed starts a new attempt).
    Ready(http2::SendRequest<RequestBody>),
    /// Being opened by a task of its own; every stream for the target waits for its outcome.
    Connecting(watch::Receiver<Option<H2Outcome>>),
}

/// What a connection attempt ends with, shared by every stream that waited for it.
type H2Outcome = Result<http2::SendRequest<RequestBody>, Arc<ForwardError>>;

/// Locks `mutex`, recovering it if a panic poisoned it: every critical section in this file is
/// a lookup, insert, push, pop or `retain`, which leave the maps consistent wherever they
/// stopped, so the data behind a poisoned lock is still sound.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Hands an HTTP/1 connection back to its pool once its response was read to the end, and
/// until then keeps what the exchange still runs: dropped with the response body, it stops a
/// request body still being written (see [`Reuse`]).
#[derive(Debug)]
pub(crate) struct Checkin {
    /// Where the connection goes back; `None` for a dedicated connection (a protocol switch
    /// the upstream refused), which is never pooled.
    home: Option<(Arc<Pool>, Target)>,
    reuse: Reuse,
}

impl Checkin {
    /// Returns the connection for reuse, unless it cannot carry another request (see
    /// [`Reuse::reclaim`]), it is not pooled, or the pool is full. Call it after the response
    /// body was read to its end and dropped.
    pub(crate) fn release(self) {
        let Some((pool, target)) = self.home else {
            return;
        };
        let Some(conn) = self.reuse.reclaim() else {
            return;
        };
        let mut idle = lock(&pool.h1_idle);
        let list = idle.entry(target).or_default();
        if list.len() < MAX_IDLE_PER_TARGET {
            list.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

impl Pool {
    /// An empty pool; `own` guards against connecting to stitch itself, every connection
    /// it opens is registered in `own_connections` while open (self-loop guard), and every
    /// connect is counted in `metrics`.
    pub(crate) fn new(
        settings: PoolSettings,
        own: OwnAddrs,
        own_connections: OwnConnections,
        metrics: Metrics,
    ) -> Arc<Self> {
        let pool = Arc::new(Pool {
            client: ClientSettings::default(),
            settings,
            own,
            own_connections,
            metrics,
            h1_idle: Mutex::default(),
            h2: Mutex::default(),
        });
        tokio::spawn(reap_idle(Arc::downgrade(&pool)));
        pool
    }

    /// Opens a TCP connection to `target` (counted): every upstream connection stitch makes,
    /// pooled or not (opaque TCP, CONNECT and Upgrade tunnels).
    pub(crate) async fn connect_tcp(&self, target: &Target) -> Result<Tracked, ForwardError> {
        let connected = target
            .connect(&self.own, self.settings.connect_timeout)
            .await;
        self.metrics.upstream_connect(connected.is_ok());
        Ok(self.own_connections.track(connected?))
    }

    /// Sends an HTTP/1 request on a pooled connection (or a new one) and returns the response
    /// with the hand-back that returns the connection once the body is read.
    ///
    /// Not an `async fn`: the pooled connection is checked out and the exchange started before
    /// the future exists, and the future ([`SendH1`]) is the exchange itself, so it holds the
    /// request once; it is part of every in-flight request's future.
    pub(crate) fn send_h1<'a>(
        self: &'a Arc<Self>,
        target: &'a Target,
        req: Request<RequestBody>,
    ) -> impl Future<Output = H1Outcome> + Send + 'a {
        match self.checkout_h1(target) {
            Some(conn) => SendH1::Pooled {
                sending: conn.send(req, &self.client),
                pool: self,
                target,
            },
            None => SendH1::Again {
                again: Box::pin(self.send_h1_again(target, req)),
            },
        }
    }

    /// [`Pool::send_h1`]'s rare path: another pooled connection, else a new one.
    async fn send_h1_again(
        self: &Arc<Self>,
        target: &Target,
        mut req: Request<RequestBody>,
    ) -> H1Outcome {
        while let Some(conn) = self.checkout_h1(target) {
            match conn.send(req, &self.client).await {
                Ok(exchange) => return Ok(self.checkin(target, exchange)),
                Err(e) => req = resendable(target, e)?,
            }
        }
        let conn = self.connect_h1(target).await?;
        match conn.send(req, &self.client).await {
            Ok(exchange) => Ok(self.checkin(target, exchange)),
            Err(e) => Err(ForwardError::exchange(e).0),
        }
    }

    /// Sends an HTTP/1 request that asks for a protocol switch on a dedicated connection,
    /// which is never pooled: after a `101` (or a 2xx to `CONNECT`) the socket comes back
    /// with the response, for the tunnel; otherwise the response comes with a [`Checkin`]
    /// that pools nothing but stops the request body's writer with the response body.
    pub(crate) async fn send_upgrade(
        &self,
        target: &Target,
        req: Request<RequestBody>,
    ) -> Result<(Response<h1::incoming::Incoming>, Switched), ForwardError> {
        let conn = self.connect_h1(target).await?;
        match conn.send(req, &self.client).await {
            Ok(exchange) => {
                let switched = match exchange.upgraded {
                    Some(upgraded) => Switched::Yes(upgraded),
                    None => Switched::No(Checkin {
                        home: None,
                        reuse: exchange.reuse,
                    }),
                };
                Ok((exchange.response, switched))
            }
            Err(e) => Err(ForwardError::exchange(e).0),
        }
    }

    /// Sends an HTTP/2 request on the target's shared connection (not an `async fn`, as
    /// [`Pool::send_h1`] is not).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold the request twice in every in-flight request's future"
    )]
    pub(crate) fn send_h2(
        self: &Arc<Self>,
        target: &Target,
        req: Request<RequestBody>,
    ) -> impl Future<Output = Result<Response<Incoming>, ForwardError>> + Send {
        async move {
            let mut tx = self.checkout_h2(target).await?;
            tx.send_request(req).await.map_err(sent)
        }
    }

    /// The response of an exchange, and the hand-back that returns its connection.
    fn checkin(
        self: &Arc<Self>,
        target: &Target,
        exchange: Exchange,
    ) -> (Response<h1::incoming::Incoming>, Checkin) {
        let checkin = Checkin {
            home: Some((self.clone(), target.clone())),
            reuse: exchange.reuse,
        };
        (exchange.response, checkin)
    }

    /// An idle connection to `target` that is still open (the most recently used first).
    fn checkout_h1(&self, target: &Target) -> Option<Connection> {
        loop {
            let mut candidate = {
                let mut idle = lock(&self.h1_idle);
                // An emptied list stays (the reaper removes it) so that check-in does not
                // allocate a new one each time the pool of a busy target runs dry.
                idle.get_mut(target)?.pop()?
            };
            if candidate.since.elapsed() <= self.settings.idle_timeout
                && candidate.conn.is_reusable()
            {
                return Some(candidate.conn);
            }
        }
    }

    /// A new HTTP/1 connection to `target`.
    async fn connect_h1(&self, target: &Target) -> Result<Connection, ForwardError> {
        let stream = self.connect_tcp(target).await?;
        let (read, write) = tokio::io::split(stream);
        Ok(Connection::new(Box::new(read), Box::new(write)))
    }

    /// The target's HTTP/2 connection: the open one, or the outcome of the attempt in flight
    /// (started here when there is none).
    async fn checkout_h2(
        self: &Arc<Self>,
        target: &Target,
    ) -> Result<http2::SendRequest<RequestBody>, ForwardError> {
        let mut attempt = {
            let mut map = lock(&self.h2);
            let now = Instant::now();
            // `get_mut` first: the common case (an open connection) does not clone the key.
            match map.get_mut(target) {
                Some(entry) => {
                    entry.last_used = now;
                    match &entry.slot {
                        H2Slot::Ready(tx) if !tx.is_closed() => return Ok(tx.clone()),
                        H2Slot::Connecting(outcome) => outcome.clone(),
                        H2Slot::Ready(_) => {
                            let outcome = self.start_h2(target);
                            entry.slot = H2Slot::Connecting(outcome.clone());
                            outcome
                        }
                    }
                }
                None => {
                    let outcome = self.start_h2(target);
                    let slot = H2Slot::Connecting(outcome.clone());
                    map.insert(
                        target.clone(),
                        H2Entry {
                            slot,
                            last_used: now,
                        },
                    );
                    outcome
                }
            }
        };
        // Boxed: only the streams that find no open connection wait here.
        match Box::pin(wait_for_h2(&mut attempt)).await {
            Some(Ok(tx)) => Ok(tx),
            Some(Err(e)) => Err(ForwardError::shared(e)),
            None => Err(ForwardError::connect(std::io::Error::other(
                "the upstream HTTP/2 connection attempt was abandoned",
            ))),
        }
    }

    /// Starts a connection attempt to `target`; its outcome arrives on the returned channel.
    fn start_h2(self: &Arc<Self>, target: &Target) -> watch::Receiver<Option<H2Outcome>> {
        let (done, outcome) = watch::channel(None);
        tokio::spawn(self.clone().connect_h2(target.clone(), done));
        outcome
    }

    /// One connection attempt, on a task of its own so that it ends (and its outcome reaches
    /// every waiting stream) even when the stream that started it is cancelled. A failure is
    /// forgotten once told: the next stream tries again.
    async fn connect_h2(self: Arc<Self>, target: Target, done: watch::Sender<Option<H2Outcome>>) {
        let outcome = self.handshake_h2(&target).await.map_err(Arc::new);
        {
            let mut map = lock(&self.h2);
            match &outcome {
                Ok(tx) => {
                    let now = Instant::now();
                    map.entry(target)
                        .and_modify(|e| e.slot = H2Slot::Ready(tx.clone()))
                        .or_insert_with(|| H2Entry {
                            slot: H2Slot::Ready(tx.clone()),
                            last_used: now,
                        });
                }
                Err(e) => {
                    tracing::debug!(%target, error = %e.with_cause(), "upstream HTTP/2 connect failed; failing the streams waiting for it");
                    map.remove(&target);
                }
            }
        }
        done.send_replace(Some(outcome));
    }

    async fn handshake_h2(
        &self,
        target: &Target,
    ) -> Result<http2::SendRequest<RequestBody>, ForwardError> {
        let stream = self.connect_tcp(target).await?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(unsent)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream h2 connection ended with an error");
            }
        });
        Ok(tx)
    }

    /// Closes idle connections past the idle timeout, and forgets closed ones.
    fn reap(&self) {
        let timeout = self.settings.idle_timeout;
        lock(&self.h1_idle).retain(|_, list| {
            list.retain_mut(|i| i.since.elapsed() <= timeout && i.conn.is_reusable());
            !list.is_empty()
        });
        lock(&self.h2).retain(|_, entry| match &entry.slot {
            // Its task will store the outcome.
            H2Slot::Connecting(_) => true,
            // Dropping the sender closes the connection once the streams still open end.
            H2Slot::Ready(tx) => !tx.is_closed() && entry.last_used.elapsed() <= timeout,
        });
    }
}

/// How a protocol switch sent on a dedicated connection ([`Pool::send_upgrade`]) went.
#[derive(Debug)]
pub(crate) enum Switched {
    /// The upstream switched: its socket, with the bytes read past the head.
    Yes(Upgraded),
    /// It answered otherwise; the response body keeps this until it ends.
    No(Checkin),
}

/// What an HTTP/1 exchange ends with: the response and its connection's hand-back.
pub(crate) type H1Outcome = Result<(Response<h1::incoming::Incoming>, Checkin), ForwardError>;

pin_project! {
    /// [`Pool::send_h1`]'s future: the exchange on a pooled connection, polled in place (an
    /// `async` block would keep the exchange and the request it was built from), or the rare
    /// path, boxed.
    #[project = SendH1Proj]
    enum SendH1<'a, F> {
        /// On a connection from the pool.
        Pooled {
            #[pin]
            sending: F,
            pool: &'a Arc<Pool>,
            target: &'a Target,
        },
        /// Another pooled connection or a new one ([`Pool::send_h1_again`]).
        Again {
            again: Pin<Box<dyn Future<Output = H1Outcome> + Send + 'a>>,
        },
    }
}

impl<'a, F> Future for SendH1<'a, F>
where
    F: Future<Output = Result<Exchange, SendError<RequestBody>>>,
{
    type Output = H1Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<H1Outcome> {
        let (pool, target, failed) = match self.as_mut().project() {
            SendH1Proj::Again { again } => return again.as_mut().poll(cx),
            SendH1Proj::Pooled {
                sending,
                pool,
                target,
            } => match ready!(sending.poll(cx)) {
                Ok(exchange) => return Poll::Ready(Ok(pool.checkin(target, exchange))),
                Err(e) => (*pool, *target, e),
            },
        };
        match resendable(target, failed) {
            Ok(req) => {
                let again = Box::pin(pool.send_h1_again(target, req));
                self.set(SendH1::Again { again });
                self.poll(cx)
            }
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

/// A pooled exchange's failure: the request to send on another connection when not one byte
/// of it went out (the upstream closed the connection an instant ago, after the check at
/// checkout, and the first write failed), else the error to answer with.
fn resendable(
    target: &Target,
    failed: SendError<RequestBody>,
) -> Result<Request<RequestBody>, ForwardError> {
    match ForwardError::exchange(failed) {
        (error, Some(req)) if error.is_retryable() => {
            tracing::debug!(%target, error = %error.with_cause(), "pooled connection failed before the request was sent; sending it on another");
            Ok(req)
        }
        (error, _) => Err(error),
    }
}

/// The outcome of a connection attempt, once there is one (`None` when the attempt's task ended
/// without one: its runtime is shutting down).
async fn wait_for_h2(attempt: &mut watch::Receiver<Option<H2Outcome>>) -> Option<H2Outcome> {
    match attempt.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone(),
        Err(_) => None,
    }
}

/// The exchange failed after the request was handed to hyper: it may have reached the upstream.
fn sent(e: hyper::Error) -> ForwardError {
    ForwardError::upstream(e, false)
}

/// The connection failed before any request was written to it.
fn unsent(e: hyper::Error) -> ForwardError {
    ForwardError::upstream(e, true)
}

async fn reap_idle(pool: std::sync::Weak<Pool>) {
    let period = match pool.upgrade() {
        Some(p) => (p.settings.idle_timeout / 2)
            .min(REAP_AT_LEAST_EVERY)
            .max(Duration::from_millis(100)),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(p) => p.reap(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::error::ForwardErrorKind;

    fn pool() -> Arc<Pool> {
        Pool::new(
            PoolSettings {
                connect_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(60),
            },
            OwnAddrs::new(Vec::new()),
            OwnConnections::default(),
            Metrics::new(),
        )
    }

    /// Poisons `mutex` the way a panic elsewhere would: a thread panics while holding it.
    fn poison<T: Send>(mutex: &Mutex<T>) {
        std::thread::scope(|s| {
            let _ = s
                .spawn(|| {
                    let _held = mutex.lock();
                    panic!("poisoning the pool's lock on purpose");
                })
                .join();
        });
        assert!(mutex.is_poisoned());
    }

    /// A loopback address nothing listens on: connects are refused at once.
    fn refused_target() -> Target {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        Target::Addr(listener.local_addr().expect("bound"))
    }

    #[tokio::test]
    async fn poisoned_locks_are_recovered_on_the_request_path() {
        let pool = pool();
        poison(&pool.h1_idle);
        poison(&pool.h2);
        let target = refused_target();
        assert!(pool.checkout_h1(&target).is_none(), "no idle connection");
        let e = pool
            .checkout_h2(&target)
            .await
            .expect_err("nothing listens there");
        assert_eq!(e.kind(), ForwardErrorKind::Connect);
        pool.reap();
        assert!(
            lock(&pool.h2).is_empty(),
            "the failed attempt was forgotten"
        );
    }

    #[tokio::test]
    async fn a_failed_h2_attempt_fails_every_waiting_checkout_and_is_forgotten() {
        let pool = pool();
        let target = refused_target();
        let waiting: Vec<_> = (0..8)
            .map(|_| {
                let (pool, target) = (pool.clone(), target.clone());
                tokio::spawn(async move { pool.checkout_h2(&target).await })
            })
            .collect();
        for stream in waiting {
            let e = stream
                .await
                .expect("task")
                .expect_err("nothing listens there");
            assert_eq!(e.kind(), ForwardErrorKind::Connect);
        }
        assert!(
            lock(&pool.h2).is_empty(),
            "a failure is not kept: the next stream tries again"
        );
    }

    /// A burst of concurrent requests leaves every connection it opened idle in the pool, and
    /// the next burst of the same size reuses them all: the pool keeps what the traffic
    /// needs (well beyond the 64 it once kept), not a fraction that is closed and reopened.
    #[tokio::test]
    async fn a_burst_of_concurrent_requests_is_served_again_on_the_same_connections() {
        use http_body_util::BodyExt;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        use super::super::body::{ProxyBody, UpstreamBody, WireBody};
        use crate::proxy::h1::incoming::Incoming as H1Incoming;

        const BURST: usize = 200;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let target = Target::Addr(listener.local_addr().expect("addr"));
        let accepted = Arc::new(AtomicUsize::new(0));
        // Every request waits until the whole burst arrived, so the burst needs BURST
        // connections at once.
        let barrier = Arc::new(tokio::sync::Barrier::new(BURST));
        let counted = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.expect("accept");
                counted.fetch_add(1, Ordering::SeqCst);
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    let (mut buf, mut got) = (vec![0u8; 4096], Vec::new());
                    loop {
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        got.clear();
                        barrier.wait().await;
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let pool = pool();
        for burst in 1..=2 {
            let sends: Vec<_> = (0..BURST)
                .map(|_| {
                    let (pool, target) = (pool.clone(), target.clone());
                    tokio::spawn(async move {
                        let req = Request::get("/")
                            .body(RequestBody::new(WireBody::Http1(H1Incoming::empty())))
                            .expect("request");
                        let (resp, checkin) = pool.send_h1(&target, req).await.expect("answered");
                        let body = ProxyBody::Upstream(UpstreamBody::new(
                            WireBody::Http1(resp.into_body()),
                            Some(checkin),
                        ));
                        let data = body.collect().await.expect("body").to_bytes();
                        assert_eq!(&data[..], b"ok");
                    })
                })
                .collect();
            for send in sends {
                send.await.expect("request task");
            }
            assert_eq!(
                accepted.load(Ordering::SeqCst),
                BURST,
                "burst {burst}: one connection per concurrent request, all reused"
            );
        }
        assert_eq!(lock(&pool.h1_idle).get(&target).map(Vec::len), Some(BURST));
        let exposition = pool.metrics.encode();
        assert!(
            exposition.contains(&format!(
                "stitch_upstream_connects_total{{result=\"ok\"}} {BURST}\n"
            )),
            "every connect counted once: {exposition}"
        );
    }

    /// Sends a request whose body stalls after 10 of its 1,000 bytes to an upstream that
    /// answers at once without reading it, reads the response to its end and lets it go
    /// (through the pool, or as a refused protocol switch); `true` when the client's body
    /// (which holds the client connection's read half) is still held a second later.
    async fn writer_outlives_the_response(upgrade: bool) -> bool {
        use bytes::BytesMut;
        use http_body_util::BodyExt;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        use super::super::body::{ProxyBody, UpstreamBody, WireBody};
        use crate::proxy::h1::incoming::{Delimited, Incoming as H1Incoming, ReadSide};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let target = Target::Addr(listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let (mut buf, mut got) = (vec![0u8; 4096], Vec::new());
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.expect("read");
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .expect("write");
            std::future::pending::<()>().await;
        });
        let (mut client, server_end) = tokio::io::duplex(64 * 1024);
        client.write_all(b"0123456789").await.expect("write");
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let body = H1Incoming::new(
            ReadSide::new(Box::new(server_end), BytesMut::new()),
            Delimited::Length(1000),
            done_tx,
            None,
        );
        let req = Request::post("/")
            .header("content-length", "1000")
            .body(RequestBody::new(WireBody::Http1(body)))
            .expect("request");
        let pool = pool();
        let (resp, checkin) = if upgrade {
            let (resp, switched) = pool.send_upgrade(&target, req).await.expect("answered");
            let Switched::No(checkin) = switched else {
                panic!("a 200 is no switch");
            };
            (resp, checkin)
        } else {
            pool.send_h1(&target, req).await.expect("answered")
        };
        let mut body = ProxyBody::Upstream(UpstreamBody::new(
            WireBody::Http1(resp.into_body()),
            Some(checkin),
        ));
        let mut data = Vec::new();
        while let Some(frame) = body.frame().await {
            data.extend_from_slice(&frame.expect("frame").into_data().expect("data"));
        }
        assert_eq!(data, b"ok");
        drop(body);
        tokio::time::timeout(Duration::from_secs(1), done_rx)
            .await
            .is_err()
    }

    /// A request body still being written when the response ends is stopped with it (the
    /// connection cannot be reused anyway), for a pooled exchange and for a protocol switch
    /// the upstream refused: otherwise the writer would hold the client's body, and with it
    /// the client connection, until the client finished or left.
    #[tokio::test]
    async fn a_request_body_writer_stops_with_the_response() {
        assert!(!writer_outlives_the_response(false).await, "pooled");
        assert!(
            !writer_outlives_the_response(true).await,
            "refused protocol switch"
        );
    }
}
