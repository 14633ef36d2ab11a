//! The admin server: liveness, readiness, Prometheus metrics, the rules in force, recent
//! traces (JSON, or pages with seams and waterfalls: `view`), propagation health and an
//! OTLP/HTTP receiver.
//!
//! It runs on its own listener so probes and scrapes never queue behind proxied traffic, with
//! limits of its own (`server`: connection cap with idle eviction, idle and header timeouts,
//! accept backoff). The data-bearing endpoints answer loopback clients only unless
//! `--admin-expose-data` is set (`access`).
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /live` | 200 while the process serves |
//! | `GET /ready` | 200 once listeners serve and rules are loaded, 503 otherwise |
//! | `GET /metrics` | OpenMetrics text from the registry |
//! | `GET /config` (data) | the JSON the `config_view` hook returns (no secrets) |
//! | `GET /traces` (data) | recent traces, newest first; `?service=&status=error\|ok&broken=&repaired=&inferred=&min_duration_ms=&limit=`; a page with `Accept: text/html` |
//! | `GET /traces/{trace_id}` (data) | one trace's spans with its integrity verdict (a page with `Accept: text/html`; `?span=` opens one) |
//! | `GET /health` (data) | propagation counters since start and over the last minutes (a page, or JSON) |
//! | `POST /v1/traces` (data) | OTLP/HTTP `ExportTraceServiceRequest`, protobuf or JSON, into the ring |
//! | `GET /app-probe/{container}/{kind}` | the app's original kubelet probe, performed by stitch (`app_probe`) |
//! | `POST /shutdown` | loopback clients only: graceful shutdown (a classic-mode Job's last step) |

mod access;
mod app_probe;
mod health;
mod otlp;
mod server;
mod shutdown;
mod traces;
mod view;

pub use server::AdminLimits;
pub use traces::traces_html;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::shutdown::ShutdownHandle;
use crate::telemetry::config::RingConfig;
use crate::telemetry::{Metrics, Telemetry, TraceRing};

pub use app_probe::AppProbeSettings;

/// Largest `POST /v1/traces` body accepted, by default, before and after decompression.
pub(crate) const DEFAULT_MAX_OTLP_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The hook `/config` calls for the rules in force (filled by the app from the rules handle).
pub type ConfigView = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Shared state the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// True once the proxy listeners serve; false again while draining.
    pub ready: Arc<AtomicBool>,
    /// Produces the `/config` document; it must never include secrets.
    pub config_view: ConfigView,
    /// The registry `/metrics` encodes.
    pub metrics: Metrics,
    /// The ring `/traces` reads and `/v1/traces` writes.
    pub ring: TraceRing,
    /// Largest accepted `POST /v1/traces` body, before and after decompression.
    pub max_otlp_body_bytes: usize,
    /// Serve the data-bearing endpoints to clients beyond loopback (`--admin-expose-data`).
    pub expose_data: bool,
    /// Connection cap, idle timeout, HTTP/2 streams.
    pub limits: AdminLimits,
    /// Propagation counters sampled for `/health` (by a task [`serve`] starts).
    history: health::History,
    /// The app probes `/app-probe/…` performs (Kubernetes injection).
    pub app_probes: Arc<AppProbeSettings>,
    /// What `POST /shutdown` triggers; `None` answers 404.
    pub shutdown: Option<ShutdownHandle>,
}

impl fmt::Debug for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminState")
            .field("ready", &self.ready)
            .field("expose_data", &self.expose_data)
            .field("ring_spans", &self.ring.span_count())
            .finish_non_exhaustive()
    }
}

impl AdminState {
    /// State with an empty `/config`, a fresh registry and an empty ring; attach the real
    /// handles with [`AdminState::with_telemetry`] and [`AdminState::with_config_view`].
    pub fn new(ready: Arc<AtomicBool>) -> Self {
        AdminState {
            ready,
            config_view: Arc::new(|| serde_json::json!({})),
            metrics: Metrics::new(),
            ring: TraceRing::new(RingConfig::default()),
            max_otlp_body_bytes: DEFAULT_MAX_OTLP_BODY_BYTES,
            expose_data: false,
            limits: AdminLimits::default(),
            history: health::History::default(),
            app_probes: Arc::default(),
            shutdown: None,
        }
    }

    /// Serves `/app-probe/…` with these probes, and `POST /shutdown` with this handle.
    pub fn with_pod_hooks(mut self, probes: AppProbeSettings, shutdown: ShutdownHandle) -> Self {
        self.app_probes = Arc::new(probes);
        self.shutdown = Some(shutdown);
        self
    }

    /// Serves the data-bearing endpoints to every client (`true`), or to loopback only.
    pub fn exposing_data(mut self, expose: bool) -> Self {
        self.expose_data = expose;
        self
    }

    /// Serves this pipeline's metrics and ring.
    pub fn with_telemetry(mut self, telemetry: &Telemetry) -> Self {
        self.metrics = telemetry.metrics();
        self.ring = telemetry.ring();
        self
    }

    /// Sets the `/config` hook.
    pub fn with_config_view(
        mut self,
        view: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        self.config_view = Arc::new(view);
        self
    }
}

/// Serves the admin endpoints until shutdown.
pub async fn serve(listener: TcpListener, state: AdminState, shutdown: ShutdownHandle) {
    let sampler = health::sample(
        state.metrics.clone(),
        state.history.clone(),
        shutdown.clone(),
    );
    tokio::spawn(sampler);
    server::accept_loop(listener, state, shutdown).await;
}

async fn route(
    state: &AdminState,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if !access::allows(&path, peer, state.expose_data) {
        tracing::debug!(%peer, %path, "refused a data endpoint to a client beyond loopback");
        return text(
            StatusCode::FORBIDDEN,
            "this endpoint answers loopback clients only (kubectl port-forward); start stitch with --admin-expose-data to serve it to others\n",
        );
    }
    match (&method, path.as_str()) {
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") => {
            if state.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        (&Method::GET, "/metrics") => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode(),
        ),
        (&Method::GET, "/config") => json(StatusCode::OK, &(state.config_view)()),
        (&Method::GET, "/traces") => traces::list(state, &req),
        (&Method::GET, "/health") => health::page(state, &req),
        (&Method::GET, p) if p.starts_with("/traces/") => {
            traces::one(state, &req, &p["/traces/".len()..])
        }
        (&Method::POST, "/v1/traces") => otlp::receive(state, req).await,
        (&Method::GET, p) if p.starts_with(crate::config::app_probes::APP_PROBE_PATH_PREFIX) => {
            app_probe::answer(state, &req).await
        }
        (&Method::POST, "/shutdown") => shutdown::request(state, peer),
        (_, "/live" | "/ready" | "/metrics" | "/config" | "/traces" | "/health" | "/v1/traces") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    resp
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    respond(status, "application/json", value.to_string())
}

/// Whether the client asked for HTML (a browser) rather than JSON.
fn wants_html(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/html"))
}
