//! OTLP export over TLS (rustls): a collector whose certificate is signed by a private CA
//! is trusted once that CA is given as `ca_file` (OTEL_EXPORTER_OTLP_CERTIFICATE), and
//! refused without it (only the system roots are trusted).

use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use stitch::telemetry::{ExportConfig, Protocol, Telemetry, TelemetryConfig};

use crate::support::metrics::{parse_openmetrics, sample};
use crate::support::telemetry::{Received, chain, grpc_collector_tls, http_collector_with};

struct Pki {
    ca_file: std::path::PathBuf,
    cert_pem: String,
    key_pem: String,
}

fn pki(tag: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let ca_file =
        std::env::temp_dir().join(format!("stitch-test-ca-{}-{tag}.pem", std::process::id()));
    std::fs::write(&ca_file, ca.pem()).expect("write CA");
    Pki {
        ca_file,
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

fn acceptor(pki: &Pki) -> tokio_rustls::TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    let certs = vec![
        rustls_pki_types::CertificateDer::from_pem_slice(pki.cert_pem.as_bytes()).expect("cert"),
    ];
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).expect("key");
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

fn config(
    protocol: Protocol,
    endpoint: String,
    ca_file: Option<std::path::PathBuf>,
) -> TelemetryConfig {
    let mut export = ExportConfig::new(protocol, endpoint);
    export.ca_file = ca_file;
    export.timeout = Duration::from_secs(3);
    export.max_retries = 0;
    TelemetryConfig {
        export: Some(export),
        batch_delay: Duration::from_millis(20),
        ..TelemetryConfig::default()
    }
}

async fn export_one(cfg: TelemetryConfig, received: &Received) -> (usize, f64) {
    let telemetry = Telemetry::start(cfg);
    telemetry.sink().record(chain(3).a_in);
    telemetry.flush().await;
    let text = telemetry.metrics().encode();
    let samples = parse_openmetrics(&text).expect("valid");
    let failed = sample(&samples, "stitch_export_failed_batches_total", &[]).unwrap_or(0.0);
    telemetry.shutdown(Duration::from_secs(3)).await;
    (received.len(), failed)
}

#[tokio::test]
async fn http_protobuf_over_tls_trusts_the_configured_ca_only() {
    let pki = pki("http");
    let collector = http_collector_with(false, Some(acceptor(&pki))).await;
    let url = format!("https://127.0.0.1:{}/v1/traces", collector.addr.port());

    let (got, failed) = export_one(
        config(Protocol::HttpProtobuf, url.clone(), None),
        &collector.received,
    )
    .await;
    assert_eq!((got, failed), (0, 1.0), "an unknown CA is refused");

    let (got, failed) = export_one(
        config(Protocol::HttpProtobuf, url, Some(pki.ca_file.clone())),
        &collector.received,
    )
    .await;
    assert_eq!((got, failed), (1, 0.0), "the configured CA is trusted");
    let _ = std::fs::remove_file(&pki.ca_file);
}

#[tokio::test]
async fn grpc_over_tls_trusts_the_configured_ca_only() {
    let pki = pki("grpc");
    let (addr, received) = grpc_collector_tls(&pki.cert_pem, &pki.key_pem).await;
    let url = format!("https://127.0.0.1:{}", addr.port());

    let (got, failed) = export_one(config(Protocol::Grpc, url.clone(), None), &received).await;
    assert_eq!((got, failed), (0, 1.0), "an unknown CA is refused");

    let (got, failed) = export_one(
        config(Protocol::Grpc, url, Some(pki.ca_file.clone())),
        &received,
    )
    .await;
    assert_eq!((got, failed), (1, 0.0), "the configured CA is trusted");
    let _ = std::fs::remove_file(&pki.ca_file);
}
