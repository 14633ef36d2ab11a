//! `GET /app-probe/{container}/{kind}`: the app's original kubelet probe, performed by stitch.
//!
//! Why: inbound TCP to the app's ports is redirected to stitch, which accepts every connection,
//! so a kubelet TCP probe would pass for a dead app, and HTTP probes would be traced requests.
//! The injector points the app's probes here instead (the admin port is never redirected) and
//! hands the originals over in `STITCH_APP_PROBES` ([`crate::config::app_probes`]). Each
//! kubelet probe becomes one probe of the app, made directly (stitch's UID is never
//! redirected), within the probe's own timeout, with the kubelet's semantics:
//!
//! - `tcpSocket`: success when the app accepts a connection;
//! - `httpGet`: success for a status 200–399 (a redirect is not followed — the kubelet follows
//!   same-host redirects; stitch reports their status, which the kubelet counts as success);
//!   HTTPS without certificate verification, as the kubelet does it;
//! - `grpc`: `grpc.health.v1.Health/Check` answering `SERVING`.
//!
//! Success answers 200; an app that answered an HTTP error passes its status through (so
//! `kubectl describe pod` shows the app's code); no answer is 503 with the reason in the
//! body. Probes never create spans: they do not pass through the proxy's listeners.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{AdminState, respond};
use crate::config::app_probes::{
    APP_PROBE_PATH_PREFIX, AppProbe, GrpcProbe, HttpGetProbe, HttpScheme, ProbeAction,
};

/// Most bytes of an app's probe answer stitch reads (the kubelet reads 10 KiB of HTTP bodies).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The probes a pod's sidecar performs and where the app listens.
#[derive(Debug, Clone, Default)]
pub struct AppProbeSettings {
    /// The original probes, by `{container}/{kind}`.
    pub probes: crate::config::app_probes::AppProbes,
    /// The address the kubelet would have probed: the pod's IP (downward API `status.podIP`);
    /// `None` probes `127.0.0.1`.
    pub pod_ip: Option<IpAddr>,
}

/// The verdict of one probe of the app.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The probe passed.
    Pass,
    /// The app answered HTTP with this failing status.
    Status(StatusCode),
    /// No usable answer; why.
    Fail(String),
}

/// Answers one rewritten kubelet probe.
pub(super) async fn answer(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let key = &req.uri().path()[APP_PROBE_PATH_PREFIX.len()..];
    let Some(probe) = state.app_probes.probes.get(key) else {
        return respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            format!("no app probe {key:?}\n"),
        );
    };
    let host = state
        .app_probes
        .pod_ip
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let user_agent = req.headers().get(header::USER_AGENT).cloned();
    let verdict = perform(probe, host, user_agent).await;
    tracing::debug!(probe = key, ?verdict, "app probe");
    match verdict {
        Verdict::Pass => respond(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
        Verdict::Status(status) => respond(
            status,
            "text/plain; charset=utf-8",
            format!("the app answered {status}\n"),
        ),
        Verdict::Fail(why) => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            format!("{why}\n"),
        ),
    }
}

/// Performs `probe` against the app at `host` within the probe's timeout.
async fn perform(probe: &AppProbe, host: IpAddr, user_agent: Option<HeaderValue>) -> Verdict {
    let timeout = Duration::from_secs(u64::from(probe.timeout_seconds.max(1)));
    let attempt = async {
        match &probe.action {
            ProbeAction::TcpSocket(tcp) => TcpStream::connect((host, tcp.port))
                .await
                .map(|_| Verdict::Pass)
                .unwrap_or_else(|e| Verdict::Fail(format!("connect to port {}: {e}", tcp.port))),
            ProbeAction::HttpGet(http) => http_get(http, host, user_agent)
                .await
                .unwrap_or_else(Verdict::Fail),
            ProbeAction::Grpc(grpc) => grpc_check(grpc, host).await.unwrap_or_else(Verdict::Fail),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Verdict::Fail(format!("no answer within {timeout:?}")))
}

async fn http_get(
    probe: &HttpGetProbe,
    host: IpAddr,
    user_agent: Option<HeaderValue>,
) -> Result<Verdict, String> {
    let addr = SocketAddr::new(host, probe.port);
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to port {}: {e}", probe.port))?;
    let path = if probe.path.starts_with('/') {
        probe.path.clone()
    } else {
        format!("/{}", probe.path)
    };
    let mut request = Request::get(path.as_str())
        .header(header::HOST, addr.to_string())
        .header(header::ACCEPT, "*/*")
        .header(
            header::USER_AGENT,
            user_agent.unwrap_or(HeaderValue::from_static("kube-probe")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("probe path {path:?}: {e}"))?;
    // The probe's own headers replace the defaults (a `Host` header sets the host).
    for h in &probe.http_headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_str(&h.value),
        ) else {
            return Err(format!("invalid probe header {:?}", h.name));
        };
        request.headers_mut().insert(name, value);
    }
    let status = match probe.scheme {
        HttpScheme::Http => send_http1(stream, request).await?,
        HttpScheme::Https => {
            let tls = tokio_rustls::TlsConnector::from(insecure_client_config())
                .connect(rustls_pki_types::ServerName::IpAddress(host.into()), stream)
                .await
                .map_err(|e| format!("TLS to port {}: {e}", probe.port))?;
            send_http1(tls, request).await?
        }
    };
    Ok(if (200..400).contains(&status.as_u16()) {
        Verdict::Pass
    } else {
        Verdict::Status(status)
    })
}

async fn send_http1<IO>(io: IO, request: Request<Empty<Bytes>>) -> Result<StatusCode, String>
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP request: {e}"))?;
    Ok(response.status())
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse` (`status`: 1 = `SERVING`).
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

const SERVING: i32 = 1;

async fn grpc_check(probe: &GrpcProbe, host: IpAddr) -> Result<Verdict, String> {
    use prost::Message as _;
    let addr = SocketAddr::new(host, probe.port);
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to port {}: {e}", probe.port))?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    tokio::spawn(conn);
    let message = HealthCheckRequest {
        service: probe.service.clone().unwrap_or_default(),
    }
    .encode_to_vec();
    // gRPC framing: uncompressed flag, 4-byte big-endian length, message.
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend_from_slice(&message);
    let request = Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .header(header::USER_AGENT, "kube-probe")
        .body(Full::new(Bytes::from(framed)))
        .map_err(|e| format!("gRPC request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("gRPC request: {e}"))?;
    let (parts, body) = response.into_parts();
    let collected = Limited::new(body, MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| format!("gRPC answer: {e}"))?;
    // Trailers-only answers carry the status in the headers.
    let trailers = collected.trailers().cloned();
    let grpc_status = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| parts.headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if grpc_status.as_deref() != Some("0") {
        return Err(format!(
            "health check failed: grpc-status {}",
            grpc_status.as_deref().unwrap_or("missing")
        ));
    }
    let mut bytes = collected.to_bytes();
    if bytes.len() < 5 {
        return Err("health check answered no message".to_owned());
    }
    bytes.advance(5);
    let answer = HealthCheckResponse::decode(bytes)
        .map_err(|e| format!("health check answer undecodable: {e}"))?;
    if answer.status == SERVING {
        Ok(Verdict::Pass)
    } else {
        Err(format!(
            "health check status {} (not SERVING)",
            answer.status
        ))
    }
}

/// A TLS client that, like the kubelet's HTTPS probes, does not verify the app's certificate
/// (handshake signatures are still checked).
fn insecure_client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
#[path = "app_probe_tests.rs"]
mod tests;
