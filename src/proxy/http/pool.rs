//! Upstream connections: HTTP/1 connections are pooled per target and reused one request at a
//! time; HTTP/2 keeps one multiplexed connection per target (created single-flight, so a burst
//! of concurrent streams shares one connection instead of racing to open many).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::request_body::RequestBody;
use crate::proxy::addrs::{OwnAddrs, Target};
use crate::proxy::error::ForwardError;
use crate::proxy::selfloop::{OwnConnections, Tracked};

/// Most idle HTTP/1 connections kept per target; more are closed on return.
const MAX_IDLE_PER_TARGET: usize = 64;

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
    h1_idle: Mutex<HashMap<Target, Vec<Idle>>>,
    h2: Mutex<HashMap<Target, Arc<tokio::sync::Mutex<H2Entry>>>>,
}

#[derive(Debug)]
struct Idle {
    tx: http1::SendRequest<RequestBody>,
    since: Instant,
}

#[derive(Debug, Default)]
struct H2Entry {
    tx: Option<http2::SendRequest<RequestBody>>,
    last_used: Option<Instant>,
}

/// Hands an HTTP/1 connection back to its pool once its response was read to the end.
#[derive(Debug)]
pub(crate) struct Checkin {
    pool: Arc<Pool>,
    target: Target,
    tx: http1::SendRequest<RequestBody>,
}

impl Checkin {
    /// Returns the connection for reuse (unless it closed or the pool is full).
    pub(crate) fn release(self) {
        if self.tx.is_closed() {
            return;
        }
        let mut idle = self.pool.h1_idle.lock().expect("pool lock poisoned");
        let list = idle.entry(self.target).or_default();
        if list.len() < MAX_IDLE_PER_TARGET {
            list.push(Idle {
                tx: self.tx,
                since: Instant::now(),
            });
        }
    }
}

impl Pool {
    /// An empty pool; `own` guards against connecting to stitch itself, and every connection
    /// it opens is registered in `own_connections` while open (self-loop guard).
    pub(crate) fn new(
        settings: PoolSettings,
        own: OwnAddrs,
        own_connections: OwnConnections,
    ) -> Arc<Self> {
        let pool = Arc::new(Pool {
            settings,
            own,
            own_connections,
            h1_idle: Mutex::default(),
            h2: Mutex::default(),
        });
        tokio::spawn(reap_idle(Arc::downgrade(&pool)));
        pool
    }

    /// Opens a raw TCP connection (opaque TCP, CONNECT and Upgrade tunnels).
    pub(crate) async fn connect_tcp(&self, target: &Target) -> Result<Tracked, ForwardError> {
        let stream = target
            .connect(&self.own, self.settings.connect_timeout)
            .await?;
        Ok(self.own_connections.track(stream))
    }

    /// Sends an HTTP/1 request on a pooled connection (or a new one) and returns the response
    /// with the hand-back that returns the connection once the body is read.
    pub(crate) async fn send_h1(
        self: &Arc<Self>,
        target: &Target,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Checkin), ForwardError> {
        // A pooled connection may have been closed by the upstream just now; hyper then hands
        // the unsent request back and it goes out on a fresh connection instead.
        while let Some(mut tx) = self.checkout_h1(target).await {
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.checkin(target, tx))),
                Err(mut e) => {
                    let unsent = e.take_message();
                    let error = ForwardError::upstream(e.into_error(), unsent.is_some());
                    match unsent {
                        Some(request) if error.is_retryable() => {
                            tracing::debug!(%target, error = %error.with_cause(), "pooled connection failed before the request was sent; sending it on another");
                            req = request;
                        }
                        _ => return Err(error),
                    }
                }
            }
        }
        let mut tx = self.handshake_h1(target, false).await?;
        let resp = tx.send_request(req).await.map_err(sent)?;
        Ok((resp, self.checkin(target, tx)))
    }

    /// Sends an HTTP/1 request that asks for a protocol switch on a dedicated connection,
    /// which is never pooled (after a 101 it belongs to the tunnel).
    pub(crate) async fn send_upgrade(
        &self,
        target: &Target,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, ForwardError> {
        let mut tx = self.handshake_h1(target, true).await?;
        tx.send_request(req).await.map_err(sent)
    }

    /// Sends an HTTP/2 request on the target's shared connection.
    pub(crate) async fn send_h2(
        &self,
        target: &Target,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, ForwardError> {
        let mut tx = self.checkout_h2(target).await?;
        tx.send_request(req).await.map_err(sent)
    }

    fn checkin(self: &Arc<Self>, target: &Target, tx: http1::SendRequest<RequestBody>) -> Checkin {
        Checkin {
            pool: self.clone(),
            target: target.clone(),
            tx,
        }
    }

    async fn checkout_h1(&self, target: &Target) -> Option<http1::SendRequest<RequestBody>> {
        loop {
            let candidate = {
                let mut idle = self.h1_idle.lock().expect("pool lock poisoned");
                // An emptied list stays (the reaper removes it) so that check-in does not
                // allocate a new one each time the pool of a busy target runs dry.
                idle.get_mut(target)?.pop()?
            };
            if candidate.tx.is_closed() || candidate.since.elapsed() > self.settings.idle_timeout {
                continue;
            }
            let mut tx = candidate.tx;
            // The previous response has ended; the connection turns ready as soon as hyper's
            // connection task has seen that, which is immediate or a wake-up away.
            if tx.ready().await.is_ok() {
                return Some(tx);
            }
        }
    }

    async fn handshake_h1(
        &self,
        target: &Target,
        upgrades: bool,
    ) -> Result<http1::SendRequest<RequestBody>, ForwardError> {
        let stream = self.connect_tcp(target).await?;
        let (tx, conn) = http1::Builder::new()
            .preserve_header_case(true)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(unsent)?;
        if upgrades {
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
            });
        } else {
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream connection ended with an error");
                }
            });
        }
        Ok(tx)
    }

    async fn checkout_h2(
        &self,
        target: &Target,
    ) -> Result<http2::SendRequest<RequestBody>, ForwardError> {
        let entry = {
            let mut map = self.h2.lock().expect("pool lock poisoned");
            map.entry(target.clone()).or_default().clone()
        };
        let mut entry = entry.lock().await;
        entry.last_used = Some(Instant::now());
        if let Some(tx) = &entry.tx
            && !tx.is_closed()
        {
            return Ok(tx.clone());
        }
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
        entry.tx = Some(tx.clone());
        Ok(tx)
    }

    /// Closes idle connections past the idle timeout, and forgets closed ones.
    fn reap(&self) {
        let timeout = self.settings.idle_timeout;
        self.h1_idle
            .lock()
            .expect("pool lock poisoned")
            .retain(|_, list| {
                list.retain(|i| !i.tx.is_closed() && i.since.elapsed() <= timeout);
                !list.is_empty()
            });
        self.h2
            .lock()
            .expect("pool lock poisoned")
            .retain(|_, entry| {
                // An entry being connected right now is locked: keep it.
                let Ok(mut e) = entry.try_lock() else {
                    return true;
                };
                let idle = e.last_used.is_none_or(|t| t.elapsed() > timeout);
                if idle || e.tx.as_ref().is_some_and(|tx| tx.is_closed()) {
                    e.tx = None;
                    return Arc::strong_count(entry) > 1;
                }
                true
            });
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
        Some(p) => (p.settings.idle_timeout / 2).max(Duration::from_millis(100)),
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
