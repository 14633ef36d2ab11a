//! Process wiring: binds the listeners, builds the runtime handles (rules, metrics, span
//! sink), serves until shutdown and then drains.
//!
//! [`Stitch`] is the one entry point for both the binary and the integration tests, so the
//! tests exercise exactly what production runs (tests bind port 0 and read the bound
//! addresses back).
//!
//! The proxy listeners are served by `workers`: threads with a runtime each, as many as
//! [`Settings::workers`] says ([`cpus`] decides it for the binary). The admin server, the rules
//! watcher and the telemetry tasks stay on the caller's runtime, never on a proxy worker.

mod cgroup;
pub mod cpus;
pub mod memory;
mod workers;

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::RulesHandle;
use crate::direction::Direction;
use crate::propagation::Inflight;
use crate::proxy::addrs::Target;
use crate::proxy::cap::ConnectionCap;
use crate::proxy::http::pool::PoolSettings;
use crate::proxy::http::server::ServerLimits;
use crate::proxy::{ProxyConfig, ProxyHandles};
use crate::shutdown::ShutdownHandle;
use crate::telemetry::{Telemetry, TelemetryConfig};
use crate::trace::TraceHandles;

use self::cpus::{WorkerCount, WorkersReason};
use self::memory::CapReason;
use self::workers::{SharedListener, Workers};

/// How long an idle HTTP/1 keep-alive client connection is kept by default: an hour, as
/// Envoy does, so that the pools of common HTTP clients (Go 90 s, .NET 1 min, OkHttp 5 min,
/// the JDK 20 min) always close an idle connection before stitch does (see ARCHITECTURE.md).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long an HTTP/1 keep-alive client connection is idle before it is parked out of the
/// runtime (`proxy::park`): longer than the gaps between a busy client's requests (a
/// connection at 40 requests a second never parks), short enough that a burst of new
/// connections that go idle is parked before it adds up (see ARCHITECTURE.md).
pub const DEFAULT_IDLE_PARK_AFTER: Duration = Duration::from_millis(50);

/// Everything `stitch run` can be told, as plain data (CLI flags and env vars map onto it).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Rules file; `None` runs on the built-in defaults.
    pub config: Option<PathBuf>,
    /// A `config` file that does not exist yet means the defaults until it appears (an
    /// optional ConfigMap in Kubernetes).
    pub config_optional: bool,
    /// Inbound listener address.
    pub inbound_listen: SocketAddr,
    /// Outbound listener addresses (loopback by default: explicit mode must not be an open proxy).
    pub outbound_listen: Vec<SocketAddr>,
    /// Admin server address.
    pub admin_listen: SocketAddr,
    /// Serve the admin server's data endpoints beyond loopback (`--admin-expose-data`).
    pub admin_expose_data: bool,
    /// Explicit inbound mode: every inbound connection goes to this `host:port`.
    pub inbound_target: Option<String>,
    /// `service.name` of the spans; `None` keeps the telemetry config's (`OTEL_SERVICE_NAME`,
    /// `OTEL_RESOURCE_ATTRIBUTES`, else `unknown_service`).
    pub service_name: Option<String>,
    /// Destination ports treated as opaque TCP without detection.
    pub opaque_ports: Vec<u16>,
    /// How long protocol detection waits for the client's first bytes.
    pub detect_timeout: Duration,
    /// Upper bound on an upstream TCP connect.
    pub connect_timeout: Duration,
    /// Deadline for a client's request head, from its first byte (slowloris guard).
    pub header_read_timeout: Duration,
    /// An idle HTTP/1 keep-alive client connection (waiting for its next request, no byte of
    /// it yet) is closed after this long.
    pub idle_timeout: Duration,
    /// An idle HTTP/1 keep-alive client connection is parked (no task, ~0.3 KiB) after this
    /// long; not parked when it is not shorter than `idle_timeout`.
    pub idle_park_after: Duration,
    /// Idle pooled upstream connections are closed after this long.
    pub upstream_idle_timeout: Duration,
    /// Largest request head accepted, in bytes.
    pub max_header_bytes: usize,
    /// Most header fields in one request head.
    pub max_headers: usize,
    /// Most concurrent client connections per direction (inbound; outbound, all its
    /// listeners together).
    pub max_connections: usize,
    /// What decided `max_connections` (the CLI derives it from the memory limit:
    /// [`memory::decide`]); logged at start-up and shown at `/config`.
    pub max_connections_reason: CapReason,
    /// HTTP/2 concurrent streams per client connection.
    pub h2_max_concurrent_streams: u32,
    /// An HTTP/2 client connection silent this long gets GOAWAY.
    pub h2_idle_timeout: Duration,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub drain_timeout: Duration,
    /// Record `url.query` on spans (off by default: queries often carry secrets).
    pub record_url_query: bool,
    /// The span pipeline (OTLP endpoint, ring bounds, degradation); read from the standard
    /// `OTEL_*` variables by the CLI, passed explicitly by tests. `service_name` above wins
    /// over the one in here.
    pub telemetry: TelemetryConfig,
    /// The app's kubelet probes the admin server performs (set by the Kubernetes injector).
    pub app_probes: crate::admin::AppProbeSettings,
    /// How many proxy workers (threads with a runtime each) serve the listeners, and why:
    /// the CLI sizes it by the CPUs stitch may use ([`cpus::decide`]); the default is one.
    pub workers: WorkerCount,
    /// A worker clearly busier than another hands it the connections it accepts (on by
    /// default; off only to measure what that buys).
    pub worker_handoff: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            config: None,
            config_optional: false,
            inbound_listen: SocketAddr::from((Ipv6Addr::UNSPECIFIED, 4143)),
            outbound_listen: vec![
                SocketAddr::from((Ipv4Addr::LOCALHOST, 4140)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, 4140)),
            ],
            admin_listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 4191)),
            admin_expose_data: false,
            inbound_target: None,
            service_name: None,
            opaque_ports: Vec::new(),
            detect_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(3),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            idle_park_after: DEFAULT_IDLE_PARK_AFTER,
            upstream_idle_timeout: Duration::from_secs(90),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_connections: memory::NO_LIMIT_CONNECTIONS,
            max_connections_reason: CapReason::Settings,
            h2_max_concurrent_streams: 256,
            h2_idle_timeout: Duration::from_secs(600),
            drain_timeout: Duration::from_secs(30),
            record_url_query: false,
            telemetry: TelemetryConfig::default(),
            app_probes: Default::default(),
            workers: WorkerCount::fixed(std::num::NonZeroUsize::MIN, WorkersReason::Settings),
            worker_handoff: true,
        }
    }
}

impl Settings {
    /// The data path's share of the settings; `own_addrs` are the bound listeners. An
    /// `--inbound-target` that does not parse was refused by [`Stitch::bind`].
    fn proxy_config(&self, own_addrs: Vec<SocketAddr>) -> ProxyConfig {
        ProxyConfig {
            inbound_target: self
                .inbound_target
                .as_deref()
                .and_then(|t| Target::parse_authority(t, 80)),
            opaque_ports: self.opaque_ports.clone(),
            detect_timeout: self.detect_timeout,
            max_connections: self.max_connections,
            idle_park_after: self.idle_park_after,
            server: ServerLimits {
                header_read_timeout: self.header_read_timeout,
                idle_timeout: self.idle_timeout,
                max_header_bytes: self.max_header_bytes,
                max_headers: self.max_headers,
                h2_max_concurrent_streams: self.h2_max_concurrent_streams,
                h2_idle_timeout: self.h2_idle_timeout,
            },
            pool: PoolSettings {
                connect_timeout: self.connect_timeout,
                idle_timeout: self.upstream_idle_timeout,
            },
            own_addrs,
        }
    }
}

/// Why stitch could not start.
#[derive(Debug)]
pub struct StartError {
    what: String,
    source: Option<io::Error>,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

impl StartError {
    fn bind(what: &str, addr: SocketAddr, e: io::Error) -> Self {
        StartError {
            what: format!("cannot bind the {what} listener on {addr}: {e}"),
            source: Some(e),
        }
    }

    fn listener(direction: Direction, e: io::Error) -> Self {
        StartError {
            what: format!("cannot hand the {direction} listener to the workers: {e}"),
            source: Some(e),
        }
    }

    /// A start-up failure described by a message (e.g. an invalid rules file).
    pub fn msg(what: impl Into<String>) -> Self {
        StartError {
            what: what.into(),
            source: None,
        }
    }
}

/// A bound, not yet serving stitch instance.
pub struct Stitch {
    settings: Settings,
    inbound: TcpListener,
    outbound: Vec<TcpListener>,
    admin: TcpListener,
    shutdown: ShutdownHandle,
    ready: Arc<AtomicBool>,
    rules: RulesHandle,
}

impl std::fmt::Debug for Stitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stitch")
            .field("inbound", &self.inbound_addr())
            .field("outbound", &self.outbound_addrs())
            .field("admin", &self.admin_addr())
            .finish()
    }
}

impl Stitch {
    /// Binds every listener. The admin server answers `/live` as soon as [`Stitch::run`]
    /// starts; `/ready` turns true once the proxy listeners are serving.
    pub async fn bind(settings: Settings) -> Result<Self, StartError> {
        if let Some(target) = &settings.inbound_target
            && Target::parse_authority(target, 80).is_none()
        {
            return Err(StartError::msg(format!(
                "--inbound-target {target:?} is not a host:port"
            )));
        }
        // An invalid rules file stops start-up with the same errors `check-config` prints.
        // Reading it is file I/O: on the blocking pool, not on the caller's runtime thread.
        let (path, optional) = (settings.config.clone(), settings.config_optional);
        let rules = tokio::task::spawn_blocking(move || match &path {
            Some(path) if optional => RulesHandle::from_file_if_exists(path),
            path => RulesHandle::from_optional_file(path.as_deref()),
        })
        .await
        .map_err(|e| StartError::msg(format!("loading the rules file failed: {e}")))?
        .map_err(|e| StartError::msg(format!("invalid rules file:\n{e}")))?;
        let inbound = bind_inbound(settings.inbound_listen).await?;
        let mut outbound = Vec::new();
        for &addr in &settings.outbound_listen {
            match listen(addr) {
                Ok(l) => outbound.push(l),
                // The default pair includes [::1]; a kernel without IPv6 only loses that one.
                Err(e) if addr.is_ipv6() && outbound_is_default(&settings, addr) => {
                    tracing::info!(%addr, error = %e, "no IPv6 loopback; outbound listens on IPv4 only");
                }
                Err(e) => return Err(StartError::bind("outbound", addr, e)),
            }
        }
        if outbound.is_empty() {
            return Err(StartError::msg("no outbound listener could be bound"));
        }
        for l in &outbound {
            if let Ok(addr) = l.local_addr()
                && !addr.ip().is_loopback()
            {
                tracing::warn!(%addr, "the outbound listener is not on loopback: anyone who reaches it can use stitch as a proxy");
            }
        }
        let admin = TcpListener::bind(settings.admin_listen)
            .await
            .map_err(|e| StartError::bind("admin", settings.admin_listen, e))?;
        Ok(Stitch {
            settings,
            inbound,
            outbound,
            admin,
            shutdown: ShutdownHandle::default(),
            ready: Arc::new(AtomicBool::new(false)),
            rules,
        })
    }

    /// The bound inbound address (useful when the settings asked for port 0).
    pub fn inbound_addr(&self) -> SocketAddr {
        self.inbound
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The bound outbound addresses.
    pub fn outbound_addrs(&self) -> Vec<SocketAddr> {
        self.outbound
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// A handle that triggers graceful shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Serves until shutdown is triggered, then stops accepting on every worker, lets in-flight
    /// requests finish within the drain deadline, closes the connections still open at the
    /// deadline (each worker's runtime ends), flushes spans, and returns.
    pub async fn run(self) -> Result<(), StartError> {
        let Stitch {
            settings,
            inbound,
            outbound,
            admin,
            shutdown,
            ready,
            rules,
        } = self;
        let mut own_addrs = vec![
            inbound
                .local_addr()
                .map_err(|e| StartError::bind("inbound", settings.inbound_listen, e))?,
        ];
        own_addrs.extend(outbound.iter().filter_map(|l| l.local_addr().ok()));
        own_addrs.extend(admin.local_addr().ok());

        let mut telemetry_config = settings.telemetry.clone();
        if let Some(name) = &settings.service_name {
            telemetry_config = telemetry_config.with_service_name(name.clone());
        }
        // Starting the pipeline waits for the export thread to build its exporter (CA and
        // native root certificates read from disk): on the blocking pool, whose threads keep
        // this runtime's context, so the intake task it spawns still runs here.
        let telemetry = tokio::task::spawn_blocking(move || Telemetry::start(telemetry_config))
            .await
            .map_err(|e| StartError::msg(format!("cannot start the span pipeline: {e}")))?;
        {
            let metrics = telemetry.metrics();
            rules.on_reload(move |result| metrics.config_reload(result));
        }
        let _watch = rules
            .path()
            .and_then(|path| watch_rules(path.to_path_buf(), &rules));
        let admin_state = crate::admin::AdminState::new(ready.clone())
            .with_telemetry(&telemetry)
            .with_pod_hooks(settings.app_probes.clone(), shutdown.clone())
            .exposing_data(settings.admin_expose_data)
            .with_config_view({
                let rules = rules.clone();
                let exporter = telemetry.config_view();
                let limits = limits_view(&settings);
                move || {
                    let mut view = rules.to_json();
                    if let Some(map) = view.as_object_mut() {
                        map.insert("telemetry".to_owned(), exporter.clone());
                        map.insert("limits".to_owned(), limits.clone());
                    }
                    view
                }
            });
        if let Ok(addr) = admin.local_addr() {
            tracing::info!(listener = "admin", %addr, "listening");
        }
        // The admin server outlives the drain, so probes see `/ready` turn 503 (and `/metrics`
        // stays scrapeable) while in-flight requests finish; it stops once they have.
        let admin_stop = ShutdownHandle::default();
        let admin_task =
            admin_stop.spawn(crate::admin::serve(admin, admin_state, admin_stop.clone()));

        let trace = TraceHandles {
            rules,
            inflight: Inflight::default(),
            sink: telemetry.sink(),
            metrics: telemetry.metrics(),
            record_query: settings.record_url_query,
        };
        let config = settings.proxy_config(own_addrs);
        let handles = ProxyHandles::new(trace);
        let mut shared = Vec::new();
        // One cap per direction: the outbound IPv4 and IPv6 listeners are one front door of
        // the app's, and their connections cost the same memory.
        let inbound_cap = ConnectionCap::new(config.max_connections);
        let outbound_cap = ConnectionCap::new(config.max_connections);
        for (listener, direction) in std::iter::once((inbound, Direction::Inbound))
            .chain(outbound.into_iter().map(|l| (l, Direction::Outbound)))
        {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(listener = %direction, %addr, "listening");
            }
            shared.push(SharedListener {
                listener: listener
                    .into_std()
                    .map_err(|e| StartError::listener(direction, e))?,
                direction,
                cap: match direction {
                    Direction::Inbound => inbound_cap.clone(),
                    Direction::Outbound => outbound_cap.clone(),
                },
            });
        }
        let count = settings.workers;
        let workers = match Workers::start(
            count.count,
            &config,
            &handles,
            settings.worker_handoff,
            shared,
            &shutdown,
        )
        .await
        {
            Ok(w) => w,
            Err(e) => {
                admin_stop.trigger();
                return Err(StartError {
                    what: format!("cannot start the proxy workers: {e}"),
                    source: Some(e),
                });
            }
        };
        handles.trace.metrics.set_workers(count.count.get());
        match count.reason {
            WorkersReason::CgroupQuota { millicpus, .. } => tracing::info!(
                workers = count.count.get(),
                reason = count.reason.as_str(),
                quota_cpus = millicpus as f64 / 1000.0,
                "proxy workers started"
            ),
            reason => tracing::info!(
                workers = count.count.get(),
                reason = reason.as_str(),
                "proxy workers started"
            ),
        }
        log_connection_cap(&settings);
        ready.store(true, Ordering::Release);

        shutdown.triggered().await;
        ready.store(false, Ordering::Release);
        if shutdown.drain(settings.drain_timeout).await {
            tracing::info!("drained");
        } else {
            tracing::warn!(deadline = ?settings.drain_timeout, "drain deadline passed; closing the remaining connections");
        }
        // Ends every worker's runtime: what the drain left open is closed on every worker.
        workers.stop().await;
        // Spans of the drained requests go out before exit.
        admin_stop.trigger();
        let _ = admin_task.await;
        telemetry.shutdown(Duration::from_secs(5)).await;
        Ok(())
    }
}

/// Watches the rules file (edits, renames, ConfigMap symlink swaps) and SIGHUP. A watcher that
/// cannot start leaves the rules as loaded: degraded, not fatal.
/// The `limits` object of `/config`: the connection cap per direction and what decided it.
fn limits_view(settings: &Settings) -> serde_json::Value {
    serde_json::json!({
        "max_connections": settings.max_connections,
        "max_connections_reason": settings.max_connections_reason.as_str(),
        "memory_limit_bytes": settings.max_connections_reason.limit_bytes(),
    })
}

/// Says at start-up how many connections each direction serves at once and why.
fn log_connection_cap(settings: &Settings) {
    let reason = settings.max_connections_reason;
    match reason.limit_bytes() {
        Some(limit) => tracing::info!(
            max_connections = settings.max_connections,
            reason = reason.as_str(),
            memory_limit_mib = limit as f64 / f64::from(1u32 << 20),
            "connection cap per direction"
        ),
        None => tracing::info!(
            max_connections = settings.max_connections,
            reason = reason.as_str(),
            "connection cap per direction"
        ),
    }
}

fn watch_rules(path: PathBuf, rules: &RulesHandle) -> Option<crate::config::WatchGuard> {
    match crate::config::watch(path, rules.clone()) {
        Ok(guard) => Some(guard),
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the rules file; changes need a restart");
            None
        }
    }
}

fn outbound_is_default(settings: &Settings, addr: SocketAddr) -> bool {
    Settings::default().outbound_listen.contains(&addr) && settings.outbound_listen.contains(&addr)
}

/// Binds the inbound listener; the dual-stack default falls back to IPv4 where the kernel
/// has no IPv6.
/// Clients beyond the connection cap wait in the listen backlog. The kernel caps it at
/// `net.core.somaxconn` (4096 by default since Linux 5.4); tokio's default of 1024 made a burst
/// of 10,000 clients overflow it, and a handshake completed while the queue is full is dropped:
/// the client believes it is connected, and after the SYN-ACK retries (about a minute) its
/// request fails with a reset (BENCHMARKS.md, "Under a memory limit").
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a proxy listener with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as tokio's `bind` does).
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn bind_inbound(addr: SocketAddr) -> Result<TcpListener, StartError> {
    match listen(addr) {
        Ok(l) => Ok(l),
        Err(e) if addr == Settings::default().inbound_listen => {
            let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
            tracing::info!(error = %e, %v4, "no IPv6; inbound listens on IPv4 only");
            listen(v4).map_err(|e| StartError::bind("inbound", v4, e))
        }
        Err(e) => Err(StartError::bind("inbound", addr, e)),
    }
}
