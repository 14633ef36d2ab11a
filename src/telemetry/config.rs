//! Telemetry settings as plain data, read once at start-up from the OpenTelemetry SDK
//! environment variables through a lookup closure (tests pass explicit values; nothing
//! reads the environment afterwards).
//!
//! Honoured variables (signal-specific `*_TRACES_*` wins over the generic one):
//!
//! | variable | effect |
//! | --- | --- |
//! | `OTEL_SERVICE_NAME` | `service.name` (the `--service-name` flag overrides it) |
//! | `OTEL_RESOURCE_ATTRIBUTES` | `k=v,k=v` (percent-decoded) resource attributes |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | base URL; HTTP appends `/v1/traces` |
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | full traces URL, used as is |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` / `_TRACES_PROTOCOL` | `grpc` or `http/protobuf` (default) |
//! | `OTEL_EXPORTER_OTLP_HEADERS` / `_TRACES_HEADERS` | `k=v,k=v` sent with every export; never shown or logged |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT` / `_TRACES_TIMEOUT` | milliseconds per export attempt (default 10000) |
//! | `OTEL_EXPORTER_OTLP_CERTIFICATE` / `_TRACES_CERTIFICATE` | PEM CA file trusted in addition to the system roots |
//! | `OTEL_EXPORTER_OTLP_COMPRESSION` / `_TRACES_COMPRESSION` | `gzip` or `none` (default) |
//! | `OTEL_TRACES_EXPORTER` | `none` turns export off (spans still reach the ring) |
//! | `OTEL_SDK_DISABLED` | `true` turns export off (spans still reach the ring) |
//! | `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_SCHEDULE_DELAY` | queue capacity, batch size, batch delay (ms) |
//! | `K8S_POD_NAME`/`POD_NAME`, `K8S_POD_NAMESPACE`/`K8S_NAMESPACE_NAME`/`POD_NAMESPACE`, `K8S_POD_UID`/`POD_UID`, `K8S_NODE_NAME`/`NODE_NAME` | `k8s.pod.name`, `k8s.namespace.name`, `k8s.pod.uid`, `k8s.node.name` (set them from the downward API) |

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC over tonic.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    HttpProtobuf,
}

impl Protocol {
    /// The value as the `OTEL_EXPORTER_OTLP_PROTOCOL` variable spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

/// Where and how spans are exported. `Debug` never prints header values.
#[derive(Clone)]
pub struct ExportConfig {
    /// gRPC or HTTP/protobuf.
    pub protocol: Protocol,
    /// For HTTP the full traces URL (`…/v1/traces`); for gRPC the collector's base URL.
    pub endpoint: String,
    /// Extra request headers/metadata, often an API key: secret.
    pub headers: Vec<(String, String)>,
    /// Deadline of one export attempt.
    pub timeout: Duration,
    /// A PEM CA bundle trusted in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Attempts after the first one for a failed batch (the exporter backs off in between).
    pub max_retries: usize,
    /// First backoff delay; it doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Largest backoff delay.
    pub max_backoff: Duration,
    /// Gzip request bodies (`OTEL_EXPORTER_OTLP_COMPRESSION=gzip`).
    pub gzip: bool,
}

impl fmt::Debug for ExportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportConfig")
            .field("protocol", &self.protocol)
            .field("endpoint", &self.endpoint)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .field("ca_file", &self.ca_file)
            .field("max_retries", &self.max_retries)
            .field("gzip", &self.gzip)
            .finish()
    }
}

impl ExportConfig {
    /// An exporter config with default timeouts and retries.
    pub fn new(protocol: Protocol, endpoint: impl Into<String>) -> Self {
        ExportConfig {
            protocol,
            endpoint: endpoint.into(),
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            ca_file: None,
            max_retries: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1600),
            gzip: false,
        }
    }
}

/// When export keeps failing, the root sampling factor steps down these levels; it climbs
/// back one step per run of successes.
#[derive(Debug, Clone)]
pub struct DegradationConfig {
    /// The factors, from healthy (`1.0`) to most degraded.
    pub levels: Vec<f64>,
    /// Consecutive failed batches (after retries) before stepping down one level.
    pub failures_to_degrade: u32,
    /// Consecutive exported batches before stepping back up one level.
    pub successes_to_recover: u32,
}

impl Default for DegradationConfig {
    fn default() -> Self {
        DegradationConfig {
            levels: vec![1.0, 0.5, 0.1, 0.01],
            failures_to_degrade: 3,
            successes_to_recover: 3,
        }
    }
}

/// Bounds of the in-memory trace ring.
#[derive(Debug, Clone)]
pub struct RingConfig {
    /// Most spans kept.
    pub max_spans: usize,
    /// Most (approximate) bytes kept.
    pub max_bytes: usize,
    /// How far a child may start before its parent before the verdict calls it skew.
    pub clock_skew_tolerance: Duration,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            max_spans: 4096,
            max_bytes: 8 * 1024 * 1024,
            clock_skew_tolerance: Duration::from_millis(10),
        }
    }
}

/// Everything the telemetry pipeline needs, as plain data.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.name` of stitch's own spans.
    pub service_name: String,
    /// Other resource attributes (OTEL_RESOURCE_ATTRIBUTES, Kubernetes pod attributes).
    pub resource_attributes: Vec<(String, String)>,
    /// OTLP export; `None` keeps spans in the ring only.
    pub export: Option<ExportConfig>,
    /// Capacity of the queue between the request path and the pipeline task.
    pub queue_capacity: usize,
    /// Most spans per export batch.
    pub batch_max_spans: usize,
    /// A partial batch is shipped after this long.
    pub batch_delay: Duration,
    /// Batches waiting for the exporter; beyond this, batches are dropped and counted.
    pub export_backlog_batches: usize,
    /// The ring's bounds.
    pub ring: RingConfig,
    /// The adaptive degradation steps.
    pub degradation: DegradationConfig,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            service_name: "unknown_service".to_owned(),
            resource_attributes: Vec::new(),
            export: None,
            queue_capacity: 2048,
            batch_max_spans: 512,
            batch_delay: Duration::from_secs(1),
            export_backlog_batches: 4,
            ring: RingConfig::default(),
            degradation: DegradationConfig::default(),
        }
    }
}

const K8S_ENV: &[(&str, &[&str])] = &[
    ("k8s.pod.name", &["K8S_POD_NAME", "POD_NAME"]),
    (
        "k8s.namespace.name",
        &["K8S_POD_NAMESPACE", "K8S_NAMESPACE_NAME", "POD_NAMESPACE"],
    ),
    ("k8s.pod.uid", &["K8S_POD_UID", "POD_UID"]),
    ("k8s.node.name", &["K8S_NODE_NAME", "NODE_NAME"]),
];

impl TelemetryConfig {
    /// The same settings with the ring bounded to `spans` spans (at least one).
    pub(crate) fn with_ring_spans(mut self, spans: usize) -> Self {
        self.ring.max_spans = spans.max(1);
        self
    }

    /// Reads the OpenTelemetry SDK variables through `lookup` (see the module doc for the
    /// list). Invalid values are logged and ignored, never fatal: telemetry must not stop
    /// the proxy from starting.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| {
            lookup(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let traces_or = |specific: &str, generic: &str| get(specific).or_else(|| get(generic));
        let mut cfg = TelemetryConfig::default();

        for (attr, vars) in K8S_ENV {
            if let Some(v) = vars.iter().find_map(|k| get(k)) {
                cfg.resource_attributes.push(((*attr).to_owned(), v));
            }
        }
        if let Some(raw) = get("OTEL_RESOURCE_ATTRIBUTES") {
            for (k, v) in parse_key_values(&raw) {
                cfg.resource_attributes
                    .retain(|(existing, _)| *existing != k);
                cfg.resource_attributes.push((k, v));
            }
        }
        if let Some(pos) = cfg
            .resource_attributes
            .iter()
            .position(|(k, _)| k == "service.name")
        {
            cfg.service_name = cfg.resource_attributes.remove(pos).1;
        }
        if let Some(name) = get("OTEL_SERVICE_NAME") {
            cfg.service_name = name;
        }

        if let Some(n) = get("OTEL_BSP_MAX_QUEUE_SIZE").and_then(|v| v.parse().ok()) {
            cfg.queue_capacity = usize::max(n, 1);
        }
        if let Some(n) = get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE").and_then(|v| v.parse().ok()) {
            cfg.batch_max_spans = usize::max(n, 1);
        }
        if let Some(ms) = get("OTEL_BSP_SCHEDULE_DELAY").and_then(|v| v.parse().ok()) {
            cfg.batch_delay = Duration::from_millis(u64::max(ms, 1));
        }

        let exporter_off = get("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none")
            || get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let protocol = match traces_or(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        )
        .as_deref()
        {
            None | Some("http/protobuf") => Protocol::HttpProtobuf,
            Some("grpc") => Protocol::Grpc,
            Some(other) => {
                tracing::warn!(
                    protocol = other,
                    "unsupported OTLP protocol; using http/protobuf"
                );
                Protocol::HttpProtobuf
            }
        };
        let endpoint = match (
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(full), _) => Some(full),
            (None, Some(base)) if protocol == Protocol::HttpProtobuf => {
                Some(format!("{}/v1/traces", base.trim_end_matches('/')))
            }
            (None, Some(base)) => Some(base),
            (None, None) => None,
        };
        if let (Some(endpoint), false) = (endpoint, exporter_off) {
            let mut export = ExportConfig::new(protocol, endpoint);
            if let Some(raw) = traces_or(
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                "OTEL_EXPORTER_OTLP_HEADERS",
            ) {
                export.headers = parse_key_values(&raw);
            }
            if let Some(ms) = traces_or(
                "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
            )
            .and_then(|v| v.parse::<u64>().ok())
            {
                export.timeout = Duration::from_millis(u64::max(ms, 1));
            }
            export.gzip = traces_or(
                "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
                "OTEL_EXPORTER_OTLP_COMPRESSION",
            )
            .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
            export.ca_file = traces_or(
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
            )
            .map(PathBuf::from);
            cfg.export = Some(export);
        }
        cfg
    }

    /// Overrides `service.name` (the `--service-name` flag wins over the environment).
    pub fn with_service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = name.into();
        self
    }

    /// What `/config` may show about telemetry: no header values, ever.
    pub(crate) fn redacted_view(&self) -> serde_json::Value {
        serde_json::json!({
            "service_name": self.service_name,
            "resource_attributes": self.resource_attributes.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "export": self.export.as_ref().map(|e| serde_json::json!({
                "protocol": e.protocol.as_str(),
                "endpoint": e.endpoint,
                "header_names": e.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                "timeout_ms": u64::try_from(e.timeout.as_millis()).unwrap_or(u64::MAX),
                "compression": if e.gzip { "gzip" } else { "none" },
                "ca_file": e.ca_file,
            })),
            "queue_capacity": self.queue_capacity,
            "ring_max_spans": self.ring.max_spans,
        })
    }
}

/// Parses the W3C-baggage-like `k=v,k=v` lists of `OTEL_RESOURCE_ATTRIBUTES` and
/// `OTEL_EXPORTER_OTLP_HEADERS` (values percent-decoded; malformed members skipped).
pub(crate) fn parse_key_values(raw: &str) -> Vec<(String, String)> {
    raw.split(',')
        .filter_map(|member| {
            let (k, v) = member.split_once('=')?;
            let k = percent_decode(k.trim())?;
            let v = percent_decode(v.trim())?;
            (!k.is_empty()).then_some((k, v))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> TelemetryConfig {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TelemetryConfig::from_env(|k| map.get(k).cloned())
    }

    #[test]
    fn no_endpoint_means_ring_only() {
        let cfg = from(&[]);
        assert!(cfg.export.is_none());
        assert_eq!(cfg.service_name, "unknown_service");
    }

    #[test]
    fn http_endpoint_gets_traces_path_and_signal_specific_wins() {
        let cfg = from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]);
        let e = cfg.export.expect("export configured");
        assert_eq!(e.protocol, Protocol::HttpProtobuf);
        assert_eq!(e.endpoint, "http://c:4318/v1/traces");

        let cfg = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/custom"),
        ]);
        assert_eq!(cfg.export.expect("export").endpoint, "http://t:1/custom");
    }

    #[test]
    fn grpc_endpoint_is_used_as_is_with_headers_timeout_and_ca() {
        let cfg = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s3cr%3Dt, x=y"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ]);
        let e = cfg.export.expect("export configured");
        assert_eq!(e.protocol, Protocol::Grpc);
        assert_eq!(e.endpoint, "https://c:4317");
        assert_eq!(
            e.headers,
            vec![
                ("api-key".to_owned(), "s3cr=t".to_owned()),
                ("x".to_owned(), "y".to_owned())
            ]
        );
        assert_eq!(e.timeout, Duration::from_millis(2500));
        assert_eq!(e.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert!(e.gzip);
    }

    #[test]
    fn secrets_never_appear_in_debug_or_view() {
        let cfg = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=topsecret"),
        ]);
        assert!(!format!("{cfg:?}").contains("topsecret"));
        let view = cfg.redacted_view().to_string();
        assert!(!view.contains("topsecret"));
        assert!(view.contains("api-key"));
    }

    #[test]
    fn resource_attributes_service_name_and_k8s() {
        let cfg = from(&[
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=fromattrs,team=pay%20ments",
            ),
            ("K8S_POD_NAME", "orders-7f9"),
            ("POD_NAMESPACE", "shop"),
        ]);
        assert_eq!(cfg.service_name, "fromattrs");
        assert!(
            cfg.resource_attributes
                .contains(&("team".into(), "pay ments".into()))
        );
        assert!(
            cfg.resource_attributes
                .contains(&("k8s.pod.name".into(), "orders-7f9".into()))
        );
        assert!(
            cfg.resource_attributes
                .contains(&("k8s.namespace.name".into(), "shop".into()))
        );
        let cfg = from(&[
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=fromattrs"),
            ("OTEL_SERVICE_NAME", "orders"),
        ]);
        assert_eq!(cfg.service_name, "orders");
    }

    #[test]
    fn exporter_none_disables_export() {
        let cfg = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ]);
        assert!(cfg.export.is_none());
        let cfg = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert!(cfg.export.is_none());
    }
}
