//! What one accepted client connection holds until its socket closes: its `--max-connections`
//! permit, its place in `stitch_open_connections`, the count of its bytes, reported to
//! `stitch_request_bytes_total` / `stitch_response_bytes_total` when the lease is dropped, and
//! the drain it belongs to (its tunnels are spawned there and close at its deadline).
//!
//! The lease travels inside the client's [`super::io::ProxyIo`] (behind an `Arc`, which the
//! byte counters needed anyway), so it lives exactly as long as the socket does, whoever holds
//! it: the connection task, hyper's server connection, or — after a `101` or a `CONNECT` — the
//! tunnel that took the socket over from hyper. A tunnel therefore keeps its permit and its
//! open-connection count, and its bytes are counted, with no bookkeeping of its own.

use std::sync::Arc;

use tokio::sync::{Notify, OwnedSemaphorePermit};

use super::io::ByteCounts;
use crate::direction::Direction;
use crate::shutdown::ShutdownHandle;
use crate::telemetry::{ConnectionGuard, Metrics};

/// A client connection's claim on stitch's capacity and accounting (see the module doc).
#[derive(Debug)]
pub(crate) struct ConnectionLease {
    counts: ByteCounts,
    direction: Direction,
    metrics: Metrics,
    /// Kept here so that a request reaches it through the lease's `Arc` (one count per
    /// connection) rather than cloning it (its cancellation tokens take a lock to clone).
    shutdown: ShutdownHandle,
    /// Its worker's wake-up for idle connections when a client waits at the cap
    /// ([`super::cap`]); `None` for a connection nothing may close early.
    idle_close: Option<Arc<Notify>>,
    _open: ConnectionGuard,
    _permit: OwnedSemaphorePermit,
}

impl ConnectionLease {
    /// Counts the connection as open in `metrics` until the lease is dropped, and holds
    /// `permit` (one of its listener's `--max-connections`) as long; `shutdown` is the drain
    /// the connection belongs to.
    pub(crate) fn new(
        permit: OwnedSemaphorePermit,
        metrics: &Metrics,
        direction: Direction,
        shutdown: ShutdownHandle,
    ) -> Self {
        ConnectionLease {
            counts: ByteCounts::default(),
            direction,
            metrics: metrics.clone(),
            shutdown,
            idle_close: None,
            _open: metrics.connection_opened(direction),
            _permit: permit,
        }
    }

    /// Lets a client waiting at the cap close this connection while it is an idle keep-alive
    /// one ([`super::cap::ConnectionCap::make_room`]); `notify` is its worker's for its
    /// direction.
    pub(crate) fn closed_for_room_by(mut self, notify: Arc<Notify>) -> Self {
        self.idle_close = Some(notify);
        self
    }

    /// The wake-up of [`Self::closed_for_room_by`], if any.
    pub(crate) fn idle_close(&self) -> Option<&Arc<Notify>> {
        self.idle_close.as_ref()
    }

    /// The connection's byte counters (the client's [`super::io::ProxyIo`] adds to them).
    pub(crate) fn counts(&self) -> &ByteCounts {
        &self.counts
    }

    /// The drain the connection belongs to.
    pub(crate) fn shutdown(&self) -> &ShutdownHandle {
        &self.shutdown
    }
}

impl Drop for ConnectionLease {
    fn drop(&mut self) {
        // Every client byte went through the counters exactly once: detection's prefix is
        // replayed through them, and hyper's read-ahead at an upgrade was counted when read.
        let (read, written) = self.counts.get();
        self.metrics
            .bytes_transferred(self.direction, read, written);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::Semaphore;

    use super::*;

    #[test]
    fn the_permit_gauge_and_bytes_are_released_and_reported_at_drop() {
        let metrics = Metrics::new();
        let permits = Arc::new(Semaphore::new(1));
        let permit = permits.clone().try_acquire_owned().expect("a free permit");
        let lease = ConnectionLease::new(
            permit,
            &metrics,
            Direction::Inbound,
            ShutdownHandle::default(),
        );
        lease.counts().add_read(7);
        lease.counts().add_written(11);
        let text = metrics.encode();
        assert!(
            text.contains("stitch_open_connections{direction=\"inbound\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("stitch_request_bytes_total{direction=\"inbound\"} 0"),
            "{text}"
        );
        assert_eq!(permits.available_permits(), 0);
        drop(lease);
        let text = metrics.encode();
        assert!(
            text.contains("stitch_open_connections{direction=\"inbound\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("stitch_request_bytes_total{direction=\"inbound\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("stitch_response_bytes_total{direction=\"inbound\"} 11"),
            "{text}"
        );
        assert_eq!(permits.available_permits(), 1);
    }
}
