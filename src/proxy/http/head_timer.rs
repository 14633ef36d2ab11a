//! The HTTP/1 server's timer: tells a keep-alive connection that is idle from a request head
//! that is slow, so each gets its own limit.
//!
//! hyper has one timeout for both. Its `header_read_timeout` starts whenever a connection begins
//! to wait for a request head (`Conn::poll_read_head`), and a keep-alive connection waits for
//! its next head all the time it sits idle between requests; so the slowloris guard
//! (`--header-read-timeout`, 10 s) also closed idle connections that application pools keep and
//! reuse for 60 s to 20 min (Go 90 s, OkHttp 5 min, the JDK 20 min). A pool that sends on a
//! connection at the moment stitch closes it sees the request fail, and a non-idempotent
//! request is not retried.
//!
//! hyper asks its timer for a sleep exactly when it starts waiting for a head and drops that
//! sleep once the head is parsed, so the timer is where "waiting for a head" is known without
//! any bookkeeping per request. stitch gives hyper `--idle-timeout` as its header-read timeout
//! and [`HeadTimer`] as its timer: the sleep it hands out ends at that idle deadline unless a
//! byte arrives first — the client's read counter (kept by `ProxyIo` in the connection's lease)
//! moved since the sleep began — and from the first such byte the head has
//! `--header-read-timeout` to be complete. Either way hyper closes the connection; nothing of
//! an incomplete head reaches the app.
//!
//! The first head of a connection is complete before hyper sees it (protocol detection holds
//! it to `--header-read-timeout` from accept), so this governs the heads that follow. Bytes of
//! a next head that hyper read ahead while a response was still being written are already in
//! its buffer when the wait starts; that wait is then idle until another byte arrives, which
//! is no more than an idle connection may hold anyway.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};
use tokio::sync::futures::OwnedNotified;

use tokio::sync::Notify;

use crate::proxy::cap::IDLE_ENOUGH;
use crate::proxy::lease::ConnectionLease;

/// The longest timeout handed to hyper or set here: both add it to `Instant::now()`, which
/// panics on overflow, and a flag value like `1000years` must not.
pub(crate) const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// hyper's timer for one HTTP/1 client connection (see the module doc).
#[derive(Debug)]
pub(crate) struct HeadTimer {
    /// The connection's lease, whose read counter shows when the bytes of a head arrive.
    lease: Arc<ConnectionLease>,
    /// How long a head may take from its first byte (`--header-read-timeout`).
    head_timeout: Duration,
    /// The idle timeout hyper was given as its header-read timeout (`--idle-timeout`): its
    /// deadlines are that long after the wait began.
    idle_timeout: Duration,
}

impl HeadTimer {
    /// A timer for the connection `lease` belongs to; a head must be complete `head_timeout`
    /// after its first byte; hyper's deadlines are `idle_timeout` after a wait began.
    pub(crate) fn new(
        lease: Arc<ConnectionLease>,
        head_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        HeadTimer {
            lease,
            head_timeout: head_timeout.min(MAX_IDLE_TIMEOUT),
            idle_timeout: idle_timeout.min(MAX_IDLE_TIMEOUT),
        }
    }
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    /// hyper's HTTP/1 server calls this (only) when it starts waiting for a request head.
    fn sleep_until(&self, idle_deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let idle_deadline = tokio::time::Instant::from_std(idle_deadline);
        // A connection that may be closed for room first sleeps until it has been idle for
        // `IDLE_ENOUGH`, and only then waits for a client at the cap: a connection between
        // two quick requests never registers (nothing but a deadline on the request path).
        let room_check = self.lease.idle_close().is_some().then(|| {
            idle_deadline
                .checked_sub(self.idle_timeout)
                .map_or(idle_deadline, |began| {
                    (began + IDLE_ENOUGH).min(idle_deadline)
                })
        });
        Box::pin(HeadSleep {
            sleep: tokio::time::sleep_until(room_check.unwrap_or(idle_deadline)),
            read_at_start: self.lease.counts().read(),
            idle_deadline: room_check.map(|_| idle_deadline),
            room_wanted: None,
            lease: self.lease.clone(),
            head_timeout: Some(self.head_timeout),
        })
    }

    /// tokio's clock, so that paused-time tests and the sleeps agree.
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

pin_project_lite::pin_project! {
    /// One wait for a request head: idle until a byte arrives, then a head being read.
    struct HeadSleep {
        #[pin]
        sleep: tokio::time::Sleep,
        lease: Arc<ConnectionLease>,
        // The connection's read count when the wait began.
        read_at_start: u64,
        // `Some` while the connection is idle (no byte since the wait began); taken when the
        // first byte moves the deadline to this long from then.
        head_timeout: Option<Duration>,
        // While the sleep runs to the room check (`IDLE_ENOUGH` into the wait): the idle
        // deadline it moves to then.
        idle_deadline: Option<tokio::time::Instant>,
        // From the room check on: woken when a client waits at the connection cap
        // (`proxy::cap`).
        #[pin]
        room_wanted: Option<OwnedNotified>,
    }
}

impl Future for HeadSleep {
    type Output = ();

    /// hyper polls this each time reading the head returns `Pending`, i.e. right after any
    /// bytes that arrived were read: the first poll that sees the counter moved is when the
    /// head started.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if let Some(head_timeout) = *this.head_timeout
            && this.lease.counts().read() != *this.read_at_start
        {
            *this.head_timeout = None;
            *this.idle_deadline = None;
            this.room_wanted.set(None);
            let head_deadline = tokio::time::Instant::now() + head_timeout;
            this.sleep.as_mut().reset(head_deadline);
        }
        loop {
            if let Some(notified) = this.room_wanted.as_mut().as_pin_mut()
                && notified.poll(cx).is_ready()
            {
                tracing::debug!(
                    "closing an idle HTTP/1 keep-alive client connection: a client waits at the connection cap"
                );
                return Poll::Ready(());
            }
            ready!(this.sleep.as_mut().poll(cx));
            // The room check: idle long enough to be closed for a client at the cap.
            match this.idle_deadline.take() {
                Some(idle_deadline) if this.head_timeout.is_some() => {
                    let notify = this.lease.idle_close().cloned();
                    this.room_wanted.set(notify.map(Notify::notified_owned));
                    this.sleep.as_mut().reset(idle_deadline);
                }
                _ => break,
            }
        }
        if this.head_timeout.is_some() {
            tracing::debug!("closing an idle HTTP/1 keep-alive client connection");
        } else {
            tracing::debug!("request head incomplete at the header-read timeout; closing");
        }
        Poll::Ready(())
    }
}

impl Sleep for HeadSleep {}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::sync::Semaphore;

    use super::*;
    use crate::direction::Direction;
    use crate::shutdown::ShutdownHandle;
    use crate::telemetry::Metrics;

    fn timer(head_timeout: Duration) -> (HeadTimer, Arc<ConnectionLease>) {
        let permit = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("a free permit");
        let lease = Arc::new(ConnectionLease::new(
            permit,
            &Metrics::new(),
            Direction::Inbound,
            ShutdownHandle::default(),
        ));
        (
            HeadTimer::new(lease.clone(), head_timeout, Duration::from_secs(3600)),
            lease,
        )
    }

    /// Polls `sleep` once (as hyper does after a read returned `Pending`).
    async fn poll_once(sleep: &mut Pin<Box<dyn Sleep>>) -> bool {
        poll_fn(|cx| Poll::Ready(sleep.as_mut().poll(cx).is_ready())).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_idle_for_a_second_closes_for_room_and_a_shorter_one_does_not() {
        let notify = Arc::new(Notify::new());
        let permit = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("a free permit");
        let lease = Arc::new(
            ConnectionLease::new(
                permit,
                &Metrics::new(),
                Direction::Inbound,
                ShutdownHandle::default(),
            )
            .closed_for_room_by(notify.clone()),
        );
        let idle_timeout = Duration::from_secs(3600);
        let timer = HeadTimer::new(lease, Duration::from_secs(10), idle_timeout);
        let mut sleep = timer.sleep_until(timer.now() + idle_timeout);
        assert!(!poll_once(&mut sleep).await);
        tokio::time::advance(IDLE_ENOUGH / 2).await;
        notify.notify_waiters();
        assert!(!poll_once(&mut sleep).await, "idle for half a second: kept");
        tokio::time::advance(IDLE_ENOUGH).await;
        assert!(
            !poll_once(&mut sleep).await,
            "idle enough, but nobody asked"
        );
        notify.notify_waiters();
        assert!(poll_once(&mut sleep).await, "idle enough and asked: closed");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_wait_ends_at_the_idle_deadline() {
        let (timer, _lease) = timer(Duration::from_secs(10));
        let started = tokio::time::Instant::now();
        let sleep = timer.sleep_until(timer.now() + Duration::from_secs(60));
        sleep.await;
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_gives_the_head_the_header_read_timeout_from_then() {
        let (timer, lease) = timer(Duration::from_secs(10));
        let started = tokio::time::Instant::now();
        let mut sleep = timer.sleep_until(timer.now() + Duration::from_secs(60));
        assert!(!poll_once(&mut sleep).await, "idle: nothing arrived yet");
        tokio::time::sleep(Duration::from_secs(45)).await;
        lease.counts().add_read(1);
        assert!(!poll_once(&mut sleep).await, "a head just started");
        // Later bytes do not move the deadline again.
        tokio::time::sleep(Duration::from_secs(5)).await;
        lease.counts().add_read(1);
        sleep.await;
        assert_eq!(started.elapsed(), Duration::from_secs(55));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_started_near_the_idle_deadline_still_gets_its_full_time() {
        let (timer, lease) = timer(Duration::from_secs(10));
        let started = tokio::time::Instant::now();
        let mut sleep = timer.sleep_until(timer.now() + Duration::from_secs(60));
        assert!(!poll_once(&mut sleep).await);
        tokio::time::sleep(Duration::from_secs(59)).await;
        lease.counts().add_read(3);
        sleep.await;
        assert_eq!(started.elapsed(), Duration::from_secs(69));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_read_before_the_wait_began_do_not_start_a_head() {
        let (timer, lease) = timer(Duration::from_secs(10));
        lease.counts().add_read(500);
        let started = tokio::time::Instant::now();
        let sleep = timer.sleep_until(timer.now() + Duration::from_secs(60));
        sleep.await;
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }
}
