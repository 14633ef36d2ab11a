//! The span pipeline: finished spans go straight into the ring (a short critical section,
//! no task hop), and — when an OTLP endpoint is configured — through a bounded queue to one
//! intake task that cuts batches for the export thread.
//!
//! ```text
//! request path ──► Arc<SpanRecord> ──► ring (always; shared, never copied)
//!                        │
//!                        └─try_send─► [queue] ──► intake ──try_send─► [backlog] ──► export thread ──► collector
//!                          (full: dropped)          (full: dropped)     │ convert, encode, retry
//!                                                                       └► degradation level
//! ```
//!
//! Nothing on the request path waits: the ring insert is a few map operations under an
//! uncontended lock, `try_send` never blocks, and a slow or dead collector only fills the
//! backlog, whose overflow is dropped and counted. The record is put behind an `Arc` once, so
//! the ring and the export batch share it instead of each holding a deep copy.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::config::TelemetryConfig;
use super::degrade::{Degradation, SamplingFactor};
use super::export;
use super::metrics::Metrics;
use super::ring::{SpanResource, TraceRing};
use super::span::{AttrValue, Attribute, SpanRecord};

/// Where the trace layer hands finished spans. Cheap to clone; `record` never blocks.
#[derive(Debug, Clone)]
pub struct SpanSink {
    ring: TraceRing,
    service: Arc<str>,
    resource: Arc<SpanResource>,
    export: Option<mpsc::Sender<Arc<SpanRecord>>>,
    metrics: Metrics,
    factor: SamplingFactor,
}

impl SpanSink {
    /// Keeps a finished span in the ring and, when exporting, queues it for the collector;
    /// when that queue is full the export copy is dropped and counted
    /// (`stitch_spans_dropped_total{reason="queue_full"}`).
    pub fn record(&self, span: impl Into<Arc<SpanRecord>>) {
        let span = span.into();
        // The ring first: a copy of this span received back over OTLP (stitch exporting to
        // itself) must find the original there.
        self.ring
            .record(&self.service, &self.resource, Arc::clone(&span));
        if let Some(tx) = &self.export {
            match tx.try_send(span) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.metrics.spans_dropped("queue_full", 1)
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.metrics.spans_dropped("shutdown", 1)
                }
            }
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
    Batch(Vec<Arc<SpanRecord>>),
    Barrier(oneshot::Sender<()>),
}

/// The running pipeline's handles; they exist only when exporting.
#[derive(Debug)]
pub(crate) struct Pipeline {
    pub(crate) sink: SpanSink,
    pub(crate) control: mpsc::Sender<Control>,
    pub(crate) intake: Option<JoinHandle<()>>,
    /// Resolves when the export thread has finished (its last batch tried, exporter shut down).
    pub(crate) export_done: Option<oneshot::Receiver<()>>,
}

/// Builds the sink; with an endpoint configured, starts the intake task (on the caller's
/// runtime: a span handed over wakes it without crossing threads) and the export thread.
pub(crate) fn start(config: &TelemetryConfig, ring: TraceRing, metrics: Metrics) -> Pipeline {
    let (control, control_rx) = mpsc::channel(4);
    let factor = SamplingFactor::new(1.0);
    let service: Arc<str> = Arc::from(config.service_name.as_str());
    // What the exporter sends as the resource, for the ring's span detail.
    let resource = export::resource_attributes(config)
        .into_iter()
        .filter(|(key, _)| key != "service.name")
        .map(|(key, value)| Attribute {
            key: key.into(),
            value: AttrValue::from(value),
        })
        .collect();
    metrics.set_degradation(0, factor.get());

    let (tx, intake, export_done) = match start_export(config, &metrics, &factor) {
        Some((export_tx, export_done)) => {
            let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
            let intake = Intake {
                rx,
                control: control_rx,
                export_tx,
                batch_max: config.batch_max_spans.max(1),
                batch_delay: config.batch_delay,
                metrics: metrics.clone(),
                pending: Vec::new(),
            };
            (
                Some(tx),
                Some(tokio::spawn(intake.run())),
                Some(export_done),
            )
        }
        // Ring only: `flush` and `shutdown` find no one listening and return at once,
        // which is right — every recorded span is already in the ring.
        None => (None, None, None),
    };

    Pipeline {
        sink: SpanSink {
            ring,
            service,
            resource: Arc::new(SpanResource::new(resource)),
            export: tx,
            metrics,
            factor,
        },
        control,
        intake,
        export_done,
    }
}

/// Starts the export thread: its own single-threaded runtime, where the exporter is built
/// and where batches are converted, encoded and sent. Encoding a batch of hundreds of spans
/// takes a millisecond or more; on the proxy's runtime that would stall every request behind
/// it, while as a thread of its own the kernel preempts it for them. `None` (logged) when
/// export is off or cannot be set up; spans then stay in the ring only.
fn start_export(
    config: &TelemetryConfig,
    metrics: &Metrics,
    factor: &SamplingFactor,
) -> Option<(mpsc::Sender<ExportJob>, oneshot::Receiver<()>)> {
    let export = config.export.clone()?;
    let (endpoint, protocol) = (export.endpoint.clone(), export.protocol.as_str());
    let resource = export::resource_attributes(config);
    let (export_tx, export_rx) = mpsc::channel(config.export_backlog_batches.max(1));
    let (done_tx, done_rx) = oneshot::channel();
    let (setup_tx, setup_rx) = std::sync::mpsc::sync_channel(1);
    let retries = u32::try_from(export.max_retries)
        .unwrap_or(u32::MAX)
        .saturating_add(1);
    // The exporter bounds its own retries; this outer bound only guards against a
    // transport that ignores its timeout.
    let budget = export
        .timeout
        .saturating_mul(retries)
        .saturating_add(export.max_backoff.saturating_mul(retries))
        .saturating_add(Duration::from_secs(1));
    let (metrics, degradation) = (
        metrics.clone(),
        Degradation::new(&config.degradation, factor.clone()),
    );
    let thread = std::thread::Builder::new()
        .name("stitch-export".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = setup_tx.send(Err(format!("cannot start its runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(async move {
                let exporter = match export::build_exporter(&export, &resource) {
                    Ok(x) => x,
                    Err(e) => {
                        let _ = setup_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = setup_tx.send(Ok(()));
                let task = ExportTask {
                    exporter,
                    budget,
                    metrics,
                    degradation,
                    failing: false,
                };
                task.run(export_rx).await;
            });
            let _ = done_tx.send(());
        });
    let outcome = match thread {
        // Setup is quick (no connection is made yet); waiting for it keeps the start-up log
        // and the ring-only fallback exact.
        Ok(_) => setup_rx
            .recv()
            .unwrap_or_else(|_| Err("the export thread ended during setup".into())),
        Err(e) => Err(format!("cannot start the export thread: {e}")),
    };
    match outcome {
        Ok(()) => {
            tracing::info!(%endpoint, protocol, "exporting spans over OTLP");
            Some((export_tx, done_rx))
        }
        Err(error) => {
            tracing::error!(%error, "OTLP export disabled; spans stay in the in-memory ring");
            None
        }
    }
}

struct Intake {
    rx: mpsc::Receiver<Arc<SpanRecord>>,
    control: mpsc::Receiver<Control>,
    export_tx: mpsc::Sender<ExportJob>,
    batch_max: usize,
    batch_delay: Duration,
    metrics: Metrics,
    pending: Vec<Arc<SpanRecord>>,
}

/// While spans keep coming, the intake empties the queue on this period instead of being
/// woken by every span: a wake-up per request cost the request path a task schedule and poll
/// (about 1,000 instructions), a drain every 5 ms costs nothing per span. The queue
/// (`OTEL_BSP_MAX_QUEUE_SIZE`, 2048 by default) overflows only above 400k spans/s. When a
/// drain finds the queue empty, the intake waits for the next span again (an idle sidecar has
/// no timer running but the batch ticker).
const BUSY_DRAIN_PERIOD: Duration = Duration::from_millis(5);

impl Intake {
    async fn run(mut self) {
        let mut buf = Vec::with_capacity(self.batch_max);
        let mut ticker = tokio::time::interval(self.batch_delay);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Dropping the `Telemetry` handle must not stop the pipeline while sinks live on.
        let mut controlled = true;
        let busy_drain = tokio::time::sleep(BUSY_DRAIN_PERIOD);
        tokio::pin!(busy_drain);
        let mut busy = false;
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut buf, self.batch_max), if !busy => {
                    if n == 0 {
                        break;
                    }
                    self.take(&mut buf);
                    if self.pending.len() >= self.batch_max {
                        self.ship();
                    }
                    busy = true;
                    busy_drain.as_mut().reset(tokio::time::Instant::now() + BUSY_DRAIN_PERIOD);
                }
                () = &mut busy_drain, if busy => {
                    let (taken, closed) = self.drain(&mut buf);
                    if self.pending.len() >= self.batch_max {
                        self.ship();
                    }
                    if closed {
                        break;
                    }
                    busy = taken > 0;
                    busy_drain.as_mut().reset(tokio::time::Instant::now() + BUSY_DRAIN_PERIOD);
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

    /// Takes what the queue holds without waiting: how many spans, and whether every sender
    /// is gone.
    fn drain(&mut self, buf: &mut Vec<Arc<SpanRecord>>) -> (usize, bool) {
        let closed = loop {
            match self.rx.try_recv() {
                Ok(span) => buf.push(span),
                Err(mpsc::error::TryRecvError::Empty) => break false,
                Err(mpsc::error::TryRecvError::Disconnected) => break true,
            }
        };
        let taken = buf.len();
        self.take(buf);
        (taken, closed)
    }

    fn take(&mut self, buf: &mut Vec<Arc<SpanRecord>>) {
        self.metrics.set_queue_length(self.rx.len());
        self.pending.append(buf);
    }

    fn ship(&mut self) {
        while !self.pending.is_empty() {
            let rest = self
                .pending
                .split_off(self.pending.len().min(self.batch_max));
            let batch = std::mem::replace(&mut self.pending, rest);
            let n = batch.len() as u64;
            if self.export_tx.try_send(ExportJob::Batch(batch)).is_err() {
                self.metrics.spans_dropped("export_backlog", n);
            }
        }
    }

    async fn barrier(&mut self, ack: oneshot::Sender<()>) {
        if let Err(mpsc::error::SendError(ExportJob::Barrier(ack))) =
            self.export_tx.send(ExportJob::Barrier(ack)).await
        {
            let _ = ack.send(());
        }
    }
}

struct ExportTask {
    exporter: export::Exporter,
    budget: Duration,
    metrics: Metrics,
    degradation: Degradation,
    failing: bool,
}

impl ExportTask {
    async fn run(mut self, mut rx: mpsc::Receiver<ExportJob>) {
        while let Some(job) = rx.recv().await {
            match job {
                ExportJob::Barrier(ack) => {
                    let _ = ack.send(());
                }
                ExportJob::Batch(spans) => {
                    let n = spans.len() as u64;
                    let result =
                        tokio::time::timeout(self.budget, self.exporter.export(&spans)).await;
                    match result {
                        Ok(Ok(())) => self.succeeded(n),
                        Ok(Err(e)) => self.failed(n, &e),
                        Err(_) => self.failed(n, "export deadline passed"),
                    }
                }
            }
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
