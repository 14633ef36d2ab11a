//! The span pipeline: a bounded queue off the request path, one intake task that fills the
//! ring and cuts batches, and one export task that ships them over OTLP.
//!
//! ```text
//! request path ──try_send──► [queue] ──► intake ──► ring (always)
//!                 (full: dropped)          │
//!                                          └─try_send─► [backlog] ──► export ──► collector
//!                                            (full: dropped)            │ retries, backoff
//!                                                                       └► degradation level
//! ```
//!
//! Nothing on the request path waits: `record` is a `try_send`, and a slow or dead collector
//! only fills the backlog, whose overflow is dropped and counted.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_sdk::trace::SpanExporter;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::config::TelemetryConfig;
use super::degrade::{Degradation, SamplingFactor};
use super::export;
use super::metrics::Metrics;
use super::ring::TraceRing;
use super::span::SpanRecord;

/// Where the trace layer hands finished spans. Cheap to clone; `record` never blocks.
#[derive(Debug, Clone)]
pub struct SpanSink {
    tx: mpsc::Sender<SpanRecord>,
    metrics: Metrics,
    factor: SamplingFactor,
}

impl SpanSink {
    /// Queues a finished span; when the queue is full the span is dropped and counted
    /// (`stitch_spans_dropped_total{reason="queue_full"}`).
    pub fn record(&self, span: SpanRecord) {
        match self.tx.try_send(span) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.metrics.spans_dropped("queue_full", 1),
            Err(mpsc::error::TrySendError::Closed(_)) => self.metrics.spans_dropped("shutdown", 1),
        }
    }

    /// The factor adaptive degradation applies to the root sampling ratio (1.0 when export
    /// is healthy or off). Multiply it into the rules' `root_ratio` for new roots only.
    pub fn root_sampling_factor(&self) -> f64 {
        self.factor.get()
    }
}

pub(crate) enum Control {
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

enum ExportJob {
    Batch(Vec<SpanRecord>),
    Barrier(oneshot::Sender<()>),
}

/// The running pipeline's handles.
#[derive(Debug)]
pub(crate) struct Pipeline {
    pub(crate) sink: SpanSink,
    pub(crate) control: mpsc::Sender<Control>,
    pub(crate) intake: JoinHandle<()>,
    pub(crate) export: Option<JoinHandle<()>>,
}

/// Starts the intake task (and the export task when an endpoint is configured).
pub(crate) fn start(config: &TelemetryConfig, ring: TraceRing, metrics: Metrics) -> Pipeline {
    let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
    let (control, control_rx) = mpsc::channel(4);
    let factor = SamplingFactor::new(1.0);
    let service: Arc<str> = Arc::from(config.service_name.as_str());

    let exporter = config.export.as_ref().and_then(|e| {
        let resource = export::build_resource(config);
        match export::build_exporter(e, &resource) {
            Ok(x) => {
                tracing::info!(endpoint = %e.endpoint, protocol = e.protocol.as_str(), "exporting spans over OTLP");
                Some((x, e.timeout, e.max_retries, e.max_backoff))
            }
            Err(err) => {
                tracing::error!(error = %err, "OTLP export disabled; spans stay in the in-memory ring");
                None
            }
        }
    });

    let (export_tx, export) = match exporter {
        Some((exporter, timeout, retries, backoff)) => {
            let (export_tx, export_rx) = mpsc::channel(config.export_backlog_batches.max(1));
            let retries = u32::try_from(retries).unwrap_or(u32::MAX).saturating_add(1);
            // The exporter bounds its own retries; this outer bound only guards against a
            // transport that ignores its timeout.
            let budget = timeout
                .saturating_mul(retries)
                .saturating_add(backoff.saturating_mul(retries))
                .saturating_add(Duration::from_secs(1));
            let task = ExportTask {
                exporter,
                budget,
                metrics: metrics.clone(),
                degradation: Degradation::new(&config.degradation, factor.clone()),
                failing: false,
            };
            (Some(export_tx), Some(tokio::spawn(task.run(export_rx))))
        }
        None => (None, None),
    };
    metrics.set_degradation(0, factor.get());

    let intake = Intake {
        rx,
        control: control_rx,
        ring,
        service,
        export_tx,
        batch_max: config.batch_max_spans.max(1),
        batch_delay: config.batch_delay,
        metrics: metrics.clone(),
        pending: Vec::new(),
    };
    Pipeline {
        sink: SpanSink {
            tx,
            metrics,
            factor,
        },
        control,
        intake: tokio::spawn(intake.run()),
        export,
    }
}

struct Intake {
    rx: mpsc::Receiver<SpanRecord>,
    control: mpsc::Receiver<Control>,
    ring: TraceRing,
    service: Arc<str>,
    export_tx: Option<mpsc::Sender<ExportJob>>,
    batch_max: usize,
    batch_delay: Duration,
    metrics: Metrics,
    pending: Vec<SpanRecord>,
}

impl Intake {
    async fn run(mut self) {
        let mut buf = Vec::with_capacity(self.batch_max);
        let mut ticker = tokio::time::interval(self.batch_delay);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Dropping the `Telemetry` handle must not stop the pipeline while sinks live on.
        let mut controlled = true;
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut buf, self.batch_max) => {
                    if n == 0 {
                        break;
                    }
                    self.take(&mut buf);
                    if self.pending.len() >= self.batch_max {
                        self.ship();
                    }
                }
                _ = ticker.tick() => self.ship(),
                ctl = self.control.recv(), if controlled => {
                    self.drain(&mut buf);
                    self.ship();
                    match ctl {
                        Some(Control::Flush(ack)) => self.barrier(ack).await,
                        Some(Control::Shutdown(ack)) => {
                            self.barrier(ack).await;
                            break;
                        }
                        None => controlled = false,
                    }
                }
            }
        }
        self.drain(&mut buf);
        self.ship();
    }

    fn drain(&mut self, buf: &mut Vec<SpanRecord>) {
        while let Ok(span) = self.rx.try_recv() {
            buf.push(span);
        }
        self.take(buf);
    }

    fn take(&mut self, buf: &mut Vec<SpanRecord>) {
        self.metrics.set_queue_length(self.rx.len());
        if buf.is_empty() {
            return;
        }
        if self.export_tx.is_some() {
            self.ring.insert(&self.service, buf.iter().cloned());
            self.pending.append(buf);
        } else {
            self.ring.insert(&self.service, buf.drain(..));
        }
    }

    fn ship(&mut self) {
        let Some(export_tx) = &self.export_tx else {
            return;
        };
        while !self.pending.is_empty() {
            let rest = self
                .pending
                .split_off(self.pending.len().min(self.batch_max));
            let batch = std::mem::replace(&mut self.pending, rest);
            let n = batch.len() as u64;
            if export_tx.try_send(ExportJob::Batch(batch)).is_err() {
                self.metrics.spans_dropped("export_backlog", n);
            }
        }
    }

    async fn barrier(&mut self, ack: oneshot::Sender<()>) {
        match &self.export_tx {
            Some(tx) => {
                if let Err(mpsc::error::SendError(ExportJob::Barrier(ack))) =
                    tx.send(ExportJob::Barrier(ack)).await
                {
                    let _ = ack.send(());
                }
            }
            None => {
                let _ = ack.send(());
            }
        }
    }
}

struct ExportTask {
    exporter: opentelemetry_otlp::SpanExporter,
    budget: Duration,
    metrics: Metrics,
    degradation: Degradation,
    failing: bool,
}

impl ExportTask {
    async fn run(mut self, mut rx: mpsc::Receiver<ExportJob>) {
        let scope = export::scope();
        while let Some(job) = rx.recv().await {
            match job {
                ExportJob::Barrier(ack) => {
                    let _ = ack.send(());
                }
                ExportJob::Batch(spans) => {
                    let n = spans.len() as u64;
                    let data = spans
                        .into_iter()
                        .map(|s| export::to_span_data(s, &scope))
                        .collect();
                    let result =
                        tokio::time::timeout(self.budget, self.exporter.export(data)).await;
                    match result {
                        Ok(Ok(())) => self.succeeded(n),
                        Ok(Err(e)) => self.failed(n, &e.to_string()),
                        Err(_) => self.failed(n, "export deadline passed"),
                    }
                }
            }
        }
        if let Err(e) = self.exporter.shutdown_with_timeout(Duration::from_secs(1)) {
            tracing::debug!(error = %e, "OTLP exporter shutdown");
        }
    }

    fn succeeded(&mut self, n: u64) {
        self.metrics.spans_exported(n);
        if self.failing {
            self.failing = false;
            tracing::info!("OTLP export recovered");
        }
        if let Some(change) = self.degradation.on_success() {
            self.metrics.set_degradation(change.to, change.factor);
            tracing::info!(
                level = change.to,
                root_sampling_factor = change.factor,
                "export recovering; raising root sampling"
            );
        }
    }

    fn failed(&mut self, n: u64, error: &str) {
        self.metrics.export_batch_failed();
        self.metrics.spans_dropped("export_failed", n);
        if !self.failing {
            self.failing = true;
            tracing::warn!(error, spans = n, "OTLP export failed; spans dropped");
        } else {
            tracing::debug!(error, spans = n, "OTLP export failed again");
        }
        if let Some(change) = self.degradation.on_failure() {
            self.metrics.set_degradation(change.to, change.factor);
            tracing::warn!(
                level = change.to,
                from = change.from,
                root_sampling_factor = change.factor,
                "export keeps failing; lowering root sampling"
            );
        }
    }
}
