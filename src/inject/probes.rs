//! Rewriting the app's network probes to stitch's admin port (see
//! [`crate::config::app_probes`] for why and for the wire format).
//!
//! A probe is left as it is when rewriting would not make it more truthful or cannot be done
//! faithfully: `exec` probes, probes with an explicit `host` (they do not enter the pod's
//! network), probes of a port in the skip list (not redirected), named ports the container
//! does not declare, or a scheme other than HTTP/HTTPS. Every other field of the probe
//! (periods, thresholds, delays, timeout) is kept.

use serde_json::{Map, Value, json};

use super::ADMIN_PORT;
use super::options::PodSettings;
use crate::config::app_probes::{
    APP_PROBE_PATH_PREFIX, AppProbe, AppProbes, GrpcProbe, HttpGetProbe, HttpHeader, HttpScheme,
    ProbeAction, TcpSocketProbe,
};

/// The probe fields of a container and the kind names in the probe paths.
const KINDS: [(&str, &str); 3] = [
    ("livenessProbe", "liveness"),
    ("readinessProbe", "readiness"),
    ("startupProbe", "startup"),
];

/// Rewrites `container`'s probes in place, recording the originals in `probes`; returns how
/// many were rewritten.
pub(super) fn rewrite(
    container: &mut Map<String, Value>,
    settings: &PodSettings,
    probes: &mut AppProbes,
) -> usize {
    let Some(name) = container
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return 0;
    };
    let declared_ports = container.get("ports").cloned().unwrap_or(Value::Null);
    let mut rewritten = 0;
    for (field, kind) in KINDS {
        let Some(probe) = container.get_mut(field).and_then(Value::as_object_mut) else {
            continue;
        };
        let Some(action) = original(probe, &declared_ports) else {
            continue;
        };
        if settings.inbound_port_skipped(action_port(&action)) {
            continue;
        }
        let timeout_seconds = probe
            .get("timeoutSeconds")
            .and_then(Value::as_u64)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(1);
        for key in ["httpGet", "tcpSocket", "grpc"] {
            probe.remove(key);
        }
        probe.insert(
            "httpGet".to_owned(),
            json!({
                "path": format!("{APP_PROBE_PATH_PREFIX}{name}/{kind}"),
                "port": ADMIN_PORT,
                "scheme": "HTTP",
            }),
        );
        probes.insert(
            format!("{name}/{kind}"),
            AppProbe {
                action,
                timeout_seconds,
            },
        );
        rewritten += 1;
    }
    rewritten
}

fn action_port(action: &ProbeAction) -> u16 {
    match action {
        ProbeAction::HttpGet(h) => h.port,
        ProbeAction::TcpSocket(t) => t.port,
        ProbeAction::Grpc(g) => g.port,
    }
}

/// The probe's action as stitch will perform it, or `None` to leave the probe alone.
fn original(probe: &Map<String, Value>, declared_ports: &Value) -> Option<ProbeAction> {
    let no_host = |action: &Value| {
        action
            .get("host")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    };
    if let Some(http) = probe.get("httpGet").filter(|a| no_host(a)) {
        let scheme = match http.get("scheme").and_then(Value::as_str) {
            None | Some("HTTP") => HttpScheme::Http,
            Some("HTTPS") => HttpScheme::Https,
            Some(_) => return None,
        };
        let http_headers = http
            .get("httpHeaders")
            .and_then(Value::as_array)
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        Some(HttpHeader {
                            name: h.get("name")?.as_str()?.to_owned(),
                            value: h.get("value")?.as_str().unwrap_or("").to_owned(),
                        })
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .unwrap_or(Some(Vec::new()))?;
        return Some(ProbeAction::HttpGet(HttpGetProbe {
            port: resolve_port(http.get("port")?, declared_ports)?,
            path: http
                .get("path")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
                .unwrap_or("/")
                .to_owned(),
            scheme,
            http_headers,
        }));
    }
    if let Some(tcp) = probe.get("tcpSocket").filter(|a| no_host(a)) {
        return Some(ProbeAction::TcpSocket(TcpSocketProbe {
            port: resolve_port(tcp.get("port")?, declared_ports)?,
        }));
    }
    if let Some(grpc) = probe.get("grpc") {
        return Some(ProbeAction::Grpc(GrpcProbe {
            port: resolve_port(grpc.get("port")?, declared_ports)?,
            service: grpc
                .get("service")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        }));
    }
    None
}

/// A probe port: a number, or the name of one of the container's ports.
fn resolve_port(port: &Value, declared_ports: &Value) -> Option<u16> {
    let number = match port {
        Value::Number(n) => n.as_u64()?,
        Value::String(name) => declared_ports
            .as_array()?
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(name))?
            .get("containerPort")?
            .as_u64()?,
        _ => return None,
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p != 0 && *p != ADMIN_PORT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::InjectOptions;
    use std::collections::BTreeMap;

    fn settings(skip_inbound: &str) -> PodSettings {
        let mut annotations = BTreeMap::new();
        if !skip_inbound.is_empty() {
            annotations.insert(
                crate::inject::options::SKIP_INBOUND_PORTS.to_owned(),
                skip_inbound.to_owned(),
            );
        }
        InjectOptions::default().for_pod(&annotations).unwrap()
    }

    fn container(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn http_tcp_and_grpc_probes_move_to_the_admin_port() {
        let mut c = container(json!({
            "name": "app",
            "ports": [{"name": "http", "containerPort": 8080}],
            "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 7},
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTPS",
                "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "timeoutSeconds": 3},
            "startupProbe": {"grpc": {"port": 9090, "service": "orders"}, "failureThreshold": 30},
        }));
        let mut probes = AppProbes::new();
        assert_eq!(rewrite(&mut c, &settings(""), &mut probes), 3);
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"path": "/app-probe/app/liveness", "port": 4191, "scheme": "HTTP"},
                   "periodSeconds": 7})
        );
        assert_eq!(c["startupProbe"]["failureThreshold"], 30);
        assert_eq!(
            probes["app/liveness"].action,
            ProbeAction::TcpSocket(TcpSocketProbe { port: 8080 })
        );
        assert_eq!(probes["app/readiness"].timeout_seconds, 3);
        let ProbeAction::HttpGet(h) = &probes["app/readiness"].action else {
            panic!("readiness is httpGet");
        };
        assert_eq!(h.scheme, HttpScheme::Https);
        assert_eq!(h.http_headers[0].value, "1");
        assert_eq!(
            probes["app/startup"].action,
            ProbeAction::Grpc(GrpcProbe {
                port: 9090,
                service: Some("orders".into())
            })
        );
    }

    #[test]
    fn probes_that_cannot_lie_or_cannot_be_copied_stay() {
        let original = json!({
            "name": "app",
            "livenessProbe": {"exec": {"command": ["true"]}},
            "readinessProbe": {"httpGet": {"host": "example.com", "port": 80}},
            "startupProbe": {"tcpSocket": {"port": "undeclared"}},
        });
        let mut c = container(original.clone());
        let mut probes = AppProbes::new();
        assert_eq!(rewrite(&mut c, &settings(""), &mut probes), 0);
        assert_eq!(Value::Object(c), original);
        assert!(probes.is_empty());

        let skipped = json!({"name": "app", "livenessProbe": {"tcpSocket": {"port": 8081}}});
        let mut c = container(skipped.clone());
        assert_eq!(rewrite(&mut c, &settings("8081"), &mut probes), 0);
        assert_eq!(
            Value::Object(c),
            skipped,
            "a skipped port reaches the app directly"
        );
    }
}
