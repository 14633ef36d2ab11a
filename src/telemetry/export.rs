//! The OTLP exporter, driven by stitch's own batching (no global tracer provider): a batch is
//! encoded straight from the span records ([`super::otlp_encode`]) and sent over tonic
//! (gRPC, with its gzip) or a hyper + rustls client (HTTP/protobuf, gzip done here), with
//! the configured headers, per-attempt timeout and retries ([`super::export_retry`]). TLS
//! trusts the system roots plus an optional PEM CA file.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic_types::StatusExt as _;

use super::config::{ExportConfig, Protocol, TelemetryConfig};
use super::export_retry::{Retry, RetryPolicy};
use super::otlp_encode::OtlpEncoder;
use super::span::SpanRecord;

/// Why the exporter could not be built (the pipeline then runs ring-only).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExportSetupError {
    /// The endpoint is not a valid URI.
    #[error("invalid OTLP endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The configured endpoint.
        endpoint: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The CA file could not be read or parsed.
    #[error("cannot load the OTLP CA file {path}: {reason}")]
    CaFile {
        /// The configured path.
        path: String,
        /// Why it failed.
        reason: String,
    },
    /// A header name or value is not valid in HTTP/gRPC (the value is never shown).
    #[error("invalid OTLP header {name:?}")]
    Header {
        /// The header name.
        name: String,
    },
    /// The exporter library refused the configuration.
    #[error("cannot build the OTLP exporter: {0}")]
    Build(String),
}

/// The resource of stitch's spans: `service.name`, `telemetry.sdk.*` and the configured
/// attributes (a configured `service.name` or `telemetry.sdk.*` is ignored).
pub(crate) fn resource_attributes(config: &TelemetryConfig) -> Vec<(String, String)> {
    let mut attrs = vec![
        ("service.name".to_owned(), config.service_name.clone()),
        ("telemetry.sdk.name".to_owned(), "stitch".to_owned()),
        ("telemetry.sdk.language".to_owned(), "rust".to_owned()),
        (
            "telemetry.sdk.version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ),
    ];
    for (k, v) in &config.resource_attributes {
        if k.starts_with("telemetry.sdk.") || k == "service.name" {
            continue;
        }
        // Later duplicates win, as in a resource built from a map.
        match attrs.iter_mut().find(|(key, _)| key == k) {
            Some(held) => held.1 = v.clone(),
            None => attrs.push((k.clone(), v.clone())),
        }
    }
    attrs
}

/// Sends batches of spans to one collector. Lives on the export thread; the encoder's and
/// the gzip buffer's allocations are reused from batch to batch.
#[derive(Debug)]
pub(crate) struct Exporter {
    transport: Transport,
    encoder: OtlpEncoder,
    retry: RetryPolicy,
}

/// One per exporter, built once: the size difference of the variants costs nothing.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Transport {
    Grpc(GrpcTransport),
    Http(HttpTransport),
}

/// Builds the exporter for `export`, sending `resource` with every batch.
pub(crate) fn build_exporter(
    export: &ExportConfig,
    resource: &[(String, String)],
) -> Result<Exporter, ExportSetupError> {
    let transport = match export.protocol {
        Protocol::Grpc => Transport::Grpc(GrpcTransport::new(export)?),
        Protocol::HttpProtobuf => Transport::Http(HttpTransport::new(export)?),
    };
    Ok(Exporter {
        transport,
        encoder: OtlpEncoder::new(resource),
        retry: RetryPolicy::new(export),
    })
}

impl Exporter {
    /// Encodes and sends one batch, retrying as configured; the error says why it failed in
    /// the end (never a header value).
    pub(crate) async fn export(&mut self, spans: &[Arc<SpanRecord>]) -> Result<(), String> {
        let body = self.encoder.encode(spans.iter().map(|s| &**s));
        match &mut self.transport {
            Transport::Grpc(grpc) => {
                let grpc = &*grpc;
                self.retry
                    .run(|| grpc.send(body.clone()))
                    .await
                    .map_err(|status| format!("gRPC export failed: {:?}", status.code()))
            }
            Transport::Http(http) => {
                let body = http.compress(body)?;
                let http = &*http;
                self.retry.run(|| http.send(body.clone())).await
            }
        }
    }
}

/// OTLP/gRPC over tonic: the collector's `TraceService/Export` with the batch already
/// encoded (a pass-through codec), gzip by tonic when configured.
#[derive(Debug)]
struct GrpcTransport {
    client: tonic::client::Grpc<tonic::transport::Channel>,
    metadata: tonic::metadata::MetadataMap,
}

const GRPC_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

impl GrpcTransport {
    fn new(export: &ExportConfig) -> Result<Self, ExportSetupError> {
        let mut metadata = tonic::metadata::MetadataMap::new();
        for (k, v) in &export.headers {
            let name = tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|_| ExportSetupError::Header { name: k.clone() })?;
            let value = v
                .parse()
                .map_err(|_| ExportSetupError::Header { name: k.clone() })?;
            metadata.insert(name, value);
        }
        let mut client = tonic::client::Grpc::new(grpc_channel(export)?);
        if export.gzip {
            let gzip = tonic::codec::CompressionEncoding::Gzip;
            client = client.send_compressed(gzip).accept_compressed(gzip);
        }
        Ok(GrpcTransport { client, metadata })
    }

    async fn send(&self, body: Bytes) -> Result<(), (tonic::Status, Retry)> {
        let fail = |status: tonic::Status| {
            let delay = status
                .get_details_retry_info()
                .and_then(|info| info.retry_delay);
            let retry = Retry::for_grpc(status.code(), delay);
            tracing::debug!(code = ?status.code(), message = status.message(), "OTLP gRPC attempt failed");
            (status, retry)
        };
        let mut client = self.client.clone();
        client
            .ready()
            .await
            .map_err(|e| fail(tonic::Status::unavailable(e.to_string())))?;
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = self.metadata.clone();
        let response = client
            .unary(
                request,
                http::uri::PathAndQuery::from_static(GRPC_EXPORT_PATH),
                EncodedCodec,
            )
            .await
            .map_err(fail)?;
        log_partial_success(&response.into_inner());
        Ok(())
    }
}

/// A gRPC codec for a message that is already protobuf: requests are written as they are,
/// responses kept as bytes (decoded by the caller).
#[derive(Debug, Clone, Copy, Default)]
struct EncodedCodec;

impl Codec for EncodedCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = EncodedCodec;
    type Decoder = EncodedCodec;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        EncodedCodec
    }
}

impl Encoder for EncodedCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for EncodedCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Self::Error> {
        use bytes::Buf as _;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The collector accepted the request but may have rejected some spans: logged, not retried
/// (OTLP's "partial success").
fn log_partial_success(body: &[u8]) {
    let Ok(response) = ExportTraceServiceResponse::decode(body) else {
        tracing::debug!("OTLP export response not decodable");
        return;
    };
    if let Some(partial) = response.partial_success
        && (partial.rejected_spans > 0 || !partial.error_message.is_empty())
    {
        tracing::warn!(
            rejected_spans = partial.rejected_spans,
            error_message = partial.error_message.as_str(),
            "the collector rejected spans"
        );
    }
}

fn grpc_channel(export: &ExportConfig) -> Result<tonic::transport::Channel, ExportSetupError> {
    let endpoint_err = |reason: String| ExportSetupError::Endpoint {
        endpoint: export.endpoint.clone(),
        reason,
    };
    let mut endpoint = tonic::transport::Endpoint::from_shared(export.endpoint.clone())
        .map_err(|e| endpoint_err(e.to_string()))?
        .timeout(export.timeout)
        .connect_timeout(export.timeout);
    if endpoint.uri().scheme_str() == Some("https") {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_native_roots();
        if let Some(path) = &export.ca_file {
            let pem = std::fs::read(path).map_err(|e| ExportSetupError::CaFile {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| endpoint_err(e.to_string()))?;
    }
    Ok(endpoint.connect_lazy())
}

/// OTLP/HTTP with protobuf bodies: hyper's pooled client over rustls (no reqwest, no
/// OpenSSL), the per-attempt timeout around the whole exchange.
#[derive(Debug)]
struct HttpTransport {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    endpoint: http::Uri,
    headers: HeaderMap,
    timeout: Duration,
    /// The gzip output buffer, reused; `None` when not compressing.
    gzip: Option<BytesMut>,
}

/// Largest collector response read (it is a tiny protobuf message).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

impl HttpTransport {
    fn new(export: &ExportConfig) -> Result<Self, ExportSetupError> {
        let endpoint =
            export
                .endpoint
                .parse::<http::Uri>()
                .map_err(|e| ExportSetupError::Endpoint {
                    endpoint: export.endpoint.clone(),
                    reason: e.to_string(),
                })?;
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        if export.gzip {
            headers.insert(
                http::header::CONTENT_ENCODING,
                HeaderValue::from_static("gzip"),
            );
        }
        for (k, v) in &export.headers {
            // Skipped, not fatal, as the OTLP library stitch used before did for HTTP.
            match (
                HeaderName::try_from(k.as_str()),
                HeaderValue::try_from(v.as_str()),
            ) {
                (Ok(name), Ok(value)) => {
                    headers.insert(name, value);
                }
                _ => tracing::warn!(header = %k, "invalid OTLP header skipped"),
            }
        }
        Ok(HttpTransport {
            client: https_client(export)?,
            endpoint,
            headers,
            timeout: export.timeout,
            gzip: export.gzip.then(BytesMut::new),
        })
    }

    /// Gzips the body when configured, into the reused buffer.
    fn compress(&mut self, body: Bytes) -> Result<Bytes, String> {
        let Some(buf) = self.gzip.take() else {
            return Ok(body);
        };
        let mut buf = buf;
        buf.clear();
        let mut encoder =
            flate2::write::GzEncoder::new(buf.writer(), flate2::Compression::default());
        encoder
            .write_all(&body)
            .map_err(|e| format!("gzip failed: {e}"))?;
        let mut buf = encoder
            .finish()
            .map_err(|e| format!("gzip failed: {e}"))?
            .into_inner();
        let out = buf.split().freeze();
        self.gzip = Some(buf);
        Ok(out)
    }

    async fn send(&self, body: Bytes) -> Result<(), (String, Retry)> {
        let mut request = http::Request::post(self.endpoint.clone())
            .body(Full::new(body))
            .map_err(|e| (e.to_string(), Retry::Never))?;
        *request.headers_mut() = self.headers.clone();
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| {
                (
                    format!("OTLP HTTP export failed: {e}"),
                    Retry::for_http(None, None),
                )
            })?;
            let (parts, body) = response.into_parts();
            if !parts.status.is_success() {
                let retry_after = parts
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok());
                let retry = Retry::for_http(Some(parts.status.as_u16()), retry_after);
                return Err((
                    format!("OTLP HTTP export failed: status {}", parts.status),
                    retry,
                ));
            }
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| (format!("OTLP HTTP response unreadable: {e}"), Retry::Never))?
                .to_bytes();
            log_partial_success(&body);
            Ok(())
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                (
                    "OTLP HTTP export timed out".to_owned(),
                    Retry::for_http(None, None),
                )
            })?
    }
}

/// The HTTPS-or-HTTP client: system roots plus the configured CA file, HTTP/1 and HTTP/2.
fn https_client(
    export: &ExportConfig,
) -> Result<
    hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    ExportSetupError,
> {
    let ca_err = |reason: String| ExportSetupError::CaFile {
        path: export
            .ca_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A single unparsable system certificate must not disable export.
        let _ = roots.add(cert);
    }
    if let Some(path) = &export.ca_file {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_err(e.to_string()))?;
        for cert in certs {
            roots
                .add(cert.map_err(|e| ca_err(e.to_string()))?)
                .map_err(|e| ca_err(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ExportSetupError::Build(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}
