//! What an injection is told: the chart's values (as flags of `stitch webhook` and
//! `stitch inject`) and the per-pod `stitch.dev/*` annotations that override them.
//!
//! Every value that ends up in the pod is validated here, before a patch exists: a bad
//! annotation must leave the pod uninjected with a reason, never produce a pod the API server
//! rejects (that would block a deployment) or an init container that crash-loops.

use std::collections::BTreeMap;

use serde_json::Value;

use super::quantity::Quantity;
use crate::iptables::rules::{Cidr, PortRange};

/// `stitch.dev/skip-inbound-ports`: more inbound ports that reach the app without stitch.
pub const SKIP_INBOUND_PORTS: &str = "stitch.dev/skip-inbound-ports";
/// `stitch.dev/skip-outbound-ports`: more outbound ports the app reaches directly.
pub const SKIP_OUTBOUND_PORTS: &str = "stitch.dev/skip-outbound-ports";
/// `stitch.dev/skip-outbound-cidrs`: more destinations the app reaches directly.
pub const SKIP_OUTBOUND_CIDRS: &str = "stitch.dev/skip-outbound-cidrs";
/// `stitch.dev/service-name`: `service.name` of the pod's spans.
pub const SERVICE_NAME: &str = "stitch.dev/service-name";
/// `stitch.dev/proxy-cpu-request`.
pub const PROXY_CPU_REQUEST: &str = "stitch.dev/proxy-cpu-request";
/// `stitch.dev/proxy-memory-request`.
pub const PROXY_MEMORY_REQUEST: &str = "stitch.dev/proxy-memory-request";
/// `stitch.dev/proxy-memory-limit`.
pub const PROXY_MEMORY_LIMIT: &str = "stitch.dev/proxy-memory-limit";
/// `stitch.dev/log-level`: the sidecar's `RUST_LOG` level.
pub const LOG_LEVEL: &str = "stitch.dev/log-level";
/// `stitch.dev/native-sidecar`: `true` or `false`, overriding the cluster-wide choice.
pub const NATIVE_SIDECAR: &str = "stitch.dev/native-sidecar";
/// `stitch.dev/rules-configmap`: the ConfigMap (in the pod's namespace) holding `rules.yaml`.
pub const RULES_CONFIGMAP: &str = "stitch.dev/rules-configmap";

/// The injection settings of a whole cluster (the chart's values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectOptions {
    /// The stitch image, `repository:tag`.
    pub image: String,
    /// `imagePullPolicy` of the injected containers.
    pub image_pull_policy: String,
    /// UID the sidecar runs as; iptables never redirects its traffic.
    pub proxy_uid: u32,
    /// The sidecar's log level (`RUST_LOG` directive).
    pub log_level: String,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; none keeps spans in the sidecar's ring only.
    pub otlp_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` or `http/protobuf`).
    pub otlp_protocol: Option<String>,
    /// A Secret (in each pod's namespace) whose key holds `OTEL_EXPORTER_OTLP_HEADERS`.
    pub otlp_headers_secret: Option<SecretKey>,
    /// The sidecar's resources.
    pub resources: ProxyResources,
    /// Inbound ports never redirected.
    pub skip_inbound_ports: Vec<String>,
    /// Outbound ports never redirected.
    pub skip_outbound_ports: Vec<String>,
    /// Outbound CIDRs never redirected (the cloud metadata servers by default).
    pub skip_outbound_cidrs: Vec<String>,
    /// Native sidecar (init container with `restartPolicy: Always`) or classic.
    pub native_sidecar: bool,
    /// Default rules ConfigMap name.
    pub rules_configmap: String,
    /// Namespaces whose pods are never injected.
    pub excluded_namespaces: Vec<String>,
}

/// A key of a Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKey {
    /// Secret name.
    pub name: String,
    /// Key in it.
    pub key: String,
}

/// Requests and limits of the sidecar (Kubernetes quantities).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyResources {
    /// `requests.cpu`.
    pub cpu_request: Option<String>,
    /// `limits.cpu`.
    pub cpu_limit: Option<String>,
    /// `requests.memory`.
    pub memory_request: Option<String>,
    /// `limits.memory`.
    pub memory_limit: Option<String>,
}

/// The metadata servers of the big clouds (AWS, GCP, Azure share 169.254.169.254; AWS's IPv6
/// one is fd00:ec2::254): redirecting them breaks instance credentials (IMDS, GKE workload
/// identity), and their traffic is not service-to-service.
pub const DEFAULT_SKIP_OUTBOUND_CIDRS: [&str; 2] = ["169.254.169.254/32", "fd00:ec2::254/128"];

/// The namespaces no injector should touch.
pub const DEFAULT_EXCLUDED_NAMESPACES: [&str; 3] =
    ["kube-system", "kube-public", "kube-node-lease"];

impl Default for InjectOptions {
    fn default() -> Self {
        InjectOptions {
            image: format!("stitch:{}", env!("CARGO_PKG_VERSION")),
            image_pull_policy: "IfNotPresent".to_owned(),
            proxy_uid: 2102,
            log_level: "info".to_owned(),
            otlp_endpoint: None,
            otlp_protocol: None,
            otlp_headers_secret: None,
            resources: ProxyResources {
                cpu_request: Some("100m".to_owned()),
                cpu_limit: Some("1".to_owned()),
                memory_request: Some("32Mi".to_owned()),
                memory_limit: Some("64Mi".to_owned()),
            },
            skip_inbound_ports: Vec::new(),
            skip_outbound_ports: Vec::new(),
            skip_outbound_cidrs: DEFAULT_SKIP_OUTBOUND_CIDRS.map(str::to_owned).to_vec(),
            native_sidecar: true,
            rules_configmap: "stitch-rules".to_owned(),
            excluded_namespaces: DEFAULT_EXCLUDED_NAMESPACES.map(str::to_owned).to_vec(),
        }
    }
}

impl InjectOptions {
    /// Checks the cluster-wide values once, at start-up, so a bad chart value fails the
    /// webhook's start instead of every pod.
    pub fn validate(&self) -> Result<(), String> {
        let no_annotations = BTreeMap::new();
        self.for_pod(&no_annotations).map(drop)
    }

    /// The settings for one pod: these options with its `stitch.dev/*` annotations applied.
    /// Skip lists are extended by annotations (so the metadata-server default cannot be lost
    /// by accident); every other annotation replaces its value.
    pub(super) fn for_pod(
        &self,
        annotations: &BTreeMap<String, String>,
    ) -> Result<PodSettings, String> {
        let get = |key: &str| annotations.get(key).map(|v| v.trim().to_owned());
        let list = |base: &[String], key: &str| -> Vec<String> {
            let mut all = base.to_vec();
            if let Some(v) = annotations.get(key) {
                all.extend(
                    v.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty()),
                );
            }
            all
        };
        let ports = |key: &str, values: Vec<String>| -> Result<Vec<String>, String> {
            values
                .iter()
                .map(|p| {
                    p.parse::<PortRange>()
                        .map(|r| r.to_string())
                        .map_err(|e| format!("{key}: {e}"))
                })
                .collect()
        };
        let skip_inbound_ports = ports(
            SKIP_INBOUND_PORTS,
            list(&self.skip_inbound_ports, SKIP_INBOUND_PORTS),
        )?;
        let skip_outbound_ports = ports(
            SKIP_OUTBOUND_PORTS,
            list(&self.skip_outbound_ports, SKIP_OUTBOUND_PORTS),
        )?;
        let skip_outbound_cidrs = list(&self.skip_outbound_cidrs, SKIP_OUTBOUND_CIDRS)
            .iter()
            .map(|c| {
                c.parse::<Cidr>()
                    .map(|c| c.to_string())
                    .map_err(|e| format!("{SKIP_OUTBOUND_CIDRS}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let mut resources = self.resources.clone();
        for (key, slot) in [
            (PROXY_CPU_REQUEST, &mut resources.cpu_request),
            (PROXY_MEMORY_REQUEST, &mut resources.memory_request),
            (PROXY_MEMORY_LIMIT, &mut resources.memory_limit),
        ] {
            if let Some(v) = get(key) {
                *slot = Some(v);
            }
        }
        resources.check()?;

        let native_sidecar = match get(NATIVE_SIDECAR).as_deref() {
            None => self.native_sidecar,
            Some("true") => true,
            Some("false") => false,
            Some(other) => return Err(format!("{NATIVE_SIDECAR}: {other:?} is not true or false")),
        };
        let rules_configmap = get(RULES_CONFIGMAP).unwrap_or_else(|| self.rules_configmap.clone());
        if !is_dns_subdomain(&rules_configmap) {
            return Err(format!(
                "{RULES_CONFIGMAP}: {rules_configmap:?} is not a ConfigMap name"
            ));
        }
        let log_level = get(LOG_LEVEL).unwrap_or_else(|| self.log_level.clone());
        let log_ok = !log_level.is_empty()
            && log_level.len() <= 256
            && log_level
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_=,:.-".contains(c));
        if !log_ok {
            return Err(format!("{LOG_LEVEL}: {log_level:?} is not a log filter"));
        }
        let service_name = get(SERVICE_NAME).filter(|s| !s.is_empty());
        if self.image.trim().is_empty() {
            return Err("the stitch image is empty".to_owned());
        }
        Ok(PodSettings {
            skip_inbound_ports,
            skip_outbound_ports,
            skip_outbound_cidrs,
            resources,
            native_sidecar,
            rules_configmap,
            log_level,
            service_name,
        })
    }
}

impl ProxyResources {
    /// Every value a quantity, and no request above its limit (the API server would reject
    /// the pod).
    fn check(&self) -> Result<(), String> {
        let parse = |what: &str, v: &Option<String>| -> Result<Option<Quantity>, String> {
            v.as_deref()
                .map(|s| {
                    s.parse::<Quantity>()
                        .map_err(|e| format!("proxy {what} {s:?}: {e}"))
                })
                .transpose()
        };
        for (what, request, limit) in [
            ("cpu", &self.cpu_request, &self.cpu_limit),
            ("memory", &self.memory_request, &self.memory_limit),
        ] {
            let (request, limit) = (parse(what, request)?, parse(what, limit)?);
            if let (Some(r), Some(l)) = (request, limit)
                && r > l
            {
                return Err(format!("proxy {what} request is above its limit"));
            }
        }
        Ok(())
    }

    /// The container's `resources` object.
    pub(super) fn to_json(&self) -> Value {
        let pair = |cpu: &Option<String>, memory: &Option<String>| {
            let mut m = serde_json::Map::new();
            if let Some(c) = cpu {
                m.insert("cpu".into(), Value::String(c.clone()));
            }
            if let Some(mem) = memory {
                m.insert("memory".into(), Value::String(mem.clone()));
            }
            m
        };
        let mut resources = serde_json::Map::new();
        let limits = pair(&self.cpu_limit, &self.memory_limit);
        let requests = pair(&self.cpu_request, &self.memory_request);
        if !limits.is_empty() {
            resources.insert("limits".into(), Value::Object(limits));
        }
        if !requests.is_empty() {
            resources.insert("requests".into(), Value::Object(requests));
        }
        Value::Object(resources)
    }
}

/// The effective settings of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PodSettings {
    pub(super) skip_inbound_ports: Vec<String>,
    pub(super) skip_outbound_ports: Vec<String>,
    pub(super) skip_outbound_cidrs: Vec<String>,
    pub(super) resources: ProxyResources,
    pub(super) native_sidecar: bool,
    pub(super) rules_configmap: String,
    pub(super) log_level: String,
    pub(super) service_name: Option<String>,
}

impl PodSettings {
    /// Whether inbound connections to `port` reach the app without stitch.
    pub(super) fn inbound_port_skipped(&self, port: u16) -> bool {
        self.skip_inbound_ports.iter().any(|range| {
            let (lo, hi) = range.split_once(':').unwrap_or((range, range));
            matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if (lo..=hi).contains(&port))
        })
    }
}

/// RFC 1123 subdomain, as Kubernetes object names are.
fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn annotations_extend_skip_lists_and_replace_the_rest() {
        let options = InjectOptions::default();
        let pod = options
            .for_pod(&annotations(&[
                (SKIP_OUTBOUND_CIDRS, "10.0.0.0/8, fd00::/8"),
                (SKIP_INBOUND_PORTS, "22,8000-8100"),
                (PROXY_MEMORY_LIMIT, "128Mi"),
                (NATIVE_SIDECAR, "false"),
                (RULES_CONFIGMAP, "order-rules"),
                (SERVICE_NAME, "order"),
            ]))
            .expect("valid");
        assert_eq!(
            pod.skip_outbound_cidrs,
            [
                "169.254.169.254/32",
                "fd00:ec2::254/128",
                "10.0.0.0/8",
                "fd00::/8"
            ]
        );
        assert_eq!(pod.skip_inbound_ports, ["22", "8000:8100"]);
        assert!(pod.inbound_port_skipped(8050) && !pod.inbound_port_skipped(8101));
        assert_eq!(pod.resources.memory_limit.as_deref(), Some("128Mi"));
        assert!(!pod.native_sidecar);
        assert_eq!(pod.rules_configmap, "order-rules");
        assert_eq!(pod.service_name.as_deref(), Some("order"));
    }

    #[test]
    fn bad_annotations_are_refused_with_their_name() {
        let options = InjectOptions::default();
        for (key, value) in [
            (SKIP_INBOUND_PORTS, "http"),
            (SKIP_OUTBOUND_PORTS, "0"),
            (SKIP_OUTBOUND_CIDRS, "10.0.0.0/33"),
            (PROXY_CPU_REQUEST, "lots"),
            (PROXY_MEMORY_REQUEST, "1Gi"), // above the 64Mi limit
            (NATIVE_SIDECAR, "yes"),
            (RULES_CONFIGMAP, "Rules_Map"),
            (LOG_LEVEL, "info; rm -rf /"),
        ] {
            let err = options
                .for_pod(&annotations(&[(key, value)]))
                .expect_err(value);
            assert!(err.contains(key) || err.contains("proxy"), "{err}");
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        InjectOptions::default().validate().expect("defaults");
    }
}
