//! Propagation health over time, for people without Prometheus: the `stitch_propagation_*`
//! counters `/metrics` exposes, since start and over the last minutes.
//!
//! A task beside the admin server reads the registry's exposition text — exactly what a
//! scraper reads — every [`SAMPLE_EVERY`] and keeps the propagation counters in a short
//! history: at most [`KEEP`] snapshots of at most [`MAX_SERIES`] series, so five minutes
//! cost a few kilobytes. The request path never sees any of it. `/health` reads the
//! counters once more when asked and subtracts the snapshot of a minute (or five) ago.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use super::{AdminState, json, wants_html};
use crate::shutdown::ShutdownHandle;
use crate::telemetry::Metrics;

/// How often the counters are sampled.
pub(super) const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Snapshots kept: five minutes of samples plus the one they start from.
pub(super) const KEEP: usize = 31;
/// Most series kept per snapshot (the labels are bounded; this bounds them again).
pub(super) const MAX_SERIES: usize = 512;
/// The windows `/health` shows besides "since start".
pub(super) const WINDOWS: [Duration; 2] = [Duration::from_secs(60), Duration::from_secs(300)];

/// One counter series: metric name (with `_total`) and its labels in exposition order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Series {
    /// `stitch_propagation_requests_total`, …
    pub(super) metric: String,
    /// `(name, value)` pairs.
    pub(super) labels: Vec<(String, String)>,
}

impl Series {
    /// The value of label `name` (empty when absent).
    pub(super) fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Counter values at one moment.
pub(super) type Counts = BTreeMap<Series, u64>;

/// The sampled history, shared by the sampler and `/health`.
#[derive(Debug, Clone, Default)]
pub(super) struct History {
    inner: Arc<Mutex<Samples>>,
}

#[derive(Debug, Default)]
struct Samples {
    /// When the first sample was taken.
    first: Option<Instant>,
    snapshots: VecDeque<(Instant, Counts)>,
}

/// One series as `/health` shows it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Row {
    /// The series.
    pub(super) series: Series,
    /// The count since start.
    pub(super) total: u64,
    /// The count in each of [`WINDOWS`] (or in the part of it the history covers).
    pub(super) windows: [u64; WINDOWS.len()],
    /// Increments between consecutive samples, oldest first, then since the last sample.
    pub(super) trend: Vec<u64>,
}

/// Everything `/health` shows.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Report {
    /// How long ago the first sample was taken (≈ since the admin server started).
    pub(super) since_start: Duration,
    /// How much of each window the history covers (less than the window while young).
    pub(super) covered: [Duration; WINDOWS.len()],
    /// Every propagation series, sorted by metric and labels.
    pub(super) rows: Vec<Row>,
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, Samples> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a snapshot, dropping the oldest beyond [`KEEP`].
    pub(super) fn record(&self, at: Instant, counts: Counts) {
        let mut samples = self.lock();
        samples.first.get_or_insert(at);
        samples.snapshots.push_back((at, counts));
        while samples.snapshots.len() > KEEP {
            samples.snapshots.pop_front();
        }
    }

    /// The report for counters `now` read at `at`.
    pub(super) fn report(&self, at: Instant, now: &Counts) -> Report {
        let samples = self.lock();
        let snapshots = &samples.snapshots;
        let since_start = samples
            .first
            .map_or(Duration::ZERO, |t| at.saturating_duration_since(t));
        // For each window: the newest snapshot at least that old, else the oldest there is.
        let baselines = WINDOWS.map(|w| {
            snapshots
                .iter()
                .rev()
                .find(|(t, _)| at.saturating_duration_since(*t) >= w)
                .or(snapshots.front())
        });
        let covered =
            baselines.map(|b| b.map_or(Duration::ZERO, |(t, _)| at.saturating_duration_since(*t)));
        let rows = now
            .iter()
            .map(|(series, &total)| {
                let before = |b: Option<&(Instant, Counts)>| {
                    b.and_then(|(_, c)| c.get(series)).copied().unwrap_or(0)
                };
                let mut trend: Vec<u64> = snapshots
                    .iter()
                    .zip(snapshots.iter().skip(1))
                    .map(|((_, a), (_, b))| {
                        let at = |c: &Counts| c.get(series).copied().unwrap_or(0);
                        at(b).saturating_sub(at(a))
                    })
                    .collect();
                trend.push(total.saturating_sub(before(snapshots.back())));
                Row {
                    series: series.clone(),
                    total,
                    windows: baselines.map(|b| total.saturating_sub(before(b))),
                    trend,
                }
            })
            .collect();
        Report {
            since_start,
            covered,
            rows,
        }
    }
}

/// The propagation counters in OpenMetrics text (`name{k="v",…} value` lines; `# …`
/// comments and other metrics skipped), at most [`MAX_SERIES`].
pub(super) fn parse(text: &str) -> Counts {
    let mut counts = Counts::new();
    for line in text.lines() {
        if counts.len() >= MAX_SERIES {
            break;
        }
        if !line.starts_with("stitch_propagation_") {
            continue;
        }
        if let Some((series, value)) = parse_line(line) {
            counts.insert(series, value);
        }
    }
    counts
}

fn parse_line(line: &str) -> Option<(Series, u64)> {
    let (head, value) = line.rsplit_once(' ')?;
    let value = value.parse::<f64>().ok().filter(|v| *v >= 0.0)? as u64;
    let (metric, labels) = match head.split_once('{') {
        None => (head, Vec::new()),
        Some((metric, rest)) => (metric, parse_labels(rest.strip_suffix('}')?)?),
    };
    metric.ends_with("_total").then(|| {
        let series = Series {
            metric: metric.to_owned(),
            labels,
        };
        (series, value)
    })
}

/// `k="v",k2="v2"` with `\\`, `\"` and `\n` escapes in the values.
fn parse_labels(mut rest: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((name.to_owned(), value));
        rest = after[end + 1..]
            .strip_prefix(',')
            .unwrap_or(&after[end + 1..]);
    }
    Some(labels)
}

/// Samples `metrics` into `history` every [`SAMPLE_EVERY`] until shutdown (the first
/// sample at once: the baseline "since start" and the young windows count from).
pub(super) async fn sample(metrics: Metrics, history: History, shutdown: ShutdownHandle) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => history.record(Instant::now(), parse(&metrics.encode())),
            _ = shutdown.triggered() => return,
        }
    }
}

/// `GET /health`: the page, or the same figures as JSON for non-browsers.
pub(super) fn page(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let report = state
        .history
        .report(Instant::now(), &parse(&state.metrics.encode()));
    if wants_html(req) {
        return super::traces::html(super::view::health::page(&report));
    }
    let series: Vec<serde_json::Value> = report
        .rows
        .iter()
        .map(|r| {
            let labels: serde_json::Map<String, serde_json::Value> = r
                .series
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().into()))
                .collect();
            serde_json::json!({
                "metric": r.series.metric,
                "labels": labels,
                "since_start": r.total,
                "last_1m": r.windows[0],
                "last_5m": r.windows[1],
            })
        })
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({
            "since_start_seconds": report.since_start.as_secs_f64(),
            "last_1m_covers_seconds": report.covered[0].as_secs_f64(),
            "last_5m_covers_seconds": report.covered[1].as_secs_f64(),
            "series": series,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP stitch_propagation_requests Requests by dialect\n\
        # TYPE stitch_propagation_requests counter\n\
        stitch_propagation_requests_total{direction=\"inbound\",dialect=\"w3c\"} 7\n\
        stitch_propagation_requests_total{direction=\"outbound\",dialect=\"none\"} 2\n\
        stitch_propagation_tracestate_restores_total 1\n\
        stitch_propagation_repairs_total{dialect=\"we\\\"ird\\\\\",kind=\"x\"} 3\n\
        stitch_requests_total{direction=\"inbound\"} 9\n\
        stitch_propagation_broken_total{dialect=\"unterminated} 4\n";

    fn series(metric: &str, labels: &[(&str, &str)]) -> Series {
        Series {
            metric: metric.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn parses_the_propagation_counters_only() {
        let counts = parse(TEXT);
        assert_eq!(counts.len(), 4, "{counts:?}");
        let inbound = series(
            "stitch_propagation_requests_total",
            &[("direction", "inbound"), ("dialect", "w3c")],
        );
        assert_eq!(counts[&inbound], 7);
        assert_eq!(inbound.label("dialect"), "w3c");
        assert_eq!(
            counts[&series("stitch_propagation_tracestate_restores_total", &[])],
            1
        );
        let weird = series(
            "stitch_propagation_repairs_total",
            &[("dialect", "we\"ird\\"), ("kind", "x")],
        );
        assert_eq!(counts[&weird], 3, "escapes in label values");
    }

    #[test]
    fn windows_subtract_the_snapshot_that_old_and_history_stays_bounded() {
        let history = History::default();
        let key = series(
            "stitch_propagation_orphans_total",
            &[("outcome", "inferred")],
        );
        let start = Instant::now();
        // One sample every 10 s for 10 minutes, the counter growing by 1 per sample.
        for n in 0..=60u64 {
            history.record(
                start + SAMPLE_EVERY * n as u32,
                Counts::from([(key.clone(), n)]),
            );
        }
        assert_eq!(history.lock().snapshots.len(), KEEP);
        let now = start + Duration::from_secs(605);
        let report = history.report(now, &Counts::from([(key, 61)]));
        let row = &report.rows[0];
        assert_eq!(row.total, 61);
        // Baselines: the sample of 540 s (65 s ago) and of 300 s (305 s ago).
        assert_eq!(row.windows, [61 - 54, 61 - 30]);
        assert_eq!(
            report.covered,
            [Duration::from_secs(65), Duration::from_secs(305)]
        );
        assert_eq!(row.trend.len(), KEEP);
        assert!(row.trend.iter().all(|&d| d == 1));
        assert_eq!(report.since_start, Duration::from_secs(605));
    }

    #[test]
    fn a_young_history_covers_what_it_has() {
        let history = History::default();
        let key = series("stitch_propagation_tracestate_restores_total", &[]);
        let start = Instant::now();
        history.record(start, Counts::new());
        let report = history.report(start + Duration::from_secs(20), &Counts::from([(key, 4)]));
        assert_eq!(report.rows[0].windows, [4, 4]);
        assert_eq!(report.covered, [Duration::from_secs(20); 2]);
        assert_eq!(report.since_start, Duration::from_secs(20));
    }
}
