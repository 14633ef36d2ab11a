//! The injection flags shared by `stitch webhook` and `stitch inject`, one per chart value
//! (`proxy.uid` → `--proxy-uid`, `otlp.endpoint` → `--otlp-endpoint`, …), so the webhook the
//! chart runs and a manifest injected offline come out the same.

use super::options::{
    DEFAULT_EXCLUDED_NAMESPACES, DEFAULT_SKIP_OUTBOUND_CIDRS, InjectOptions, ProxyResources,
    SecretKey,
};

/// `auto`, `true` or `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NativeSidecar {
    /// Native when the cluster is 1.29 or newer (`--kube-version`; assumed when not given).
    Auto,
    /// Always a native sidecar (init container with `restartPolicy: Always`).
    True,
    /// Always classic (first container with lifecycle hooks).
    False,
}

/// Injection settings as flags (each maps onto a chart value).
#[derive(Debug, Clone, clap::Args)]
pub struct InjectFlags {
    /// The stitch image (`image.repository:image.tag`).
    #[arg(long, default_value = concat!("stitch:", env!("CARGO_PKG_VERSION")))]
    image: String,
    /// `imagePullPolicy` of the injected containers (`image.pullPolicy`).
    #[arg(long, default_value = "IfNotPresent")]
    image_pull_policy: String,
    /// UID of the sidecar; its traffic is never redirected (`proxy.uid`).
    #[arg(long, default_value_t = 2102)]
    proxy_uid: u32,
    /// The sidecar's log level, a RUST_LOG directive (`proxy.logLevel`).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Collector for the sidecars' spans (`otlp.endpoint`); none keeps spans in each ring.
    #[arg(long)]
    otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf` (`otlp.protocol`).
    #[arg(long)]
    otlp_protocol: Option<String>,
    /// Secret, in each injected pod's namespace, holding OTEL_EXPORTER_OTLP_HEADERS
    /// (`otlp.headersSecret.name`).
    #[arg(long)]
    otlp_headers_secret: Option<String>,
    /// The key in that Secret (`otlp.headersSecret.key`).
    #[arg(long, default_value = "headers")]
    otlp_headers_secret_key: String,
    /// `proxy.resources.requests.cpu`.
    #[arg(long, default_value = "100m")]
    proxy_cpu_request: String,
    /// `proxy.resources.limits.cpu` (empty: no limit).
    #[arg(long, default_value = "1")]
    proxy_cpu_limit: String,
    /// `proxy.resources.requests.memory`.
    #[arg(long, default_value = "32Mi")]
    proxy_memory_request: String,
    /// `proxy.resources.limits.memory` (empty: no limit).
    #[arg(long, default_value = "64Mi")]
    proxy_memory_limit: String,
    /// Inbound ports that reach the app without stitch (`proxy.skipInboundPorts`).
    #[arg(long, value_delimiter = ',')]
    skip_inbound_ports: Vec<String>,
    /// Outbound ports the app reaches directly (`proxy.skipOutboundPorts`).
    #[arg(long, value_delimiter = ',')]
    skip_outbound_ports: Vec<String>,
    /// Outbound CIDRs the app reaches directly (`proxy.skipOutboundCIDRs`; default: the cloud
    /// metadata servers).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_SKIP_OUTBOUND_CIDRS.map(String::from))]
    skip_outbound_cidrs: Vec<String>,
    /// Native sidecar or classic (`proxy.nativeSidecar`).
    #[arg(long, value_enum, default_value = "auto")]
    native_sidecar: NativeSidecar,
    /// The cluster's Kubernetes version, for `--native-sidecar auto` (e.g. `1.28`).
    #[arg(long)]
    kube_version: Option<String>,
    /// Default rules ConfigMap, in each pod's namespace (`stitch.dev/rules-configmap` overrides).
    #[arg(long, default_value = "stitch-rules")]
    rules_configmap: String,
    /// Namespaces never injected (the chart adds its own release namespace).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_EXCLUDED_NAMESPACES.map(String::from))]
    excluded_namespaces: Vec<String>,
}

impl InjectFlags {
    /// The options these flags describe, validated.
    pub fn into_options(self) -> Result<InjectOptions, String> {
        let native_sidecar = match self.native_sidecar {
            NativeSidecar::True => true,
            NativeSidecar::False => false,
            NativeSidecar::Auto => match &self.kube_version {
                None => true,
                Some(v) => supports_native_sidecars(v)?,
            },
        };
        let nonempty = |s: String| (!s.trim().is_empty()).then_some(s);
        // `--skip-inbound-ports=` (an empty chart list) is no entry, not an empty one.
        let entries = |list: Vec<String>| -> Vec<String> {
            list.into_iter().filter(|s| !s.trim().is_empty()).collect()
        };
        let options = InjectOptions {
            image: self.image,
            image_pull_policy: self.image_pull_policy,
            proxy_uid: self.proxy_uid,
            log_level: self.log_level,
            otlp_endpoint: self.otlp_endpoint.and_then(nonempty),
            otlp_protocol: self.otlp_protocol.and_then(nonempty),
            otlp_headers_secret: self.otlp_headers_secret.and_then(nonempty).map(|name| {
                SecretKey {
                    name,
                    key: self.otlp_headers_secret_key,
                }
            }),
            resources: ProxyResources {
                cpu_request: nonempty(self.proxy_cpu_request),
                cpu_limit: nonempty(self.proxy_cpu_limit),
                memory_request: nonempty(self.proxy_memory_request),
                memory_limit: nonempty(self.proxy_memory_limit),
            },
            skip_inbound_ports: entries(self.skip_inbound_ports),
            skip_outbound_ports: entries(self.skip_outbound_ports),
            skip_outbound_cidrs: entries(self.skip_outbound_cidrs),
            native_sidecar,
            rules_configmap: self.rules_configmap,
            excluded_namespaces: entries(self.excluded_namespaces),
        };
        options.validate()?;
        Ok(options)
    }
}

/// Native sidecars are on by default from Kubernetes 1.29 (beta) and GA in 1.33.
fn supports_native_sidecars(version: &str) -> Result<bool, String> {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v.split('.');
    let number = |p: Option<&str>| {
        p.map(|s| s.trim_end_matches(|c: char| !c.is_ascii_digit()))
            .and_then(|s| s.parse::<u32>().ok())
    };
    match (number(parts.next()), number(parts.next())) {
        (Some(major), Some(minor)) => Ok(major > 1 || (major == 1 && minor >= 29)),
        _ => Err(format!("--kube-version {version:?} is not MAJOR.MINOR")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_sidecars_from_1_29() {
        for (v, native) in [
            ("1.28", false),
            ("v1.28.3", false),
            ("1.29", true),
            ("v1.33.0-gke.1", true),
            ("1.30+", true),
            ("2.0", true),
        ] {
            assert_eq!(supports_native_sidecars(v), Ok(native), "{v}");
        }
        assert!(supports_native_sidecars("latest").is_err());
    }
}
