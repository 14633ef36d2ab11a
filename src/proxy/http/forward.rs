//! The innermost service of the HTTP stack: decides the upstream of a request, prepares the
//! request for the next hop, sends it through the pool and turns failures into responses
//! (502/504 for HTTP, `UNAVAILABLE` for gRPC), so a failure never hangs or kills a connection.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::body::{ProxyBody, UpstreamBody};
use super::headers::{self, Keep};
use super::pool::Pool;
use super::request_body::{FIRST_FRAME_WINDOW, RequestBody, peek_first_frame};
use super::validate::{self, Rejection};
use crate::proxy::addrs::Target;
use crate::proxy::detect::Protocol;
use crate::proxy::error::{ForwardError, ForwardErrorKind};
use crate::proxy::lease::ConnectionLease;
use crate::proxy::opaque;
use crate::telemetry::Metrics;
use crate::upstream_failure::UpstreamFailure;

/// Where the requests of one client connection go.
#[derive(Debug, Clone)]
pub(crate) enum Destination {
    /// Every request goes to this target (transparent original destination, or
    /// `--inbound-target`).
    Fixed(Target),
    /// Explicit outbound proxy: each request names its upstream (absolute-form URI, `Host`,
    /// `:authority`).
    PerRequest,
}

/// Forwards requests of one client connection.
#[derive(Debug, Clone)]
pub(crate) struct Forward {
    pool: Arc<Pool>,
    destination: Destination,
    protocol: Protocol,
    metrics: Metrics,
    /// The client connection's lease: tunnels are spawned on its drain (which waits for them)
    /// and close at the drain's deadline.
    lease: Arc<ConnectionLease>,
}

impl Forward {
    /// A forwarder for a connection speaking `protocol` (HTTP/1 or HTTP/2, kept end to end);
    /// `metrics` counts the requests it refuses.
    pub(crate) fn new(
        pool: Arc<Pool>,
        destination: Destination,
        protocol: Protocol,
        metrics: Metrics,
        lease: &Arc<ConnectionLease>,
    ) -> Self {
        Forward {
            pool,
            destination,
            protocol,
            metrics,
            lease: lease.clone(),
        }
    }

    async fn forward(self, req: Request<Incoming>) -> Response<ProxyBody> {
        let grpc = crate::grpc::is_grpc(req.headers());
        let checked = match self.protocol {
            Protocol::Http2 => {
                validate::check_http2(&req, matches!(self.destination, Destination::PerRequest))
            }
            _ => validate::check_http1(&req),
        };
        if let Err(why) = checked {
            return self.reject(grpc, why);
        }
        let target = match self.target_of(&req) {
            Ok(t) => t,
            Err(why) => return local_error(grpc, StatusCode::BAD_REQUEST, why),
        };
        let req = match self.read_ahead(req).await {
            Ok(req) => req,
            Err(_) => return self.reject(grpc, Rejection::MalformedBody),
        };
        let result = match self.protocol {
            Protocol::Http2 => self.forward_h2(&target, req).await,
            _ => self.forward_h1(&target, req).await,
        };
        match result {
            Ok(resp) => resp,
            Err(e) if e.is_malformed_request_body() => self.reject(grpc, Rejection::MalformedBody),
            Err(e) => {
                if e.kind() == ForwardErrorKind::Loop {
                    tracing::warn!(%target, error = %e, "refused a request addressed to stitch itself (forwarding loop)");
                } else {
                    tracing::debug!(%target, error = %e.with_cause(), "forwarding failed");
                }
                let mut resp =
                    local_error(grpc, e.status(), &format!("stitch: {}", e.with_cause()));
                resp.extensions_mut()
                    .insert(UpstreamFailure(e.kind().as_str()));
                resp
            }
        }
    }

    /// Holds a request whose body framing can break (HTTP/1 chunked, HTTP/2 with
    /// `content-length`) until its first body frame, at most [`FIRST_FRAME_WINDOW`]: a body
    /// broken from its first bytes is then refused before anything reaches the upstream.
    /// Other bodies go out untouched.
    async fn read_ahead(
        &self,
        req: Request<Incoming>,
    ) -> Result<Request<RequestBody>, hyper::Error> {
        let framed = match self.protocol {
            Protocol::Http2 => req.headers().contains_key(header::CONTENT_LENGTH),
            _ => req.headers().contains_key(header::TRANSFER_ENCODING),
        };
        let (parts, body) = req.into_parts();
        let body = if framed && !body.is_end_stream() {
            peek_first_frame(body, FIRST_FRAME_WINDOW).await?
        } else {
            RequestBody::new(body)
        };
        Ok(Request::from_parts(parts, body))
    }

    /// Answers `400` for a request that breaks a protocol rule (and, on HTTP/1, closes the
    /// connection: its framing can no longer be trusted); nothing was forwarded.
    fn reject(&self, grpc: bool, why: Rejection) -> Response<ProxyBody> {
        tracing::debug!(
            reason = why.as_str(),
            "refused a malformed request with 400"
        );
        self.metrics.request_rejected(why.as_str());
        let mut resp = local_error(grpc, StatusCode::BAD_REQUEST, why.message());
        if self.protocol != Protocol::Http2 {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    fn target_of(&self, req: &Request<Incoming>) -> Result<Target, &'static str> {
        match &self.destination {
            Destination::Fixed(t) => Ok(t.clone()),
            Destination::PerRequest => {
                // Absolute-form (what HTTP_PROXY clients send) and HTTP/2 carry the authority
                // in the URI; otherwise the Host header names the upstream (RFC 9112 §3.2.2).
                let authority = match req.uri().authority() {
                    Some(a) => a.as_str(),
                    None => req
                        .headers()
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .ok_or("stitch: the request names no upstream (no absolute URI, no Host header)")?,
                };
                let default_port = if req.uri().scheme() == Some(&http::uri::Scheme::HTTPS) {
                    443
                } else {
                    80
                };
                Target::parse_authority(authority, default_port)
                    .ok_or("stitch: the request's authority is not a valid host:port")
            }
        }
    }

    async fn forward_h1(
        &self,
        target: &Target,
        mut req: Request<RequestBody>,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        let connect = req.method() == Method::CONNECT;
        if connect && matches!(self.destination, Destination::PerRequest) {
            return self.tunnel(target, req).await;
        }
        // A CONNECT addressed through a fixed destination belongs to the app behind it.
        let upgrade = connect || headers::wants_upgrade(req.headers());
        if !connect {
            to_origin_form(&mut req);
        }
        *req.version_mut() = Version::HTTP_11;
        headers::strip_hop_by_hop(
            req.headers_mut(),
            Keep {
                upgrade,
                te_trailers: false,
            },
        );
        if upgrade {
            return self.upgrade(target, req).await;
        }
        let (resp, checkin) = self.pool.send_h1(target, req).await?;
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, Keep::default());
        Ok(Response::from_parts(
            parts,
            ProxyBody::Upstream(UpstreamBody::new(body, Some(checkin))),
        ))
    }

    async fn forward_h2(
        &self,
        target: &Target,
        mut req: Request<RequestBody>,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        headers::strip_hop_by_hop(
            req.headers_mut(),
            Keep {
                upgrade: false,
                te_trailers: true,
            },
        );
        let resp = self.pool.send_h2(target, req).await?;
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, Keep::default());
        Ok(Response::from_parts(
            parts,
            ProxyBody::Upstream(UpstreamBody::new(body, None)),
        ))
    }

    /// `CONNECT host:port` to the explicit proxy: connect, answer 200, copy bytes both ways.
    ///
    /// The tunnel is a task of the drain's, and the client socket it takes over from hyper
    /// carries the connection's lease (permit, open-connection count, byte counters), so a
    /// tunnel is accounted for like the connection it was until it closes.
    async fn tunnel(
        &self,
        target: &Target,
        req: Request<RequestBody>,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        let mut upstream = self.pool.connect_tcp(target).await?;
        let on_upgrade = hyper::upgrade::on(req);
        let lease = self.lease.clone();
        self.lease.shutdown().spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let mut client = TokioIo::new(upgraded);
                    let shutdown = lease.shutdown();
                    if let Err(e) = opaque::splice(&mut client, &mut upstream, shutdown).await {
                        tracing::debug!(error = %e, "CONNECT tunnel ended with an error");
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "CONNECT client went away before the tunnel opened")
                }
            }
        });
        Ok(Response::new(ProxyBody::empty()))
    }

    /// A protocol switch (WebSocket): forward the request on a dedicated connection; on 101,
    /// join the two upgraded connections into a byte tunnel (tracked and accounted for as in
    /// [`Forward::tunnel`]).
    async fn upgrade(
        &self,
        target: &Target,
        mut req: Request<RequestBody>,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        let client_upgrade = hyper::upgrade::on(&mut req);
        let connect = req.method() == Method::CONNECT;
        let mut resp = self.pool.send_upgrade(target, req).await?;
        let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS
            || connect && resp.status().is_success();
        if !switched {
            let (mut parts, body) = resp.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers, Keep::default());
            return Ok(Response::from_parts(
                parts,
                ProxyBody::Upstream(UpstreamBody::new(body, None)),
            ));
        }
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let lease = self.lease.clone();
        self.lease.shutdown().spawn(async move {
            let (client, upstream) = match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok(both) => both,
                Err(e) => return tracing::debug!(error = %e, "protocol switch failed"),
            };
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            if let Err(e) = opaque::splice(&mut client, &mut upstream, lease.shutdown()).await {
                tracing::debug!(error = %e, "upgraded tunnel ended with an error");
            }
        });
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(
            &mut parts.headers,
            Keep {
                upgrade: true,
                te_trailers: false,
            },
        );
        Ok(Response::from_parts(
            parts,
            ProxyBody::Upstream(UpstreamBody::new(body, None)),
        ))
    }
}

/// Rewrites an absolute-form target (`GET http://host/p?q`) to origin-form (`/p?q`) for the
/// next hop, with `Host` set to the URI's authority as RFC 9112 §3.2.2 requires of a proxy.
/// An origin-form target is left exactly as received.
fn to_origin_form<B>(req: &mut Request<B>) {
    let Some(authority) = req.uri().authority().cloned() else {
        return;
    };
    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        req.headers_mut().insert(header::HOST, host);
    }
    let path = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let path = if path.is_empty() { "/" } else { path };
    if let Ok(uri) = Uri::try_from(path) {
        *req.uri_mut() = uri;
    }
}

/// A response stitch writes itself. For gRPC a trailers-only response with status 14
/// (`UNAVAILABLE`) and the reason, so gRPC clients see a gRPC error, not an HTTP one.
pub(crate) fn local_error(grpc: bool, status: StatusCode, message: &str) -> Response<ProxyBody> {
    if grpc {
        let mut resp = Response::new(ProxyBody::empty());
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        let code = if status == StatusCode::BAD_REQUEST {
            "13"
        } else {
            "14"
        };
        h.insert("grpc-status", HeaderValue::from_static(code));
        if let Ok(v) = HeaderValue::from_str(&grpc_message_encode(message)) {
            h.insert("grpc-message", v);
        }
        return resp;
    }
    let mut resp = Response::new(ProxyBody::text(format!("{message}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Percent-encodes a `grpc-message` value (gRPC over HTTP/2 spec: printable ASCII except `%`).
fn grpc_message_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl tower::Service<Request<Incoming>> for Forward {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.forward(req).await) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(
            grpc_message_encode("refused: 100% ✓"),
            "refused: 100%25 %E2%9C%93"
        );
    }

    #[test]
    fn grpc_errors_are_trailers_only_unavailable() {
        let resp = local_error(true, StatusCode::BAD_GATEWAY, "upstream connect failed");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert_eq!(resp.headers()["grpc-message"], "upstream connect failed");
        let plain = local_error(false, StatusCode::BAD_GATEWAY, "x");
        assert_eq!(plain.status(), StatusCode::BAD_GATEWAY);
    }
}
