//! `stitch webhook`: the mutating admission webhook the chart installs.
//!
//! HTTPS only (rustls; a plain HTTP request is answered `400` and closed, never served),
//! HTTP/1.1 and HTTP/2. Routes:
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /mutate` | AdmissionReview v1 for pods whose namespace did not opt in |
//! | `POST /mutate/namespace-enabled` | the same for namespaces labelled `stitch.dev/inject: enabled` |
//! | `GET /ready`, `GET /live` | 200 while serving (kubelet probes, scheme HTTPS) |
//! | `GET /metrics` | [`metrics`]: admissions by outcome and reason, certificate reloads |
//!
//! The namespace's opt-in arrives as a fact of which entry of the
//! `MutatingWebhookConfiguration` called (each has its own namespace selector), so the webhook
//! needs no API access at all: no RBAC, no watch, nothing to go stale.
//!
//! Depends only on [`crate::inject`] and the libraries: no proxy, no app wiring.

pub mod admission;
pub mod metrics;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::inject::InjectOptions;
use crate::inject::flags::InjectFlags;
use admission::Entry;
use metrics::WebhookMetrics;
use tls::ReloadingCert;

/// Largest admission request body (a pod is at most ~1.5 MB in etcd).
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// How long a client may take to send its first byte or finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight admissions may take after SIGTERM.
const DRAIN: Duration = Duration::from_secs(10);

/// Flags of `stitch webhook`.
#[derive(Debug, clap::Args)]
pub struct WebhookArgs {
    /// Where to listen (HTTPS).
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// PEM certificate chain; re-read when the file changes.
    #[arg(long)]
    tls_cert: PathBuf,
    /// PEM private key; re-read when the file changes.
    #[arg(long)]
    tls_key: PathBuf,
    #[command(flatten)]
    inject: InjectFlags,
}

/// A bound webhook, ready to serve.
#[derive(Debug)]
pub struct Webhook {
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<State>,
}

#[derive(Debug)]
struct State {
    options: InjectOptions,
    metrics: WebhookMetrics,
}

impl Webhook {
    /// Loads the certificate and binds; fails when either cannot be done.
    pub async fn bind(
        listen: SocketAddr,
        cert: PathBuf,
        key: PathBuf,
        options: InjectOptions,
    ) -> Result<Self, String> {
        let metrics = WebhookMetrics::default();
        let tls = Arc::new(ReloadingCert::load(cert, key, metrics.clone())?).server_config()?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        Ok(Webhook {
            listener,
            tls,
            state: Arc::new(State { options, metrics }),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests finish (10 s).
    pub async fn run(self, shutdown: CancellationToken) {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls);
        let tracker = TaskTracker::new();
        loop {
            let stream = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let (acceptor, state) = (acceptor.clone(), self.state.clone());
            tracker.spawn(async move {
                if let Err(e) = connection(stream, acceptor, state).await {
                    tracing::debug!(error = %e, "webhook connection ended");
                }
            });
        }
        tracker.close();
        let _ = tokio::time::timeout(DRAIN, tracker.wait()).await;
    }
}

/// One client connection: TLS (or a refusal of plain HTTP), then HTTP/1.1 or HTTP/2.
async fn connection(
    stream: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
) -> Result<(), String> {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await;
    match peeked {
        Ok(Ok(1)) if first[0] == 0x16 => {}
        Ok(Ok(1)) => return refuse_plain_http(stream).await,
        _ => return Err("no TLS handshake".to_owned()),
    }
    let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let service = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(route(&state, req).await) }
    });
    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), service)
        .await
        .map_err(|e| e.to_string())
}

/// A client that did not start a TLS handshake gets a plain answer saying so, and the door.
async fn refuse_plain_http(mut stream: TcpStream) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    const BODY: &str = "this port speaks HTTPS only\n";
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
    Err("refused a plain-text client".to_owned())
}

async fn route(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let entry = match (req.method(), req.uri().path()) {
        (&Method::GET, "/ready" | "/live") => return text(StatusCode::OK, "ok\n".into()),
        (&Method::GET, "/metrics") => {
            let mut resp = text(StatusCode::OK, state.metrics.encode());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            return resp;
        }
        (&Method::POST, "/mutate") => Entry::Pod,
        (&Method::POST, "/mutate/namespace-enabled") => Entry::NamespaceEnabled,
        (_, "/ready" | "/live" | "/metrics" | "/mutate" | "/mutate/namespace-enabled") => {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n".into(),
            );
        }
        _ => return text(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_large = e.is::<http_body_util::LengthLimitError>();
            let reason = if too_large {
                "body-too-large"
            } else {
                "malformed-json"
            };
            state.metrics.admission("error", reason);
            tracing::warn!(reason, error = %e, "admission body not read");
            let status = if too_large {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return text(status, format!("{e}\n"));
        }
    };
    let answer = admission::review(&body, entry, &state.options);
    state.metrics.admission(answer.outcome, answer.reason);
    match answer.outcome {
        "error" => {
            tracing::warn!(
                outcome = answer.outcome,
                reason = answer.reason,
                "{}",
                answer.detail
            )
        }
        _ => tracing::info!(
            outcome = answer.outcome,
            reason = answer.reason,
            "{}",
            answer.detail
        ),
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = text(status, answer.body);
    if status == StatusCode::OK {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
    }
    resp
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Runs `stitch webhook` until SIGTERM/SIGINT.
pub fn command(args: WebhookArgs) -> ExitCode {
    let options = match args.inject.into_options() {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "invalid injection options");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let webhook = match Webhook::bind(args.listen, args.tls_cert, args.tls_key, options).await {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        if let Ok(addr) = webhook.local_addr() {
            tracing::info!(listener = "webhook", %addr, "listening");
        }
        let shutdown = CancellationToken::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            if let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tracing::info!("shutdown signal received");
                trigger.cancel();
            }
        });
        webhook.run(shutdown).await;
        ExitCode::SUCCESS
    })
}
