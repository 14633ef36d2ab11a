//! A direction's connection cap (`--max-connections`): its permits, shared by every worker,
//! and the way a client waiting at the cap asks idle keep-alive connections to make room.
//!
//! Idle HTTP/1 keep-alive connections live up to `--idle-timeout` (an hour by default, longer
//! than any client pool keeps them) and hold a permit all that time. Under a memory-derived cap
//! (341 per direction in 64 MiB) the pools of a few dozen callers could otherwise fill it with
//! idle connections and keep every new client in the backlog for up to an hour. So, as nginx
//! reuses its idle connections when it runs out, a client accepted at the cap makes the
//! connections of its direction that have been idle for at least [`IDLE_ENOUGH`] close (each
//! waits on its own worker's [`Notify`], so the request path touches nothing another worker
//! writes); busy connections and ones between quick requests are left alone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

/// How long a keep-alive connection must have been idle to be closed for a client waiting at
/// the cap: a pool's connection between two requests of a busy caller is idle for far less,
/// and closing it would race with its next request.
pub(crate) const IDLE_ENOUGH: Duration = Duration::from_secs(1);

/// One direction's cap (see the module doc).
#[derive(Debug)]
pub(crate) struct ConnectionCap {
    permits: Arc<Semaphore>,
    /// One per worker serving this direction, registered when the worker starts.
    idle_close: Mutex<Vec<Arc<Notify>>>,
}

impl ConnectionCap {
    /// A cap of `max` connections at once.
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(ConnectionCap {
            permits: Arc::new(Semaphore::new(max)),
            idle_close: Mutex::new(Vec::new()),
        })
    }

    /// The permits: one per connection, held by its lease until the socket closes.
    pub(crate) fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    /// Registers a worker's wake-up for its idle connections of this direction (once per
    /// worker: a second listener of the same direction registers the same one again, which
    /// is ignored).
    pub(crate) fn register(&self, notify: &Arc<Notify>) {
        let mut all = self
            .idle_close
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !all.iter().any(|n| Arc::ptr_eq(n, notify)) {
            all.push(notify.clone());
        }
    }

    /// Asks the idle keep-alive connections of this direction, on every worker, to close if
    /// they have been idle for [`IDLE_ENOUGH`]. Rare (a client accepted at the cap), so the
    /// lock is never on the request path.
    pub(crate) fn make_room(&self) {
        for notify in self
            .idle_close
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
        {
            notify.notify_waiters();
        }
    }
}
