//! Graceful shutdown, owned by one small type (after mini-redis's `shutdown.rs`): a signal that
//! fans out to every long-lived task, and a tracker that knows when they have all finished.
//!
//! Whoever starts a task that must finish before stitch exits — an accept loop, a client
//! connection, the admin server — spawns it with [`ShutdownHandle::spawn`] and has it stop
//! (or wind down gracefully) once `ShutdownHandle::triggered` resolves; the owner then
//! [`ShutdownHandle::drain`]s. Tasks that end by themselves when their owner goes are spawned
//! plainly: an upstream connection's driver ends with its last sender, the pool's reaper with
//! the pool, and waiting for an idle pooled connection would hold the drain for nothing.
//! CONNECT and Upgrade tunnels and opaque relays are tracked, and have no end of their own a
//! drain could wait for: they also watch `ShutdownHandle::deadline_passed` and close when
//! the drain gives up, as do HTTP connections still busy then, so stitch leaves nothing
//! serving after its drain (an embedding runtime may outlive `run`).
//!
//! A leaf: the proxy, the admin server and the process wiring all take it, and it imports
//! nothing of stitch's.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pin_project_lite::pin_project;

use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::TaskTracker;

/// Triggers and observes shutdown, and tracks the tasks a drain waits for. Cloning shares the
/// same signal and tracker (clones go to every worker, listener and connection).
#[derive(Debug, Clone, Default)]
pub struct ShutdownHandle {
    token: CancellationToken,
    /// Cancelled when a drain's deadline passes with tasks still running.
    deadline: CancellationToken,
    tracker: TaskTracker,
}

impl ShutdownHandle {
    /// Starts graceful shutdown: listeners stop accepting, in-flight requests drain.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Resolves once shutdown was triggered.
    pub(crate) fn triggered(&self) -> Cancelled<'_> {
        Cancelled::new(&self.token)
    }

    /// Resolves once a drain gave up on its deadline: tasks that would otherwise run on
    /// (byte tunnels) close now.
    pub(crate) fn deadline_passed(&self) -> Cancelled<'_> {
        Cancelled::new(&self.deadline)
    }

    /// Whether shutdown was triggered (tests of the endpoints that trigger it).
    #[cfg(test)]
    pub(crate) fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Spawns `task` on the current runtime, tracked: [`ShutdownHandle::drain`] waits for it.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Waits until every tracked task has finished, at most `deadline`; `false` when the
    /// deadline passed first: then `ShutdownHandle::deadline_passed` resolves, so tunnels
    /// close, and what is left ends with the runtime. Call it after
    /// [`ShutdownHandle::trigger`]: tracked tasks that never stop would hold it to the deadline.
    pub async fn drain(&self, deadline: Duration) -> bool {
        self.tracker.close();
        let drained = tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok();
        if !drained {
            self.deadline.cancel();
        }
        drained
    }

    /// Triggers shutdown on the first SIGTERM or SIGINT (spawns a watcher task, untracked: it
    /// is what starts the drain).
    pub(crate) fn trigger_on_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received; draining");
            this.trigger();
        });
    }
}

pin_project! {
    /// A token's cancellation as a future that is cheap to poll again. Connections select on
    /// it beside their I/O, so it is polled on every wake-up of their task; the token's own
    /// future takes a lock on each poll while it waits (about 140 instructions, three or four
    /// times per proxied request). This one waits in the token's list once and, polled again
    /// by the same task, only reads the token's flag.
    #[must_use = "futures do nothing unless polled"]
    pub(crate) struct Cancelled<'a> {
        token: &'a CancellationToken,
        #[pin]
        wait: WaitForCancellationFuture<'a>,
        // The waker the token will wake, once waiting.
        waiting_with: Option<Waker>,
    }
}

impl<'a> Cancelled<'a> {
    fn new(token: &'a CancellationToken) -> Self {
        Cancelled {
            token,
            wait: token.cancelled(),
            waiting_with: None,
        }
    }
}

impl Future for Cancelled<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        // `cancel` sets the flag before it wakes the waiters.
        if this.token.is_cancelled() {
            return Poll::Ready(());
        }
        if this
            .waiting_with
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let polled = this.wait.poll(cx);
        *this.waiting_with = Some(cx.waker().clone());
        polled
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop stitch with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    /// A waker that counts its wake-ups.
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Counter>, Waker) {
        let count = Arc::new(Counter(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn a_watch_polled_again_by_its_task_waits_and_wakes_it_on_trigger() {
        let shutdown = ShutdownHandle::default();
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut watch = std::pin::pin!(shutdown.triggered());
        for _ in 0..3 {
            assert!(watch.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        shutdown.trigger();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            1,
            "the trigger wakes the task"
        );
        assert!(watch.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_watch_polled_by_another_waker_wakes_that_one() {
        let shutdown = ShutdownHandle::default();
        let (first, first_waker) = counter();
        let (second, second_waker) = counter();
        let mut watch = std::pin::pin!(shutdown.deadline_passed());
        assert!(
            watch
                .as_mut()
                .poll(&mut Context::from_waker(&first_waker))
                .is_pending()
        );
        assert!(
            watch
                .as_mut()
                .poll(&mut Context::from_waker(&second_waker))
                .is_pending()
        );
        shutdown.deadline.cancel();
        assert_eq!(
            second.0.load(Ordering::SeqCst),
            1,
            "the latest waker is woken"
        );
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert!(
            watch
                .as_mut()
                .poll(&mut Context::from_waker(&second_waker))
                .is_ready()
        );
    }

    #[tokio::test]
    async fn drain_waits_for_tracked_tasks_that_stop_on_the_signal() {
        let shutdown = ShutdownHandle::default();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let worker = shutdown.clone();
        shutdown.spawn(async move {
            worker.triggered().await;
            let _ = done_tx.send(());
        });
        shutdown.trigger();
        assert!(shutdown.drain(Duration::from_secs(15)).await, "drained");
        assert!(
            done_rx.await.is_ok(),
            "the task saw the signal and finished"
        );
    }

    #[tokio::test]
    async fn drain_gives_up_at_the_deadline() {
        let shutdown = ShutdownHandle::default();
        shutdown.spawn(std::future::pending::<()>());
        shutdown.trigger();
        assert!(
            !shutdown.drain(Duration::from_millis(20)).await,
            "a task that never stops is given up on"
        );
    }

    #[tokio::test]
    async fn tasks_watching_the_deadline_end_when_the_drain_gives_up() {
        let shutdown = ShutdownHandle::default();
        let tunnel = shutdown.clone();
        let task = shutdown.spawn(async move { tunnel.deadline_passed().await });
        shutdown.trigger();
        assert!(
            !shutdown.drain(Duration::from_millis(20)).await,
            "the tunnel outlives the deadline"
        );
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("the tunnel ends once the deadline passed")
            .expect("task");
    }

    #[tokio::test]
    async fn a_drain_that_finishes_in_time_passes_no_deadline() {
        let shutdown = ShutdownHandle::default();
        shutdown.trigger();
        assert!(
            shutdown.drain(Duration::from_secs(15)).await,
            "nothing to wait for"
        );
        assert!(!shutdown.deadline.is_cancelled());
    }
}
