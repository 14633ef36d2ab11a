//! The webhook's serving certificate, re-read when its files change.
//!
//! Kubernetes rotates a mounted Secret (Helm upgrade, cert-manager renewal) by swapping a
//! symlink; nothing tells the process. So each TLS handshake stats the two files (a cheap
//! syscall; admission traffic is a handful of requests per pod created) and, when either
//! changed, loads the pair again. A pair that does not load (half-written, mismatched) is
//! logged and counted, and the last good certificate keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::metrics::WebhookMetrics;

/// What identifies a version of a file: modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// A certificate resolver that follows its files.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    metrics: WebhookMetrics,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    stamps: (Stamp, Stamp),
    key: Arc<CertifiedKey>,
}

impl ReloadingCert {
    /// Loads the pair once; fails when it cannot (the webhook does not start without one).
    pub fn load(
        cert_path: PathBuf,
        key_path: PathBuf,
        metrics: WebhookMetrics,
    ) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let stamps = (stamp(&cert_path), stamp(&key_path));
        let key = load_pair(&cert_path, &key_path, &provider)?;
        Ok(ReloadingCert {
            cert_path,
            key_path,
            provider,
            metrics,
            state: Mutex::new(Loaded { stamps, key }),
        })
    }

    /// The rustls server configuration serving this certificate (TLS 1.2 and 1.3, HTTP/1.1
    /// and HTTP/2 by ALPN, as the API server offers).
    pub fn server_config(self: Arc<Self>) -> Result<Arc<rustls::ServerConfig>, String> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(self);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The certificate to serve now, reloaded first when the files changed.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let stamps = (stamp(&self.cert_path), stamp(&self.key_path));
        if stamps != state.stamps {
            // Remember the attempt either way: a bad pair is retried when it changes again.
            state.stamps = stamps;
            match load_pair(&self.cert_path, &self.key_path, &self.provider) {
                Ok(key) => {
                    state.key = key;
                    self.metrics.certificate_reload("ok");
                    tracing::info!(cert = %self.cert_path.display(), "serving certificate reloaded");
                }
                Err(e) => {
                    self.metrics.certificate_reload("rejected");
                    tracing::warn!(error = %e, "certificate files changed but do not load; keeping the previous certificate");
                }
            }
        }
        state.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate", cert_path.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    let certified = CertifiedKey::from_der(certs, key, provider)
        .map_err(|e| format!("certificate and key do not match: {e}"))?;
    Ok(Arc::new(certified))
}
