//! The admin server's connections: bounded, timed out when idle, never a busy loop.
//!
//! The admin port is reachable from the whole cluster, so it is guarded like a public
//! server, with limits of its own (the proxy's do not apply here):
//!
//! - at most [`AdminLimits::max_connections`] connections; when a new one arrives at the cap,
//!   the connection idle the longest (no request in flight for at least [`EVICTION_GRACE`])
//!   is closed to make room — the way nginx reuses keep-alive connections when it runs out —
//!   so a crowd of idle or silent clients can never lock out a kubelet probe or a scrape;
//! - a connection with no request in flight is closed [`AdminLimits::idle_timeout`] after its
//!   last request (or after accept, for a client that never sends one), and an HTTP/1 head
//!   must arrive within the same time;
//! - accept errors back off (doubling from [`BACKOFF_MIN`] to [`BACKOFF_MAX`], logged at most
//!   once per [`LOG_EVERY`]) instead of retrying at once; when file descriptors run out, the
//!   idlest admin connection is closed first, so a probe can still get through;
//! - HTTP/2 streams per connection and head sizes are capped; `POST /v1/traces` bodies are
//!   capped before and after decompression ([`super::otlp`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use super::AdminState;
use crate::shutdown::ShutdownHandle;

/// First pause after a failed accept.
const BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause between accept attempts while they keep failing.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one warning per this long about failing accepts.
const LOG_EVERY: Duration = Duration::from_secs(1);
/// A connection is evicted only after idling this long: a client's request may be in its
/// socket buffer, unread, just after accept (a kubelet probe sends it at once).
const EVICTION_GRACE: Duration = Duration::from_millis(250);
/// Largest request head (HTTP/1 buffer, HTTP/2 header list): the admin endpoints take short
/// URLs and a few headers.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The admin server's own limits (the proxy's flags do not apply to it).
#[derive(Debug, Clone)]
pub struct AdminLimits {
    /// Most connections open at once; at the cap the idlest one makes room for a new one.
    pub max_connections: usize,
    /// A connection with no request in flight is closed this long after its last request (or
    /// accept); also the HTTP/1 header-read timeout.
    pub idle_timeout: Duration,
    /// HTTP/2 streams one connection may have open at once.
    pub h2_max_concurrent_streams: u32,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            // Probes, a scraper and a few port-forwards need a handful; a central collector
            // receiving OTLP from many instances keeps one per sender, and idle ones rotate.
            max_connections: 256,
            idle_timeout: Duration::from_secs(10),
            h2_max_concurrent_streams: 16,
        }
    }
}

/// Serves the admin endpoints on `listener` until shutdown.
pub(super) async fn accept_loop(
    listener: TcpListener,
    state: AdminState,
    shutdown: ShutdownHandle,
) {
    let limits = state.limits.clone();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let open = Arc::new(OpenConnections::default());
    let builder = Arc::new(builder(&limits));
    let mut backoff = BACKOFF_MIN;
    // When a failed accept was last logged, and how many failed since without a log line.
    let (mut warned_at, mut unlogged): (Option<Instant>, u64) = (None, 0);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.triggered() => return,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => {
                backoff = BACKOFF_MIN;
                conn
            }
            // The client gave up before it was accepted: nothing is wrong with the listener.
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                let freed = is_out_of_descriptors(&e) && open.evict_idlest();
                // At most one line a second, however the failures come (a long outage, or a
                // listener flapping between failing and working).
                let now = Instant::now();
                if warned_at.is_none_or(|at| now.duration_since(at) >= LOG_EVERY) {
                    tracing::warn!(error = %e, freed, pause = ?backoff, unlogged, "admin accept failed; backing off");
                    (warned_at, unlogged) = (Some(now), 0);
                } else {
                    unlogged += 1;
                    tracing::debug!(error = %e, freed, "admin accept failed again");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.triggered() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        // At the cap the idlest connection makes room; while none has been idle long enough,
        // wait for one to end or to become evictable.
        let permit = loop {
            if let Ok(permit) = permits.clone().try_acquire_owned() {
                break permit;
            }
            let evicted = open.evict_idlest();
            tokio::select! {
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(p) => break p,
                    Err(_) => return,
                },
                _ = tokio::time::sleep(EVICTION_GRACE / 2), if !evicted => {}
                _ = shutdown.triggered() => return,
            }
        };
        let conn = open.register();
        let (state, builder, limits) = (state.clone(), builder.clone(), limits.clone());
        // Tracked like every long-lived task, though nobody drains the admin server: it stops
        // after the proxy has drained, and a scraper's keep-alive connection ends with the
        // process.
        shutdown.spawn(async move {
            serve_connection(stream, peer, state, &builder, &limits, &conn).await;
            drop(permit);
        });
    }
}

fn builder(limits: &AdminLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    builder
}

/// One admin connection, until the client leaves, it idles out, or it is evicted.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: AdminState,
    builder: &auto::Builder<TokioExecutor>,
    limits: &AdminLimits,
    conn: &Registered,
) {
    let activity = conn.activity.clone();
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        let active = Active::begin(&activity);
        async move {
            let response = super::route(&state, req, peer).await;
            Ok::<_, Infallible>(response.map(|body| ActiveBody {
                body,
                _active: active,
            }))
        }
    });
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let activity = &conn.activity;
    let mut closing = false;
    let result = loop {
        let idle_until = activity.idle_deadline(limits.idle_timeout);
        tokio::select! {
            result = connection.as_mut() => break result,
            _ = activity.evict.notified(), if !closing => {
                if activity.is_idle() {
                    return;
                }
                // A request arrived since it was chosen: let it finish, then close.
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep_until(idle_until), if !closing => {
                if activity.idle_for(limits.idle_timeout) {
                    tracing::trace!(%peer, "closing an idle admin connection");
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
}

/// What the accept loop knows of one connection.
#[derive(Debug)]
struct Activity {
    /// Requests whose response has not been written completely yet.
    in_flight: AtomicUsize,
    /// Milliseconds after `epoch` of the last request start or response end (or accept).
    last_active_ms: AtomicU64,
    epoch: Instant,
    /// Chosen for eviction already (so it is not chosen twice).
    evicted: AtomicBool,
    evict: Notify,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    fn last_active(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed))
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    fn idle_deadline(&self, idle: Duration) -> Instant {
        self.last_active() + idle
    }

    fn idle_for(&self, idle: Duration) -> bool {
        self.is_idle() && self.last_active().elapsed() >= idle
    }
}

/// Marks a request in flight on its connection until its response body is dropped (hyper
/// drops it once written, or when the connection ends).
#[derive(Debug)]
struct Active(Arc<Activity>);

impl Active {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.touch();
        Active(activity.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until it is written.
#[derive(Debug)]
pub(super) struct ActiveBody {
    body: Full<Bytes>,
    _active: Active,
}

impl Body for ActiveBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The open connections, for choosing which one to evict.
#[derive(Debug)]
struct OpenConnections {
    epoch: Instant,
    next_id: AtomicU64,
    by_id: Mutex<HashMap<u64, Arc<Activity>>>,
}

impl Default for OpenConnections {
    fn default() -> Self {
        OpenConnections {
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            by_id: Mutex::default(),
        }
    }
}

/// A connection's entry; removed when the connection task ends.
struct Registered {
    id: u64,
    activity: Arc<Activity>,
    open: Arc<OpenConnections>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.open.entries().remove(&self.id);
    }
}

impl OpenConnections {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        // The map stays consistent whatever panicked while holding it.
        self.by_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn register(self: &Arc<Self>) -> Registered {
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            epoch: self.epoch,
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        });
        activity.touch();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.entries().insert(id, activity.clone());
        Registered {
            id,
            activity,
            open: self.clone(),
        }
    }

    /// Closes the connection idle the longest (no request in flight, for at least
    /// [`EVICTION_GRACE`]); `false` when none is. A linear scan: it runs only at the cap or
    /// out of descriptors, over at most `max_connections` entries.
    fn evict_idlest(&self) -> bool {
        let entries = self.entries();
        // Ties (the same millisecond) go to the connection accepted first.
        let idlest = entries
            .iter()
            .filter(|(_, a)| a.idle_for(EVICTION_GRACE) && !a.evicted.load(Ordering::Relaxed))
            .min_by_key(|(id, a)| (a.last_active_ms.load(Ordering::Relaxed), **id));
        let Some((_, activity)) = idlest else {
            return false;
        };
        activity.evicted.store(true, Ordering::Relaxed);
        activity.evict.notify_one();
        true
    }
}

/// Errors that concern the one connection being accepted, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// EMFILE / ENFILE: the process (or the system) is out of file descriptors.
fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_idlest_connection_without_a_request_in_flight_is_evicted() {
        let open = Arc::new(OpenConnections::default());
        let oldest = open.register();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let busy_but_old = open.register();
        let _request = Active::begin(&busy_but_old.activity);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let newest = open.register();
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Make the first one the most recently active: the newest idle one is now the idlest.
        drop(Active::begin(&oldest.activity));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(open.evict_idlest());
        assert!(newest.activity.evicted.load(Ordering::Relaxed));
        assert!(!busy_but_old.activity.evicted.load(Ordering::Relaxed));
        assert!(open.evict_idlest());
        assert!(oldest.activity.evicted.load(Ordering::Relaxed));
        // Only the busy one is left: nothing to evict.
        assert!(!open.evict_idlest());
        drop(newest);
        assert_eq!(open.entries().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_just_accepted_is_not_evicted_before_it_could_ask() {
        let open = Arc::new(OpenConnections::default());
        let fresh = open.register();
        assert!(
            !open.evict_idlest(),
            "its request may be unread in the socket"
        );
        tokio::time::sleep(EVICTION_GRACE).await;
        assert!(open.evict_idlest());
        assert!(fresh.activity.evicted.load(Ordering::Relaxed));
    }

    #[tokio::test(start_paused = true)]
    async fn idleness_counts_from_the_end_of_the_last_response() {
        let open = Arc::new(OpenConnections::default());
        let conn = open.register();
        let idle = Duration::from_secs(10);
        let request = Active::begin(&conn.activity);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(
            !conn.activity.idle_for(idle),
            "a slow response is not idleness"
        );
        drop(request);
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!conn.activity.idle_for(idle));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(conn.activity.idle_for(idle));
    }

    #[test]
    fn descriptor_exhaustion_is_told_from_a_client_giving_up() {
        assert!(is_out_of_descriptors(&io::Error::from_raw_os_error(24)));
        assert!(is_out_of_descriptors(&io::Error::from_raw_os_error(23)));
        assert!(!is_out_of_descriptors(&io::Error::from_raw_os_error(103)));
        assert!(is_per_connection(&io::Error::from_raw_os_error(103)));
    }
}
