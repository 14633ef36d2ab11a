//! Serves one client connection, HTTP/1 (stitch's engine) or HTTP/2 (hyper), through the
//! service stack, and
//! ends it gracefully (HTTP/2 GOAWAY, HTTP/1 close after the in-flight response) on shutdown;
//! a connection still open when the drain's deadline passes is closed.
//!
//! Idle connections end differently per protocol. HTTP/1 has no way to say "do not send on
//! this connection any more", so closing an idle keep-alive connection races with a client
//! that reuses it at that moment: `--idle-timeout` is long (longer than the pools of common
//! HTTP clients) and separate from the head deadline (see [`h1::server`]). HTTP/2 says it
//! with GOAWAY — a stream the client opened meanwhile is refused unprocessed and retried
//! safely (RFC 9113 §6.8) — so `--h2-idle-timeout` can be shorter.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tower::Layer;
use tower::util::MapRequest;

use super::body::WireBody;
use super::forward::Forward;
use crate::proxy::h1;
use crate::proxy::h1::server::ServerSettings;
use crate::proxy::io::ByteCounts;
use crate::proxy::lease::ConnectionLease;
use crate::shutdown::ShutdownHandle;
use crate::trace::TraceLayer;

/// The longest timeout set on a connection: deadlines add it to `Instant::now()`, which
/// panics on overflow, and a flag value like `1000years` must not.
pub(crate) const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Per-connection limits of the HTTP server side.
#[derive(Debug, Clone)]
pub(crate) struct ServerLimits {
    /// Deadline for a complete request head, from its first byte (the first head: from accept).
    pub header_read_timeout: Duration,
    /// An HTTP/1 keep-alive client connection waiting this long for its next request with no
    /// byte of it arriving is closed.
    pub idle_timeout: Duration,
    /// Largest request head, bytes.
    pub max_header_bytes: usize,
    /// Most header fields per request.
    pub max_headers: usize,
    /// HTTP/2 streams open at once per connection.
    pub h2_max_concurrent_streams: u32,
    /// An HTTP/2 client connection with no bytes either way for this long is sent GOAWAY
    /// (streams still open may finish). HTTP/1 idle connections end by `idle_timeout`.
    pub h2_idle_timeout: Duration,
}

/// Serves HTTP/1 on `io` with stitch's own engine ([`h1::server::serve`]) until the client
/// leaves, stays idle past the idle timeout, stalls in a head past the header-read timeout,
/// or shutdown ends the connection. `prefix` is what protocol detection read (already counted
/// in `lease`); the first head must be complete by `first_head_deadline` (accept plus
/// `--header-read-timeout`). The engine counts the requests it refuses itself (in the
/// settings' metrics); how the connection ended goes to [`log_http1_end`]; an idle
/// connection may come back to be parked ([`h1::server::Parking`]). Not an
/// `async fn`, so that the connection task holds the engine's future and nothing around it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn serve_http1<'a, I>(
    io: I,
    prefix: Bytes,
    lease: &'a Arc<ConnectionLease>,
    trace: TraceLayer,
    forward: Forward,
    settings: &'a ServerSettings,
    shutdown: &'a ShutdownHandle,
    first_head_deadline: Instant,
) -> impl Future<Output = Result<Option<h1::server::Parking<I>>, h1::error::Error>> + 'a
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service = MapRequest::new(
        trace.layer(forward),
        |req: Request<h1::incoming::Incoming>| req.map(WireBody::Http1),
    );
    h1::server::serve(
        io,
        prefix,
        service,
        settings,
        shutdown,
        Some(lease),
        first_head_deadline,
    )
}

/// Logs (debug) how an HTTP/1 connection served by [`serve_http1`] ended, when with an error.
pub(crate) fn log_http1_end<T>(served: Result<T, h1::error::Error>) {
    if let Err(e) = served {
        let answered = e.refused_with().map(|s| s.as_u16());
        tracing::debug!(error = %e, ?answered, "HTTP/1 connection ended with an error");
    }
}

/// Serves HTTP/2 (prior knowledge) on `io`; on shutdown sends GOAWAY and lets open streams end.
///
/// The connection's state lives in a box of its own. A connection task is as large as the
/// largest thing it may await, and h2's connection state is much larger than hyper's HTTP/1
/// one: inline, every HTTP/1 and opaque connection would carry HTTP/2's size for its life.
pub(crate) async fn serve_http2<I>(
    io: I,
    activity: &ByteCounts,
    trace: TraceLayer,
    forward: Forward,
    limits: &ServerLimits,
    shutdown: &ShutdownHandle,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Box::pin(serve_http2_boxed(
        io, activity, trace, forward, limits, shutdown,
    ))
    .await;
}

/// [`serve_http2`]'s body, polled behind its box.
async fn serve_http2_boxed<I>(
    io: I,
    activity: &ByteCounts,
    trace: TraceLayer,
    forward: Forward,
    limits: &ServerLimits,
    shutdown: &ShutdownHandle,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = MapRequest::new(
        trace.layer(forward),
        |req: Request<hyper::body::Incoming>| req.map(WireBody::Http2),
    );
    let service = TowerToHyperService::new(service);
    let conn = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .auto_date_header(false)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let idle = limits.h2_idle_timeout;
    let mut check = tokio::time::interval((idle / 4).max(Duration::from_millis(10)));
    check.tick().await;
    let mut last = (activity.get(), tokio::time::Instant::now());
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = shutdown.triggered() => {
                conn.as_mut().graceful_shutdown();
                break until_deadline(conn, shutdown).await;
            }
            _ = check.tick() => {
                let now = activity.get();
                if now != last.0 {
                    last = (now, tokio::time::Instant::now());
                } else if last.1.elapsed() >= idle {
                    tracing::debug!(?idle, "closing an idle HTTP/2 client connection");
                    conn.as_mut().graceful_shutdown();
                    break conn.await;
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP/2 connection ended with an error");
    }
}

/// Lets a connection that was asked to shut down gracefully finish, until the drain's deadline
/// at the latest (then it is dropped, which closes it).
async fn until_deadline<F: Future<Output = hyper::Result<()>>>(
    conn: F,
    shutdown: &ShutdownHandle,
) -> hyper::Result<()> {
    tokio::select! {
        r = conn => r,
        _ = shutdown.deadline_passed() => {
            tracing::debug!("closing a client connection at the drain deadline");
            Ok(())
        }
    }
}
