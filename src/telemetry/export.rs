//! The OTLP exporter: `opentelemetry-otlp`'s `SpanExporter` driven directly by stitch's own
//! batching task (no global tracer provider), over tonic (gRPC) or a hyper + rustls client
//! (HTTP/protobuf). TLS trusts the system roots plus an optional PEM CA file.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::trace::{
    SpanContext, SpanId as OtelSpanId, SpanKind as OtelKind, Status, TraceFlags,
    TraceId as OtelTraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_otlp::{RetryPolicy, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};

use super::config::{ExportConfig, Protocol, TelemetryConfig};
use super::span::{AttrValue, SpanKind, SpanRecord, SpanStatus};

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

/// Builds the resource: `service.name`, the configured attributes and `telemetry.sdk.*`.
pub(crate) fn build_resource(config: &TelemetryConfig) -> Resource {
    let mut attrs = vec![
        KeyValue::new("service.name", config.service_name.clone()),
        KeyValue::new("telemetry.sdk.name", "stitch"),
        KeyValue::new("telemetry.sdk.language", "rust"),
        KeyValue::new("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
    ];
    attrs.extend(
        config
            .resource_attributes
            .iter()
            .filter(|(k, _)| !k.starts_with("telemetry.sdk.") && k != "service.name")
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    );
    // builder_empty: the default builder would read OTEL_* from the process environment.
    Resource::builder_empty().with_attributes(attrs).build()
}

/// Builds the OTLP span exporter for `export`, with `resource` attached.
pub(crate) fn build_exporter(
    export: &ExportConfig,
    resource: &Resource,
) -> Result<opentelemetry_otlp::SpanExporter, ExportSetupError> {
    let retry = RetryPolicy::recommended()
        .with_max_retries(export.max_retries)
        .with_initial_delay(export.initial_backoff)
        .with_max_delay(export.max_backoff);
    let mut exporter = match export.protocol {
        Protocol::Grpc => {
            let channel = grpc_channel(export)?;
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (k, v) in &export.headers {
                let name =
                    tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                        .map_err(|_| ExportSetupError::Header { name: k.clone() })?;
                let value = v
                    .parse()
                    .map_err(|_| ExportSetupError::Header { name: k.clone() })?;
                metadata.insert(name, value);
            }
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_channel(channel)
                .with_metadata(metadata)
                .with_timeout(export.timeout)
                .with_retry_policy(retry);
            // Unset, the library reads the same variable from the process env itself.
            let builder = if export.gzip {
                builder.with_compression(opentelemetry_otlp::Compression::Gzip)
            } else {
                builder
            };
            builder
                .build()
                .map_err(|e| ExportSetupError::Build(e.to_string()))?
        }
        Protocol::HttpProtobuf => {
            let client = RustlsHttpClient::new(export)?;
            let headers: HashMap<String, String> = export.headers.iter().cloned().collect();
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_endpoint(export.endpoint.clone())
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_headers(headers)
                .with_timeout(export.timeout)
                .with_retry_policy(retry);
            let builder = if export.gzip {
                builder.with_compression(opentelemetry_otlp::Compression::Gzip)
            } else {
                builder
            };
            builder
                .build()
                .map_err(|e| ExportSetupError::Build(e.to_string()))?
        }
    };
    exporter.set_resource(resource);
    Ok(exporter)
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

/// The HTTP/protobuf transport: hyper's pooled client over rustls (no reqwest, no
/// OpenSSL), with the per-attempt timeout enforced around the whole exchange.
#[derive(Debug, Clone)]
struct RustlsHttpClient {
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Full<Bytes>,
    >,
    timeout: Duration,
}

/// Largest collector response read (it is a tiny protobuf message).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

impl RustlsHttpClient {
    fn new(export: &ExportConfig) -> Result<Self, ExportSetupError> {
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
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(connector);
        Ok(RustlsHttpClient {
            client,
            timeout: export.timeout,
        })
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for RustlsHttpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let request = request.map(Full::new);
        let exchange = async {
            let response = self.client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await?
                .to_bytes();
            Ok::<_, opentelemetry_http::HttpError>(http::Response::from_parts(parts, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| "OTLP HTTP export timed out")?
    }
}

/// Converts a finished span to the SDK's export form. Borrows: the ring may still hold the
/// same record; static keys and names stay borrowed, only owned strings are copied.
pub(crate) fn to_span_data(span: &SpanRecord, scope: &InstrumentationScope) -> SpanData {
    let span_context = SpanContext::new(
        OtelTraceId::from_bytes(span.trace_id),
        OtelSpanId::from_bytes(span.span_id),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    );
    let span_kind = match span.kind {
        SpanKind::Server => OtelKind::Server,
        SpanKind::Client => OtelKind::Client,
        SpanKind::Internal => OtelKind::Internal,
        SpanKind::Producer => OtelKind::Producer,
        SpanKind::Consumer => OtelKind::Consumer,
    };
    let attributes = span
        .attributes
        .iter()
        .map(|a| {
            let value = match &a.value {
                AttrValue::Str(s) => Value::from(s.to_string()),
                AttrValue::Int(i) => Value::I64(*i),
                AttrValue::F64(f) => Value::F64(*f),
                AttrValue::Bool(b) => Value::Bool(*b),
            };
            KeyValue::new(a.key.clone(), value)
        })
        .collect();
    let status = match &span.status {
        SpanStatus::Unset => Status::Unset,
        SpanStatus::Ok => Status::Ok,
        SpanStatus::Error { description } => Status::Error {
            description: description.clone(),
        },
    };
    SpanData {
        span_context,
        parent_span_id: span
            .parent_span_id
            .map_or(OtelSpanId::INVALID, OtelSpanId::from_bytes),
        // A server span's parent is the caller's (remote) span.
        parent_span_is_remote: span.kind == SpanKind::Server && span.parent_span_id.is_some(),
        span_kind,
        name: span.name.clone(),
        start_time: span.start,
        end_time: span.end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

/// The instrumentation scope of stitch's spans.
pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("stitch")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}
