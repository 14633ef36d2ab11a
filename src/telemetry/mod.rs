//! Span records, the exporter pipeline, the in-memory trace ring and metrics.
//!
//! Start-up builds one [`Telemetry`] from a [`TelemetryConfig`] (read once from the
//! environment); its handles are passed explicitly to whoever needs them:
//!
//! - [`SpanSink`] to the trace layer: `record(SpanRecord)` never blocks;
//!   `root_sampling_factor()` is the adaptive-degradation factor for new roots;
//! - [`Metrics`] to the proxy, the trace layer and the config watcher;
//! - [`TraceRing`] and [`Metrics`] to the admin server (`/traces`, `/metrics`, `/v1/traces`).
//!
//! On SIGTERM, [`Telemetry::shutdown`] flushes queued spans to the collector within a
//! deadline.
//!
//! # Wiring
//!
//! ```no_run
//! # async fn wire(ready: std::sync::Arc<std::sync::atomic::AtomicBool>) {
//! use std::time::Duration;
//! use stitch::admin::AdminState;
//! use stitch::telemetry::{Telemetry, TelemetryConfig};
//!
//! let config = TelemetryConfig::from_env(|k| std::env::var(k).ok()).with_service_name("orders");
//! let telemetry = Telemetry::start(config);
//! let telemetry_view = telemetry.config_view();
//! let admin_state = AdminState::new(ready)
//!     .with_telemetry(&telemetry)
//!     .with_config_view(move || serde_json::json!({ "telemetry": telemetry_view }));
//! let sink = telemetry.sink(); // to the trace layers
//! let metrics = telemetry.metrics(); // to the proxy, trace layers and config watcher
//! let root_ratio = 1.0 * sink.root_sampling_factor(); // per new root, never per header
//! # let _ = (admin_state, metrics, root_ratio);
//! // … serve; after draining on SIGTERM:
//! telemetry.shutdown(Duration::from_secs(5)).await;
//! # }
//! ```
//!
//! Files, in the order a span travels: `span` (the record), `semconv` (names, attributes,
//! error rule), `sink` (ring insert, export queue, batching, export thread), `otlp_encode`
//! (OTLP protobuf straight from the records), `export` (the gRPC and HTTP transports) and
//! `export_retry` (backoff and throttling), `degrade` (the circuit breaker), `ring`,
//! `ring_shards` (one shard per writer thread) and `integrity` (the embedded trace view),
//! `receive` (the OTLP/HTTP receiver's decoding), `metrics`, `config`.

pub mod config;
pub(crate) mod degrade;
pub(crate) mod export;
mod export_retry;
mod hop_facts;
pub(crate) mod integrity;
pub(crate) mod metrics;
mod otlp_encode;
pub(crate) mod receive;
pub(crate) mod ring;
mod ring_shards;
pub mod semconv;
mod sink;
pub mod span;

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use config::{ExportConfig, Protocol, TelemetryConfig};
pub use metrics::{ConnectionGuard, Metrics, StatusClass, WireProtocol};
pub use ring::{SpanResource, TraceRing};
pub use sink::SpanSink;
pub use span::{AttrRef, AttrValue, Attribute, SpanKind, SpanRecord, SpanStatus};

/// The running telemetry pipeline and its shareable handles.
#[derive(Debug)]
pub struct Telemetry {
    sink: SpanSink,
    ring: TraceRing,
    metrics: Metrics,
    config_view: serde_json::Value,
    control: mpsc::Sender<sink::Control>,
    intake: Option<tokio::task::JoinHandle<()>>,
    export_done: Option<oneshot::Receiver<()>>,
}

impl Telemetry {
    /// Starts the pipeline (call inside the tokio runtime). Never fails: an exporter that
    /// cannot be built is logged and the pipeline runs ring-only.
    pub fn start(config: TelemetryConfig) -> Telemetry {
        Telemetry::start_with_metrics(config, Metrics::new())
    }

    /// Like [`Telemetry::start`], registering into an existing [`Metrics`].
    pub(crate) fn start_with_metrics(config: TelemetryConfig, metrics: Metrics) -> Telemetry {
        let ring = TraceRing::new(config.ring.clone());
        let pipeline = sink::start(&config, ring.clone(), metrics.clone());
        Telemetry {
            sink: pipeline.sink,
            ring,
            metrics,
            config_view: config.redacted_view(),
            control: pipeline.control,
            intake: pipeline.intake,
            export_done: pipeline.export_done,
        }
    }

    /// The handle the trace layer records spans into.
    pub fn sink(&self) -> SpanSink {
        self.sink.clone()
    }

    /// The in-memory trace ring (for the admin server).
    pub fn ring(&self) -> TraceRing {
        self.ring.clone()
    }

    /// The metrics registry and handles.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Telemetry settings for `/config`, with exporter header values removed.
    pub fn config_view(&self) -> serde_json::Value {
        self.config_view.clone()
    }

    /// Waits until every span recorded before the call is in the ring and, when exporting,
    /// has been through one export attempt (success or failure).
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.control.send(sink::Control::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Flushes queued spans and stops the pipeline, waiting at most `deadline`; spans
    /// recorded afterwards still reach the ring, but their export is dropped and counted
    /// (`reason="shutdown"`).
    pub async fn shutdown(self, deadline: Duration) {
        let work = async {
            let (ack, done) = oneshot::channel();
            if self
                .control
                .send(sink::Control::Shutdown(ack))
                .await
                .is_ok()
            {
                let _ = done.await;
            }
            if let Some(intake) = self.intake {
                let _ = intake.await;
            }
            if let Some(done) = self.export_done {
                let _ = done.await;
            }
        };
        if tokio::time::timeout(deadline, work).await.is_err() {
            tracing::warn!(
                ?deadline,
                "span flush deadline passed; remaining spans dropped"
            );
        }
    }
}
