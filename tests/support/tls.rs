//! A real TLS server behind stitch (rustls, a self-signed certificate from rcgen) and a client
//! that trusts it: client-first binary traffic whose first byte (`0x16`, a handshake record)
//! can never be HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TLS echo server: each connection completes the handshake, then echoes until EOF.
pub struct TlsEcho {
    /// Where it listens.
    pub addr: SocketAddr,
    connector: tokio_rustls::TlsConnector,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsEcho {
    /// Starts the server on a loopback port with a fresh certificate for `localhost`.
    pub async fn start() -> Self {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("a self-signed certificate");
        let der = CertificateDer::from(cert.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let (listener, addr) = super::listener().await;
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = tls.read(&mut buf).await {
                        if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = tls.shutdown().await;
                });
            }
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).expect("a valid certificate");
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsEcho {
            addr,
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        }
    }

    /// Opens a TCP connection to `via` (stitch, or the server itself), completes a TLS
    /// handshake with this server through it and echoes `message` once.
    pub async fn handshake_and_echo(&self, via: SocketAddr, message: &[u8]) -> Vec<u8> {
        let tcp = super::connect(via).await;
        let name = ServerName::try_from("localhost").expect("a DNS name");
        let mut tls = self
            .connector
            .connect(name, tcp)
            .await
            .expect("the TLS handshake completes");
        tls.write_all(message).await.expect("TLS write");
        let mut echoed = vec![0u8; message.len()];
        tls.read_exact(&mut echoed).await.expect("TLS echo");
        echoed
    }
}
