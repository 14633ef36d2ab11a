//! How a proxy accept loop waits after a failed accept.
//!
//! A sidecar never stops accepting, but retrying a failing `accept` at once is a busy loop:
//! out of file descriptors (`EMFILE`) the pending connection stays in the backlog and every
//! retry fails the same way. The pause doubles from [`BACKOFF_MIN`] to [`BACKOFF_MAX`] while
//! accepts keep failing and starts over after the next success, so a short hiccup costs
//! milliseconds and a long one costs one attempt a second. The failure is logged at most once
//! per [`LOG_EVERY`] (with how many were not), so a long one does not flood the log.
//! Errors that concern only the connection being accepted (the client gave up) are not
//! failures of the listener and are retried at once.

use std::io;
use std::time::Duration;

use tokio::time::Instant;

/// First pause after a failed accept.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause between accept attempts while they keep failing.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one log line per this long about failing accepts.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(1);

/// The back-off state of one accept loop.
#[derive(Debug)]
pub(crate) struct AcceptBackoff {
    /// The pause after the next failure.
    next: Duration,
    /// When a failure was last logged.
    logged_at: Option<Instant>,
    /// Failures since then that were not logged.
    unlogged: u64,
}

/// What to do about one failed accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pause {
    /// How long to wait before accepting again.
    pub duration: Duration,
    /// `Some(n)`: log this failure, saying that `n` failures before it were not logged.
    pub log: Option<u64>,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff {
            next: BACKOFF_MIN,
            logged_at: None,
            unlogged: 0,
        }
    }
}

impl AcceptBackoff {
    /// A failed accept at `now`: how long to pause and whether to log it.
    pub(crate) fn failed(&mut self, now: Instant) -> Pause {
        let duration = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let log = match self.logged_at {
            Some(at) if now.saturating_duration_since(at) < LOG_EVERY => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.logged_at = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        };
        Pause { duration, log }
    }

    /// A successful accept: the next failure starts from the shortest pause again.
    #[inline]
    pub(crate) fn succeeded(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// Errors that concern the one connection being accepted (the client reset or gave up), not
/// the listener: retried at once.
pub(crate) fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_pause_doubles_from_5_ms_to_1_s_and_starts_over_after_a_success() {
        let mut backoff = AcceptBackoff::default();
        let now = Instant::now();
        let pauses: Vec<_> = (0..12).map(|_| backoff.failed(now).duration).collect();
        assert_eq!(
            pauses,
            [
                ms(5),
                ms(10),
                ms(20),
                ms(40),
                ms(80),
                ms(160),
                ms(320),
                ms(640),
                ms(1000),
                ms(1000),
                ms(1000),
                ms(1000)
            ]
        );
        backoff.succeeded();
        assert_eq!(backoff.failed(now).duration, ms(5));
        assert_eq!(backoff.failed(now).duration, ms(10));
    }

    #[test]
    fn failures_are_logged_at_most_once_a_second_with_the_count_left_out() {
        let mut backoff = AcceptBackoff::default();
        let t0 = Instant::now();
        assert_eq!(backoff.failed(t0).log, Some(0), "the first one is logged");
        for at in [5, 15, 35, 75, 155, 315, 635] {
            assert_eq!(backoff.failed(t0 + ms(at)).log, None, "at {at} ms");
        }
        assert_eq!(
            backoff.failed(t0 + ms(1000)).log,
            Some(7),
            "a second later, with the seven in between"
        );
        assert_eq!(backoff.failed(t0 + ms(1500)).log, None);
        // A success does not reset the log's pace: a listener flapping between failing and
        // working still logs at most once a second.
        backoff.succeeded();
        assert_eq!(backoff.failed(t0 + ms(1600)).log, None);
        assert_eq!(backoff.failed(t0 + ms(2000)).log, Some(2));
    }

    #[test]
    fn a_client_giving_up_is_not_a_listener_failure() {
        assert!(is_per_connection(&io::Error::from(
            io::ErrorKind::ConnectionAborted
        )));
        assert!(!is_per_connection(&io::Error::from_raw_os_error(24)));
        assert!(!is_per_connection(&io::Error::from_raw_os_error(23)));
    }
}
