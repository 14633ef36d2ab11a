//! Retries of one export: exponential backoff with jitter, the collector's throttling hints
//! honoured, the whole bounded by the export timeout — the behaviour `opentelemetry-otlp`'s
//! exporter had (its `retry_with_backoff` and error classification, OTLP specification
//! "Failures"), kept when stitch started encoding and sending batches itself.

use std::future::Future;
use std::time::{Duration, Instant};

use super::config::ExportConfig;

/// A throttle delay from the collector is capped here, so a misbehaving one cannot stall
/// the export thread.
const MAX_THROTTLE: Duration = Duration::from_secs(30);
/// The jitter added to each backoff delay, at most.
const MAX_JITTER: Duration = Duration::from_millis(100);
/// A `Retry-After` or `RetryInfo` delay is capped at this before use.
const MAX_SERVER_DELAY: Duration = Duration::from_secs(600);

/// Whether a failed attempt may be repeated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Retry {
    /// Not again (a bad request, an authentication failure).
    Never,
    /// Again after the backoff delay (server errors, network errors, timeouts).
    Backoff,
    /// Again after at least this long (the collector asked for it).
    Throttled(Duration),
}

impl Retry {
    /// OTLP/HTTP's rule: 429 and 503 (with `Retry-After` in seconds as the delay), 502, 504
    /// and no response at all are retried; every other status is not.
    pub(crate) fn for_http(status: Option<u16>, retry_after: Option<&str>) -> Retry {
        match status {
            None | Some(502 | 504) => Retry::Backoff,
            Some(429 | 503) => retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(Retry::Backoff, |s| {
                    Retry::Throttled(Duration::from_secs(s).min(MAX_SERVER_DELAY))
                }),
            Some(_) => Retry::Never,
        }
    }

    /// OTLP/gRPC's rule; `retry_delay` is the `RetryInfo` detail, if the status carried one.
    pub(crate) fn for_grpc(code: tonic::Code, retry_delay: Option<Duration>) -> Retry {
        use tonic::Code;
        match code {
            Code::ResourceExhausted => {
                retry_delay.map_or(Retry::Never, |d| Retry::Throttled(d.min(MAX_SERVER_DELAY)))
            }
            Code::Unavailable => match retry_delay.filter(|d| !d.is_zero()) {
                Some(d) => Retry::Throttled(d.min(MAX_SERVER_DELAY)),
                None => Retry::Backoff,
            },
            Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::DataLoss => Retry::Backoff,
            _ => Retry::Never,
        }
    }
}

/// The retry settings of an export configuration.
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    max_retries: usize,
    initial_delay: Duration,
    max_delay: Duration,
    /// All attempts and the waits between them end within this (the export timeout).
    deadline: Duration,
}

impl RetryPolicy {
    /// The policy `export` asks for.
    pub(crate) fn new(export: &ExportConfig) -> Self {
        RetryPolicy {
            max_retries: export.max_retries,
            initial_delay: export.initial_backoff,
            max_delay: export.max_backoff,
            deadline: export.timeout,
        }
    }

    /// Runs `attempt` until it succeeds, says not to retry, the retries are used up or the
    /// next wait would pass the deadline; returns the last error.
    pub(crate) async fn run<F, Fut, E>(&self, mut attempt: F) -> Result<(), E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), (E, Retry)>>,
    {
        let start = Instant::now();
        let (mut delay, mut cap) = (self.initial_delay, self.max_delay);
        let mut retries = 0;
        loop {
            let (error, retry) = match attempt().await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            if start.elapsed() >= self.deadline || retries >= self.max_retries {
                return Err(error);
            }
            match retry {
                Retry::Never => return Err(error),
                Retry::Backoff => {}
                Retry::Throttled(asked) => {
                    let asked = asked.min(MAX_THROTTLE);
                    // A delay above the configured cap raises the cap, so repeated throttles
                    // keep growing instead of sticking at the server's value.
                    if asked > cap {
                        cap = MAX_THROTTLE;
                    }
                    delay = delay.max(asked);
                }
            }
            retries += 1;
            let wait = delay.saturating_add(jitter()).min(cap);
            if wait >= self.deadline.saturating_sub(start.elapsed()) {
                return Err(error);
            }
            tokio::time::sleep(wait).await;
            delay = delay.saturating_mul(2).min(cap);
        }
    }
}

fn jitter() -> Duration {
    let max = u64::try_from(MAX_JITTER.as_millis()).unwrap_or(0);
    Duration::from_millis(rand::random_range(0..=max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn classification_follows_the_otlp_rules() {
        assert_eq!(Retry::for_http(None, None), Retry::Backoff);
        assert_eq!(Retry::for_http(Some(502), None), Retry::Backoff);
        assert_eq!(
            Retry::for_http(Some(429), Some(" 3 ")),
            Retry::Throttled(Duration::from_secs(3))
        );
        assert_eq!(Retry::for_http(Some(503), Some("soon")), Retry::Backoff);
        assert_eq!(Retry::for_http(Some(400), None), Retry::Never);
        assert_eq!(Retry::for_http(Some(401), Some("1")), Retry::Never);
        assert_eq!(
            Retry::for_grpc(tonic::Code::Unavailable, None),
            Retry::Backoff
        );
        assert_eq!(
            Retry::for_grpc(tonic::Code::ResourceExhausted, None),
            Retry::Never
        );
        assert_eq!(
            Retry::for_grpc(tonic::Code::ResourceExhausted, Some(Duration::from_secs(2))),
            Retry::Throttled(Duration::from_secs(2))
        );
        assert_eq!(
            Retry::for_grpc(tonic::Code::Unauthenticated, None),
            Retry::Never
        );
    }

    fn policy(max_retries: usize) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1600),
            deadline: Duration::from_secs(10),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_up_to_the_limit_then_gives_up() {
        let calls = AtomicUsize::new(0);
        let result = policy(3)
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(("down", Retry::Backoff))
            })
            .await;
        assert_eq!(result, Err("down"));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4,
            "the first try and 3 retries"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_once_when_told_and_succeeds_after_a_retry() {
        let calls = AtomicUsize::new(0);
        let never = policy(3)
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(("bad request", Retry::Never))
            })
            .await;
        assert_eq!(never, Err("bad request"));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicUsize::new(0);
        let ok = policy(3)
            .run(|| async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(("busy", Retry::Throttled(Duration::from_secs(1)))),
                    _ => Ok(()),
                }
            })
            .await;
        assert_eq!(ok, Ok(()));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_is_not_started() {
        let calls = AtomicUsize::new(0);
        let result = policy(5)
            .run(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(("busy", Retry::Throttled(Duration::from_secs(20))))
            })
            .await;
        assert_eq!(result, Err("busy"));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "20 s > the 10 s deadline");
    }
}
