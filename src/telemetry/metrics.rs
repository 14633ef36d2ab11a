//! Prometheus metrics: one registry, every handle resolved once, bounded labels only.
//!
//! The proxy and the trace layer call the small methods here (`request_finished`,
//! `connection_opened`, …); none allocates on the hot path. Label values come from fixed
//! sets; the one open-ended label (a user-defined template dialect name) is interned up to
//! [`MAX_DYNAMIC_LABEL_VALUES`] distinct values and reported as `other` beyond that.
//!
//! Names (all prefixed `stitch_`, counters end in `_total`):
//! - `stitch_requests_total{direction,protocol,status_class}`
//! - `stitch_request_duration_seconds{direction,protocol}` (histogram)
//! - `stitch_open_connections{direction}`, `stitch_connections_total{direction}`
//! - `stitch_idle_parked_connections{direction}` (idle HTTP/1 connections out of the runtime)
//! - `stitch_request_bytes_total{direction}`, `stitch_response_bytes_total{direction}`
//! - `stitch_opaque_connections_total{direction}`
//! - `stitch_upstream_connects_total{result}` (`ok`, `error`)
//! - `stitch_detect_total{outcome}`, `stitch_detect_duration_seconds` (histogram)
//! - `stitch_propagation_requests_total{direction,dialect}` (dialect `none` when absent)
//! - `stitch_propagation_repairs_total{dialect,kind}`
//! - `stitch_propagation_conflicts_total{winner,loser}`
//! - `stitch_propagation_orphans_total{outcome}`
//! - `stitch_requests_rejected_total{reason}`
//! - `stitch_propagation_tracestate_restores_total`
//! - `stitch_propagation_invalid_headers_total{dialect}`
//! - `stitch_propagation_baggage_dropped_total`
//! - `stitch_spans_exported_total`, `stitch_spans_dropped_total{reason}`
//! - `stitch_export_failed_batches_total`, `stitch_span_queue_length`
//! - `stitch_export_degradation_level` (0 = healthy), `stitch_root_sampling_factor`
//! - `stitch_otlp_received_spans_total{format}`, `stitch_otlp_rejected_requests_total`
//! - `stitch_config_reloads_total{result}`
//! - `stitch_workers`, `stitch_worker_connections_total{worker}` (`worker` is `0`..N-1)

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::direction::Direction;

/// Most distinct values an open-ended label (a template dialect name) may take.
pub(crate) const MAX_DYNAMIC_LABEL_VALUES: usize = 32;

type L1 = [(&'static str, &'static str); 1];
type L2 = [(&'static str, &'static str); 2];

/// The protocol a request or connection was served with (the `protocol` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireProtocol {
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 that is not gRPC.
    H2,
    /// gRPC over HTTP/2.
    Grpc,
    /// Undetected bytes copied through.
    Opaque,
}

impl WireProtocol {
    const ALL: [WireProtocol; 4] = [
        WireProtocol::Http1,
        WireProtocol::H2,
        WireProtocol::Grpc,
        WireProtocol::Opaque,
    ];

    /// The protocol of a request on an HTTP/2 (or HTTP/1) connection with (or without) a
    /// gRPC content type: gRPC needs HTTP/2, so a gRPC content type over HTTP/1 is HTTP/1.
    pub(crate) fn of_request(http2: bool, grpc: bool) -> Self {
        match (http2, grpc) {
            (true, true) => WireProtocol::Grpc,
            (true, false) => WireProtocol::H2,
            (false, _) => WireProtocol::Http1,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WireProtocol::Http1 => "http1",
            WireProtocol::H2 => "h2",
            WireProtocol::Grpc => "grpc",
            WireProtocol::Opaque => "opaque",
        }
    }
}

/// The `status_class` label: the response class, or `failed` when no response came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 1xx.
    Informational,
    /// 2xx.
    Success,
    /// 3xx.
    Redirection,
    /// 4xx.
    ClientError,
    /// 5xx.
    ServerError,
    /// No response (upstream failure, cancellation).
    Failed,
}

impl StatusClass {
    const ALL: [StatusClass; 6] = [
        StatusClass::Informational,
        StatusClass::Success,
        StatusClass::Redirection,
        StatusClass::ClientError,
        StatusClass::ServerError,
        StatusClass::Failed,
    ];

    /// The class of an HTTP status code.
    pub fn from_status(code: u16) -> Self {
        match code {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
            StatusClass::Failed => "failed",
        }
    }
}

const DIRECTIONS: [Direction; 2] = [Direction::Inbound, Direction::Outbound];

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Inbound => 0,
        Direction::Outbound => 1,
    }
}

fn proto_index(p: WireProtocol) -> usize {
    match p {
        WireProtocol::Http1 => 0,
        WireProtocol::H2 => 1,
        WireProtocol::Grpc => 2,
        WireProtocol::Opaque => 3,
    }
}

fn class_index(c: StatusClass) -> usize {
    match c {
        StatusClass::Informational => 0,
        StatusClass::Success => 1,
        StatusClass::Redirection => 2,
        StatusClass::ClientError => 3,
        StatusClass::ServerError => 4,
        StatusClass::Failed => 5,
    }
}

const KNOWN_DIALECTS: [&str; 6] = ["none", "w3c", "b3", "b3multi", "jaeger", "other"];

/// Every metric handle stitch updates. Cloning is cheap and shares the registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

struct Inner {
    registry: Registry,
    requests: [[[Counter; 6]; 4]; 2],
    durations: [[Histogram; 4]; 2],
    open_connections: [Gauge; 2],
    parked_connections: [Gauge; 2],
    connections: [Counter; 2],
    request_bytes: [Counter; 2],
    response_bytes: [Counter; 2],
    opaque_connections: [Counter; 2],
    /// Upstream TCP connects: succeeded, failed.
    upstream_connects: [Counter; 2],
    detect: Family<L1, Counter>,
    detect_duration: Histogram,
    propagation_requests: Family<L2, Counter>,
    /// `propagation_requests` handles of the built-in dialects per direction, resolved on
    /// first use (so the exposition still lists only series that happened): the family's
    /// lookup hashes both labels with SipHash under a lock every worker shares, about 800
    /// instructions on every traced request.
    dialect_requests: [[OnceLock<Counter>; KNOWN_DIALECTS.len()]; 2],
    repairs: Family<L2, Counter>,
    conflicts: Family<L2, Counter>,
    orphans: Family<L1, Counter>,
    rejected: Family<L1, Counter>,
    tracestate_restores: Counter,
    invalid_headers: Family<L1, Counter>,
    baggage_dropped: Counter,
    pub(crate) spans_exported: Counter,
    spans_dropped: Family<L1, Counter>,
    pub(crate) failed_batches: Counter,
    pub(crate) queue_length: Gauge,
    pub(crate) degradation_level: Gauge,
    pub(crate) sampling_factor: Gauge<f64, AtomicU64>,
    otlp_received: Family<L1, Counter>,
    otlp_rejected: Counter,
    config_reloads: Family<L1, Counter>,
    workers: Gauge,
    worker_connections: Family<[(&'static str, String); 1], Counter>,
    interned: Mutex<Vec<&'static str>>,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ]
    .into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Builds the registry and resolves every fixed-label handle.
    pub fn new() -> Self {
        let mut registry = Registry::default();

        let requests_family = Family::<[(&'static str, &'static str); 3], Counter>::default();
        let requests = DIRECTIONS.map(|d| {
            WireProtocol::ALL.map(|p| {
                StatusClass::ALL.map(|c| {
                    requests_family
                        .get_or_create(&[
                            ("direction", d.as_str()),
                            ("protocol", p.as_str()),
                            ("status_class", c.as_str()),
                        ])
                        .clone()
                })
            })
        });
        registry.register(
            "stitch_requests",
            "Requests proxied, by direction, protocol and response class",
            requests_family,
        );

        let durations_family = Family::<L2, Histogram>::new_with_constructor(
            (|| Histogram::new(latency_buckets())) as fn() -> Histogram,
        );
        let durations = DIRECTIONS.map(|d| {
            WireProtocol::ALL.map(|p| {
                durations_family
                    .get_or_create(&[("direction", d.as_str()), ("protocol", p.as_str())])
                    .clone()
            })
        });
        registry.register(
            "stitch_request_duration_seconds",
            "Time from request head to end of response stream",
            durations_family,
        );

        let per_direction_gauge = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<L1, Gauge>::default();
            let handles =
                DIRECTIONS.map(|d| family.get_or_create(&[("direction", d.as_str())]).clone());
            registry.register(name, help, family);
            handles
        };
        let per_direction_counter = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<L1, Counter>::default();
            let handles =
                DIRECTIONS.map(|d| family.get_or_create(&[("direction", d.as_str())]).clone());
            registry.register(name, help, family);
            handles
        };
        let open_connections = per_direction_gauge(
            &mut registry,
            "stitch_open_connections",
            "Client connections currently open",
        );
        let parked_connections = per_direction_gauge(
            &mut registry,
            "stitch_idle_parked_connections",
            "Idle HTTP/1 keep-alive client connections parked out of the runtime (also open)",
        );
        let connections = per_direction_counter(
            &mut registry,
            "stitch_connections",
            "Client connections accepted",
        );
        let request_bytes = per_direction_counter(
            &mut registry,
            "stitch_request_bytes",
            "Bytes received from clients and forwarded upstream",
        );
        let response_bytes = per_direction_counter(
            &mut registry,
            "stitch_response_bytes",
            "Bytes received from upstreams and returned to clients",
        );
        let opaque_connections = per_direction_counter(
            &mut registry,
            "stitch_opaque_connections",
            "Connections passed through as opaque TCP",
        );

        let upstream_connects_family = Family::<L1, Counter>::default();
        let upstream_connects = ["ok", "error"].map(|result| {
            upstream_connects_family
                .get_or_create(&[("result", result)])
                .clone()
        });
        registry.register(
            "stitch_upstream_connects",
            "TCP connections opened to upstreams (and failed attempts); against the request count it shows how well the pools reuse them",
            upstream_connects_family,
        );

        let detect = Family::<L1, Counter>::default();
        registry.register(
            "stitch_detect",
            "Protocol detection outcomes",
            detect.clone(),
        );
        let detect_duration =
            Histogram::new([0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0]);
        registry.register(
            "stitch_detect_duration_seconds",
            "Time spent detecting the protocol of a connection",
            detect_duration.clone(),
        );

        let propagation_requests = Family::<L2, Counter>::default();
        registry.register(
            "stitch_propagation_requests",
            "Requests by the dialect their trace context was extracted from (none if absent)",
            propagation_requests.clone(),
        );
        let repairs = Family::<L2, Counter>::default();
        registry.register(
            "stitch_propagation_repairs",
            "Trace headers repaired, by dialect and kind of repair",
            repairs.clone(),
        );
        let conflicts = Family::<L2, Counter>::default();
        registry.register(
            "stitch_propagation_conflicts",
            "Requests whose dialects disagreed, by winning and losing dialect",
            conflicts.clone(),
        );
        let rejected = Family::<L1, Counter>::default();
        registry.register(
            "stitch_requests_rejected",
            "Requests stitch answered 400 without forwarding (HTTP/1 Host and framing rules, HTTP/2 authority rules), by reason",
            rejected.clone(),
        );
        let orphans = Family::<L1, Counter>::default();
        registry.register(
            "stitch_propagation_orphans",
            "Outbound requests without context, by outcome",
            orphans.clone(),
        );
        let tracestate_restores = Counter::default();
        registry.register(
            "stitch_propagation_tracestate_restores",
            "Dropped tracestate headers restored from the inbound request",
            tracestate_restores.clone(),
        );
        let invalid_headers = Family::<L1, Counter>::default();
        registry.register(
            "stitch_propagation_invalid_headers",
            "Trace headers ignored as invalid, by dialect",
            invalid_headers.clone(),
        );
        let baggage_dropped = Counter::default();
        registry.register(
            "stitch_propagation_baggage_dropped",
            "Baggage entries dropped for exceeding limits",
            baggage_dropped.clone(),
        );

        let spans_exported = Counter::default();
        registry.register(
            "stitch_spans_exported",
            "Spans accepted by the OTLP collector",
            spans_exported.clone(),
        );
        let spans_dropped = Family::<L1, Counter>::default();
        registry.register(
            "stitch_spans_dropped",
            "Spans dropped, by reason (queue_full, export_backlog, export_failed, shutdown)",
            spans_dropped.clone(),
        );
        let failed_batches = Counter::default();
        registry.register(
            "stitch_export_failed_batches",
            "Export batches that failed after retries",
            failed_batches.clone(),
        );
        let queue_length = Gauge::default();
        registry.register(
            "stitch_span_queue_length",
            "Spans waiting in the queue between the request path and the exporter",
            queue_length.clone(),
        );
        let degradation_level = Gauge::default();
        registry.register(
            "stitch_export_degradation_level",
            "Adaptive degradation step (0 = healthy; higher = lower root sampling)",
            degradation_level.clone(),
        );
        let sampling_factor = Gauge::<f64, AtomicU64>::default();
        sampling_factor.set(1.0);
        registry.register(
            "stitch_root_sampling_factor",
            "Factor multiplied into the rules' root sampling ratio by adaptive degradation",
            sampling_factor.clone(),
        );
        let otlp_received = Family::<L1, Counter>::default();
        registry.register(
            "stitch_otlp_received_spans",
            "Spans received on POST /v1/traces, by body format",
            otlp_received.clone(),
        );
        let otlp_rejected = Counter::default();
        registry.register(
            "stitch_otlp_rejected_requests",
            "POST /v1/traces requests rejected as malformed, too large or unsupported",
            otlp_rejected.clone(),
        );
        let config_reloads = Family::<L1, Counter>::default();
        registry.register(
            "stitch_config_reloads",
            "Rules file reloads, by result",
            config_reloads.clone(),
        );

        let workers = Gauge::default();
        registry.register(
            "stitch_workers",
            "Proxy workers (threads, each with its own runtime and upstream pool)",
            workers.clone(),
        );
        let worker_connections = Family::<[(&'static str, String); 1], Counter>::default();
        registry.register(
            "stitch_worker_connections",
            "Client connections served, by the worker that served them",
            worker_connections.clone(),
        );

        Metrics {
            inner: Arc::new(Inner {
                registry,
                requests,
                durations,
                open_connections,
                parked_connections,
                connections,
                request_bytes,
                response_bytes,
                opaque_connections,
                upstream_connects,
                detect,
                detect_duration,
                propagation_requests,
                repairs,
                conflicts,
                orphans,
                rejected,
                tracestate_restores,
                invalid_headers,
                baggage_dropped,
                spans_exported,
                spans_dropped,
                failed_batches,
                queue_length,
                degradation_level,
                sampling_factor,
                otlp_received,
                otlp_rejected,
                config_reloads,
                workers,
                worker_connections,
                interned: Mutex::new(Vec::new()),
                dialect_requests: Default::default(),
            }),
        }
    }

    /// The exposition text for `/metrics` (OpenMetrics text format).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if encode(&mut out, &self.inner.registry).is_err() {
            tracing::error!("metrics encoding failed");
        }
        out
    }

    /// Counts a finished request and observes its duration (call once per request, at end
    /// of stream or failure).
    pub fn request_finished(
        &self,
        direction: Direction,
        protocol: WireProtocol,
        status_class: StatusClass,
        duration: Duration,
    ) {
        let (d, p) = (dir_index(direction), proto_index(protocol));
        self.inner.requests[d][p][class_index(status_class)].inc();
        self.inner.durations[d][p].observe(duration.as_secs_f64());
    }

    /// Counts an accepted connection; the returned guard keeps it in the open gauge until dropped.
    pub fn connection_opened(&self, direction: Direction) -> ConnectionGuard {
        let d = dir_index(direction);
        self.inner.connections[d].inc();
        let gauge = self.inner.open_connections[d].clone();
        gauge.inc();
        ConnectionGuard { gauge }
    }

    /// Counts a parked idle connection until the returned guard is dropped.
    pub fn connection_parked(&self, direction: Direction) -> ConnectionGuard {
        let gauge = self.inner.parked_connections[dir_index(direction)].clone();
        gauge.inc();
        ConnectionGuard { gauge }
    }

    /// Sets how many proxy workers run (once, at start-up).
    pub fn set_workers(&self, count: usize) {
        self.inner
            .workers
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The connection counter of worker `index`, resolved once per worker so counting a
    /// connection is one atomic add.
    pub(crate) fn worker_connections(&self, index: usize) -> Counter {
        self.inner
            .worker_connections
            .get_or_create(&[("worker", index.to_string())])
            .clone()
    }

    /// Adds proxied body bytes: `request` from the client, `response` back to it.
    pub fn bytes_transferred(&self, direction: Direction, request: u64, response: u64) {
        let d = dir_index(direction);
        self.inner.request_bytes[d].inc_by(request);
        self.inner.response_bytes[d].inc_by(response);
    }

    /// Counts a connection passed through as opaque TCP.
    pub fn opaque_connection(&self, direction: Direction) {
        self.inner.opaque_connections[dir_index(direction)].inc();
    }

    /// Counts an upstream TCP connect, by whether it succeeded.
    pub fn upstream_connect(&self, ok: bool) {
        self.inner.upstream_connects[usize::from(!ok)].inc();
    }

    /// Records a detection outcome (`http1`, `h2`, `opaque`, `timeout`, …: a fixed set).
    pub fn detected(&self, outcome: &'static str, duration: Duration) {
        self.inner
            .detect
            .get_or_create(&[("outcome", outcome)])
            .inc();
        self.inner.detect_duration.observe(duration.as_secs_f64());
    }

    /// Counts a request by the dialect its context came from (`none` when absent).
    pub fn request_dialect(&self, direction: Direction, dialect: &str) {
        let labels = |dialect| [("direction", direction.as_str()), ("dialect", dialect)];
        if let Some(i) = KNOWN_DIALECTS.iter().position(|k| *k == dialect) {
            self.inner.dialect_requests[dir_index(direction)][i]
                .get_or_init(|| {
                    self.inner
                        .propagation_requests
                        .get_or_create(&labels(KNOWN_DIALECTS[i]))
                        .clone()
                })
                .inc();
            return;
        }
        let dialect = self.intern(dialect);
        self.inner
            .propagation_requests
            .get_or_create(&labels(dialect))
            .inc();
    }

    /// Counts one repair of a dialect's header (`kind` from a fixed set, e.g. `uppercase_hex`).
    pub fn repair(&self, dialect: &str, kind: &'static str) {
        let dialect = self.intern(dialect);
        self.inner
            .repairs
            .get_or_create(&[("dialect", dialect), ("kind", kind)])
            .inc();
    }

    /// Counts a disagreement between dialects and which one won.
    pub fn conflict(&self, winner: &str, loser: &str) {
        let (winner, loser) = (self.intern(winner), self.intern(loser));
        self.inner
            .conflicts
            .get_or_create(&[("winner", winner), ("loser", loser)])
            .inc();
    }

    /// Counts an orphan outbound request by outcome (`new_root`, `inferred`, `ambiguous`).
    pub fn orphan(&self, outcome: &'static str) {
        self.inner
            .orphans
            .get_or_create(&[("outcome", outcome)])
            .inc();
    }

    /// Counts a request refused with `400` before forwarding, by its reason label.
    pub fn request_rejected(&self, reason: &'static str) {
        self.inner
            .rejected
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    /// Counts a restored `tracestate`.
    pub fn tracestate_restored(&self) {
        self.inner.tracestate_restores.inc();
    }

    /// Counts a trace header ignored as invalid.
    pub fn invalid_header(&self, dialect: &str) {
        let dialect = self.intern(dialect);
        self.inner
            .invalid_headers
            .get_or_create(&[("dialect", dialect)])
            .inc();
    }

    /// Counts baggage entries dropped for exceeding limits.
    pub fn baggage_dropped(&self, entries: u64) {
        self.inner.baggage_dropped.inc_by(entries);
    }

    /// Counts a rules reload (`ok` or `rejected`).
    pub fn config_reload(&self, result: &'static str) {
        self.inner
            .config_reloads
            .get_or_create(&[("result", result)])
            .inc();
    }

    pub(crate) fn spans_dropped(&self, reason: &'static str, n: u64) {
        self.inner
            .spans_dropped
            .get_or_create(&[("reason", reason)])
            .inc_by(n);
    }

    pub(crate) fn spans_exported(&self, n: u64) {
        self.inner.spans_exported.inc_by(n);
    }

    pub(crate) fn export_batch_failed(&self) {
        self.inner.failed_batches.inc();
    }

    pub(crate) fn set_queue_length(&self, n: usize) {
        self.inner
            .queue_length
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub(crate) fn set_degradation(&self, level: usize, factor: f64) {
        self.inner
            .degradation_level
            .set(i64::try_from(level).unwrap_or(i64::MAX));
        self.inner.sampling_factor.set(factor);
    }

    pub(crate) fn otlp_received(&self, format: &'static str, spans: u64) {
        self.inner
            .otlp_received
            .get_or_create(&[("format", format)])
            .inc_by(spans);
    }

    pub(crate) fn otlp_rejected(&self) {
        self.inner.otlp_rejected.inc();
    }

    /// Maps an open-ended label value to a `'static` one, bounded by
    /// [`MAX_DYNAMIC_LABEL_VALUES`] (later newcomers become `other`). Leaking is bounded
    /// by that cap, and it keeps label handles allocation-free.
    fn intern(&self, value: &str) -> &'static str {
        if let Some(known) = KNOWN_DIALECTS.iter().find(|k| **k == value) {
            return known;
        }
        let Ok(mut interned) = self.inner.interned.lock() else {
            return "other";
        };
        if let Some(v) = interned.iter().find(|v| **v == value) {
            return v;
        }
        let valid = !value.is_empty()
            && value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !valid || interned.len() >= MAX_DYNAMIC_LABEL_VALUES {
            return "other";
        }
        let leaked: &'static str = Box::leak(value.to_owned().into_boxed_str());
        interned.push(leaked);
        leaked
    }
}

/// Keeps a connection counted in `stitch_open_connections` (or
/// `stitch_idle_parked_connections`) until dropped.
#[derive(Debug)]
pub struct ConnectionGuard {
    gauge: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests;
