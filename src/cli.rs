//! The `stitch` command line. Flag and env-var names are a contract (see README): operators'
//! manifests and the Helm chart call them, so they are never renamed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::app::{Settings, Stitch, cpus, memory};

/// Top-level command line.
#[derive(Debug, Parser)]
#[command(
    name = "stitch",
    version,
    about = "A sidecar proxy that repairs distributed traces"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy: inbound and outbound listeners plus the admin server.
    Run(Box<RunArgs>),
    /// Validate a rules file and print every error with its line and column.
    CheckConfig {
        /// The rules file to validate.
        file: PathBuf,
    },
    /// Install (or remove) the pod's iptables redirect rules; run by the init container.
    Iptables(crate::iptables::IptablesArgs),
    /// Serve the Kubernetes mutating admission webhook that injects stitch into pods (HTTPS).
    Webhook(Box<crate::webhook::WebhookArgs>),
    /// Inject stitch into Kubernetes manifests offline (stdout: the manifests; stderr: a summary).
    Inject(Box<crate::inject::command::InjectArgs>),
    /// Wait until the sidecar's /ready answers 200 (classic-mode postStart hook).
    WaitReady(crate::hooks::WaitReadyArgs),
    /// Wait until the app's connections through the sidecar are gone (classic-mode preStop hook).
    WaitDrain(crate::hooks::WaitDrainArgs),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers (and for tests that read the bound ports).
    Json,
}

/// Flags of `stitch run`; each maps onto a field of [`Settings`].
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Rules file, watched and hot-reloaded.
    #[arg(long, env = "STITCH_CONFIG")]
    config: Option<PathBuf>,
    /// A --config file that does not exist yet means the built-in defaults until it appears
    /// (a ConfigMap mounted `optional: true`).
    #[arg(long, env = "STITCH_CONFIG_OPTIONAL")]
    config_optional: bool,
    /// Where redirected inbound connections land [default: [::]:4143, or 0.0.0.0:4143 without IPv6].
    #[arg(long, env = "STITCH_INBOUND_LISTEN")]
    inbound_listen: Option<SocketAddr>,
    /// Where the app's outbound connections land; may repeat [default: 127.0.0.1:4140 and [::1]:4140].
    #[arg(long, env = "STITCH_OUTBOUND_LISTEN", value_delimiter = ',')]
    outbound_listen: Vec<SocketAddr>,
    /// Admin HTTP server (health, metrics, rules, traces).
    #[arg(long, env = "STITCH_ADMIN_LISTEN", default_value = "0.0.0.0:4191")]
    admin_listen: SocketAddr,
    /// Serve /traces, /config, /health and POST /v1/traces to clients beyond loopback (a
    /// central stitch collecting other instances' spans); off: loopback only.
    #[arg(long, env = "STITCH_ADMIN_EXPOSE_DATA")]
    admin_expose_data: bool,
    /// Explicit mode: send every inbound connection here instead of its original destination.
    #[arg(long, env = "STITCH_INBOUND_TARGET")]
    inbound_target: Option<String>,
    /// `service.name` of the spans [default: from OTEL_RESOURCE_ATTRIBUTES, else unknown_service].
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    service_name: Option<String>,
    /// Log line format; filter with RUST_LOG.
    #[arg(long, env = "STITCH_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Destination ports whose traffic is opaque TCP: no protocol detection, bytes copied as-is.
    #[arg(long, env = "STITCH_OPAQUE_PORTS", value_delimiter = ',')]
    opaque_ports: Vec<u16>,
    /// How long to wait for a client's first bytes before treating the connection as opaque
    /// (server-speaks-first protocols such as SMTP or MySQL).
    #[arg(long, env = "STITCH_DETECT_TIMEOUT", value_parser = humantime::parse_duration, default_value = "1s")]
    detect_timeout: Duration,
    /// Upper bound on establishing an upstream TCP connection.
    #[arg(long, env = "STITCH_CONNECT_TIMEOUT", value_parser = humantime::parse_duration, default_value = "3s")]
    connect_timeout: Duration,
    /// A client must complete a request head within this time from its first byte (slowloris
    /// guard; the first head of a connection: from accept).
    #[arg(long, env = "STITCH_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    header_read_timeout: Duration,
    /// An HTTP/1 keep-alive client connection idle this long between requests is closed
    /// (longer than client pools keep idle connections, so they close first).
    #[arg(long, env = "STITCH_IDLE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "1h")]
    idle_timeout: Duration,
    /// An HTTP/1 keep-alive client connection idle this long leaves its task and waits in a
    /// lot of parked connections (about 0.3 KiB instead of 4); a value not shorter than
    /// --idle-timeout never parks.
    #[arg(long, env = "STITCH_IDLE_PARK_AFTER", value_parser = humantime::parse_duration, default_value = "50ms")]
    idle_park_after: Duration,
    /// Idle pooled upstream connections are closed after this long.
    #[arg(long, env = "STITCH_UPSTREAM_IDLE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "90s")]
    upstream_idle_timeout: Duration,
    /// Largest request head accepted from a client, in bytes.
    #[arg(long, env = "STITCH_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    max_header_bytes: usize,
    /// Most header fields accepted in one request head.
    #[arg(long, env = "STITCH_MAX_HEADERS", default_value_t = 100)]
    max_headers: usize,
    /// Most client connections served at once per direction (inbound; outbound, all its
    /// listeners together); further ones wait in the backlog [default: derived from the cgroup
    /// memory limit so the pod is never OOM-killed (see the README), or 10000 with no limit].
    #[arg(long, env = "STITCH_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,
    /// HTTP/2 streams one client connection may have open at once.
    #[arg(long, env = "STITCH_H2_MAX_CONCURRENT_STREAMS", default_value_t = 256)]
    h2_max_concurrent_streams: u32,
    /// An HTTP/2 client connection with no bytes either way for this long is sent GOAWAY
    /// (open streams may finish).
    #[arg(long, env = "STITCH_H2_IDLE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10m")]
    h2_idle_timeout: Duration,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish before exit.
    #[arg(long, env = "STITCH_DRAIN_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    drain_timeout: Duration,
    /// Record the query string as `url.query` on spans (off: queries often carry secrets).
    #[arg(long, env = "STITCH_RECORD_URL_QUERY")]
    record_url_query: bool,
    /// Most spans the in-memory ring keeps (about 1 KiB each); the oldest are evicted first.
    #[arg(long, env = "STITCH_RING_SPANS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    ring_spans: u32,
    /// The app's kubelet probes, performed at /app-probe/… (JSON, written by the injector).
    #[arg(long, env = crate::config::app_probes::APP_PROBES_ENV, hide = true,
          value_parser = crate::config::app_probes::parse_app_probes)]
    app_probes: Option<crate::config::app_probes::AppProbes>,
    /// Proxy workers: threads with an event loop, connections and upstream pool each
    /// [default: the CPUs stitch may use (affinity mask, cgroup cpu.max quota rounded up), or 2
    /// with no CPU limit].
    #[arg(long, env = "STITCH_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
    /// `false`: each worker keeps the connections it accepts, however busy (for measuring
    /// what handing them to the least-loaded worker buys).
    #[arg(long, env = "STITCH_WORKER_HANDOFF", hide = true, default_value_t = true,
          action = clap::ArgAction::Set)]
    worker_handoff: bool,
    /// Where `/proc/self/cgroup`, `/sys/fs/cgroup` (CPU quota, memory limit) and the online CPU
    /// list are read (tests point it at a fake tree).
    #[arg(long, env = "STITCH_CPU_FILES_ROOT", hide = true, default_value = "/")]
    cpu_files_root: PathBuf,
    /// The pod's IP (downward API), where app probes are sent.
    #[arg(long, env = "POD_IP", hide = true)]
    pod_ip: Option<std::net::IpAddr>,
}

impl RunArgs {
    fn into_settings(self) -> Settings {
        let defaults = Settings::default();
        let ring_spans = self.ring_spans as usize;
        let cap = memory::decide(
            self.max_connections.map(|n| n as usize),
            memory::memory_limit(&self.cpu_files_root),
            ring_spans,
        );
        Settings {
            config: self.config,
            config_optional: self.config_optional,
            inbound_listen: self.inbound_listen.unwrap_or(defaults.inbound_listen),
            outbound_listen: if self.outbound_listen.is_empty() {
                defaults.outbound_listen
            } else {
                self.outbound_listen
            },
            admin_listen: self.admin_listen,
            admin_expose_data: self.admin_expose_data,
            inbound_target: self.inbound_target,
            service_name: self.service_name,
            opaque_ports: self.opaque_ports,
            detect_timeout: self.detect_timeout,
            connect_timeout: self.connect_timeout,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            idle_park_after: self.idle_park_after,
            upstream_idle_timeout: self.upstream_idle_timeout,
            max_header_bytes: self.max_header_bytes,
            max_headers: self.max_headers,
            max_connections: cap.per_direction,
            max_connections_reason: cap.reason,
            h2_max_concurrent_streams: self.h2_max_concurrent_streams,
            h2_idle_timeout: self.h2_idle_timeout,
            drain_timeout: self.drain_timeout,
            record_url_query: self.record_url_query,
            // The one place the OTEL_* environment is read (tests pass explicit values).
            telemetry: crate::telemetry::TelemetryConfig::from_env(|k| std::env::var(k).ok())
                .with_ring_spans(self.ring_spans as usize),
            app_probes: crate::admin::AppProbeSettings {
                probes: self.app_probes.unwrap_or_default(),
                pod_ip: self.pod_ip,
            },
            workers: cpus::decide(
                self.workers
                    .and_then(|n| std::num::NonZeroUsize::new(usize::from(n))),
                cpus::read_limits(&self.cpu_files_root),
            ),
            worker_handoff: self.worker_handoff,
        }
    }
}

/// Parses the command line and runs the chosen command; the process exit code is the result.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            init_logging(args.log_format);
            run(args.into_settings())
        }
        Command::CheckConfig { file } => crate::config::check_config_command(&file),
        Command::Iptables(args) => {
            init_logging(LogFormat::Text);
            crate::iptables::command(args)
        }
        Command::Webhook(args) => {
            init_logging(LogFormat::Json);
            crate::webhook::command(*args)
        }
        Command::Inject(args) => crate::inject::command::command(*args),
        Command::WaitReady(args) => crate::hooks::wait_ready(args),
        Command::WaitDrain(args) => crate::hooks::wait_drain(args),
    }
}

fn run(settings: Settings) -> ExitCode {
    // This runtime hosts the admin server, the rules watcher, signals and the span intake;
    // the proxy listeners are served by worker threads with runtimes of their own
    // (`app::workers`), so one thread is enough here.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let stitch = match Stitch::bind(settings).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        stitch.shutdown_handle().trigger_on_signals();
        match stitch.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "stopped with an error");
                ExitCode::FAILURE
            }
        }
    })
}

/// Installs the global `tracing` subscriber: `RUST_LOG` filter (default `info`), text or JSON,
/// to stderr. ANSI colours only on a terminal, so piped logs stay parseable.
pub(crate) fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,opentelemetry=error"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A second init (tests starting several instances) keeps the first subscriber.
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(argv: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from(["stitch", "run"].iter().chain(argv))?;
        match cli.command {
            Command::Run(args) => Ok(*args),
            _ => unreachable!("parsed `run`"),
        }
    }

    #[test]
    fn idle_timeout_is_a_flag_of_its_own_an_hour_by_default() {
        let default = run_args(&[]).expect("defaults parse").into_settings();
        assert_eq!(default.idle_timeout, Duration::from_secs(3600));
        assert_eq!(default.header_read_timeout, Duration::from_secs(10));
        let set = run_args(&["--idle-timeout", "90s"])
            .expect("a duration")
            .into_settings();
        assert_eq!(set.idle_timeout, Duration::from_secs(90));
        assert_eq!(
            set.header_read_timeout,
            Duration::from_secs(10),
            "the head deadline is not the idle timeout"
        );
    }

    #[test]
    fn ring_size_flag_reaches_the_telemetry_config() {
        let default = run_args(&[]).expect("defaults parse").into_settings();
        assert_eq!(default.telemetry.ring.max_spans, 4096);
        let set = run_args(&["--ring-spans", "512"])
            .expect("valid size")
            .into_settings();
        assert_eq!(set.telemetry.ring.max_spans, 512);
        assert!(
            run_args(&["--ring-spans", "0"]).is_err(),
            "an empty ring is refused"
        );
    }
}
