//! The app probes stitch performs on the kubelet's behalf: the wire format the injector writes
//! into the sidecar's `STITCH_APP_PROBES` variable and the admin server reads.
//!
//! In a pod, inbound TCP to the app's ports is redirected to stitch, which accepts every
//! connection; a kubelet TCP probe of a dead app would therefore pass, and an HTTP probe would
//! be a traced request. So the injector rewrites each httpGet/tcpSocket/grpc probe of an app
//! container into an HTTP GET of `/app-probe/{container}/{kind}` on stitch's admin port (never
//! redirected), and records the original here; the admin server then performs the original
//! probe against the app, directly, within the probe's timeout.
//!
//! ```json
//! {"app/readiness": {"httpGet": {"port": 8080, "path": "/healthz", "scheme": "HTTP",
//!                                "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
//!                    "timeoutSeconds": 1},
//!  "app/liveness":  {"tcpSocket": {"port": 8080}, "timeoutSeconds": 1},
//!  "grpc/startup":  {"grpc": {"port": 9090, "service": "orders"}, "timeoutSeconds": 2}}
//! ```
//!
//! Keys are `{container}/{kind}` with kind `liveness`, `readiness` or `startup`; field names
//! follow the Kubernetes probe API so the document reads like the probes it came from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Environment variable carrying the probes (JSON) to the sidecar.
pub const APP_PROBES_ENV: &str = "STITCH_APP_PROBES";

/// Path prefix of the rewritten probes on the admin server.
pub const APP_PROBE_PATH_PREFIX: &str = "/app-probe/";

/// Every rewritten probe of a pod, by `{container}/{kind}`.
pub type AppProbes = BTreeMap<String, AppProbe>;

/// One original probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppProbe {
    /// What to do.
    #[serde(flatten)]
    pub action: ProbeAction,
    /// The kubelet's timeout for the probe (Kubernetes' default is 1 second).
    #[serde(default = "one_second")]
    pub timeout_seconds: u32,
}

fn one_second() -> u32 {
    1
}

/// The three network probe kinds the kubelet knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProbeAction {
    /// An HTTP GET; 200–399 is success.
    HttpGet(HttpGetProbe),
    /// A TCP connect; an accepted connection is success.
    TcpSocket(TcpSocketProbe),
    /// `grpc.health.v1.Health/Check`; `SERVING` is success.
    Grpc(GrpcProbe),
}

/// An `httpGet` probe with its port resolved to a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGetProbe {
    /// The app's port.
    pub port: u16,
    /// Request path (and query), `/` when the probe had none.
    #[serde(default = "root_path")]
    pub path: String,
    /// `HTTP` or `HTTPS` (the kubelet does not verify the app's certificate, nor does stitch).
    #[serde(default)]
    pub scheme: HttpScheme,
    /// Extra request headers, in order (a `Host` header here sets the request's host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

fn root_path() -> String {
    "/".to_owned()
}

/// `HTTP` or `HTTPS`, spelled as in the probe API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HttpScheme {
    /// Plain HTTP.
    #[default]
    #[serde(rename = "HTTP")]
    Http,
    /// HTTPS without certificate verification (as the kubelet does it).
    #[serde(rename = "HTTPS")]
    Https,
}

/// One header of an `httpGet` probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpHeader {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// A `tcpSocket` probe with its port resolved to a number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSocketProbe {
    /// The app's port.
    pub port: u16,
}

/// A `grpc` probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcProbe {
    /// The app's port.
    pub port: u16,
    /// The `service` field of the health check request (empty: the server as a whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// Parses the `STITCH_APP_PROBES` document; a key must be `{container}/{kind}`.
pub fn parse_app_probes(json: &str) -> Result<AppProbes, String> {
    let probes: AppProbes =
        serde_json::from_str(json).map_err(|e| format!("{APP_PROBES_ENV}: {e}"))?;
    for key in probes.keys() {
        let valid = key.split_once('/').is_some_and(|(container, kind)| {
            !container.is_empty()
                && !container.contains('/')
                && matches!(kind, "liveness" | "readiness" | "startup")
        });
        if !valid {
            return Err(format!(
                "{APP_PROBES_ENV}: key {key:?} is not CONTAINER/liveness|readiness|startup"
            ));
        }
    }
    Ok(probes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_example() {
        let probes = parse_app_probes(
            r#"{"app/readiness": {"httpGet": {"port": 8080, "path": "/healthz", "scheme": "HTTP",
                 "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "timeoutSeconds": 1},
                "app/liveness": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 1},
                "grpc/startup": {"grpc": {"port": 9090, "service": "orders"}, "timeoutSeconds": 2}}"#,
        )
        .expect("valid document");
        assert_eq!(probes.len(), 3);
        assert_eq!(
            probes["app/liveness"].action,
            ProbeAction::TcpSocket(TcpSocketProbe { port: 8080 })
        );
        match &probes["app/readiness"].action {
            ProbeAction::HttpGet(h) => {
                assert_eq!((h.port, h.path.as_str()), (8080, "/healthz"));
                assert_eq!(h.http_headers[0].name, "X-Probe");
            }
            other => panic!("not httpGet: {other:?}"),
        }
        assert_eq!(probes["grpc/startup"].timeout_seconds, 2);
    }

    #[test]
    fn round_trips_and_defaults() {
        let probes = parse_app_probes(r#"{"a/startup": {"httpGet": {"port": 80}}}"#).unwrap();
        let probe = &probes["a/startup"];
        assert_eq!(probe.timeout_seconds, 1);
        let ProbeAction::HttpGet(h) = &probe.action else {
            panic!("not httpGet")
        };
        assert_eq!((h.path.as_str(), h.scheme), ("/", HttpScheme::Http));
        let back = serde_json::to_string(&probes).unwrap();
        assert_eq!(parse_app_probes(&back).unwrap(), probes);
    }

    #[test]
    fn rejects_bad_keys_and_shapes() {
        for bad in [
            r#"{"app": {"tcpSocket": {"port": 1}}}"#,
            r#"{"app/ready": {"tcpSocket": {"port": 1}}}"#,
            r#"{"/liveness": {"tcpSocket": {"port": 1}}}"#,
            r#"{"a/liveness": {"exec": {"command": ["true"]}}}"#,
            r#"{"a/liveness": {"tcpSocket": {"port": 70000}}}"#,
            "not json",
        ] {
            assert!(parse_app_probes(bad).is_err(), "accepted {bad}");
        }
    }
}
