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

use super::body::{ProxyBody, UpstreamBody, WireBody};
use super::headers::{self, Keep};
use super::pool::{Checkin, Pool, Switched};
use super::request_body::{FIRST_FRAME_WINDOW, RequestBody, peek_first_frame};
use super::validate::{self, Rejection};
use crate::proxy::addrs::Target;
use crate::proxy::detect::Protocol;
use crate::proxy::error::{ForwardError, ForwardErrorKind, is_malformed_body};
use crate::proxy::h1::ext::OnUpgrade;
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

    /// Checks the request and names its upstream; `Err` says why stitch answers it itself
    /// (nothing is forwarded). Synchronous, so a refused request costs no forwarding future.
    fn admit(&self, req: &Request<WireBody>) -> Result<Target, Refusal> {
        let checked = match self.protocol {
            Protocol::Http2 => {
                validate::check_http2(req, matches!(self.destination, Destination::PerRequest))
            }
            _ => validate::check_http1(req),
        };
        checked.map_err(Refusal::Malformed)?;
        self.target_of(req).map_err(Refusal::NoUpstream)
    }

    /// The answer to a request [`Forward::admit`] refused.
    fn refuse(&self, grpc: bool, why: Refusal) -> Response<ProxyBody> {
        match why {
            Refusal::Malformed(why) => self.reject(grpc, why),
            Refusal::NoUpstream(why) => local_error(grpc, StatusCode::BAD_REQUEST, why),
        }
    }

    /// Whether the request's body framing can break (HTTP/1 chunked, HTTP/2 with
    /// `content-length`) and the body is not already over: such a request is held for its
    /// first body frame ([`Forward::read_ahead_then_send`]).
    fn needs_read_ahead(&self, req: &Request<WireBody>) -> bool {
        let framed = match self.protocol {
            Protocol::Http2 => req.headers().contains_key(header::CONTENT_LENGTH),
            _ => req.headers().contains_key(header::TRANSFER_ENCODING),
        };
        framed && !req.body().is_end_stream()
    }

    /// Holds the request until its first body frame, at most [`FIRST_FRAME_WINDOW`], so a body
    /// broken from its first bytes is refused before anything reaches the upstream; then sends
    /// it. A future of its own (boxed apart from [`Forward::send`]'s) so that the timer and the
    /// frame held do not enlarge every other request's future.
    async fn read_ahead_then_send(
        self,
        grpc: bool,
        target: Target,
        req: Request<WireBody>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let (parts, body) = req.into_parts();
        match peek_first_frame(body, FIRST_FRAME_WINDOW).await {
            Ok(body) => {
                self.send(grpc, target, Request::from_parts(parts, body))
                    .await
            }
            Err(e) if is_malformed_body(Some(&*e)) => {
                Ok(self.reject(grpc, Rejection::MalformedBody))
            }
            // The client left before its body's first bytes: not a refusal (see
            // `ForwardError::is_client_body_failure`).
            Err(_) => Ok(body_ended_early(grpc)),
        }
    }

    /// Sends an admitted request upstream and turns a failure into the response for it. This
    /// is the future every forwarded request keeps while in flight, so it is kept small: the
    /// request is prepared before the future exists, the future holds it once (an `async fn`
    /// would hold its argument twice), and the rare paths (CONNECT tunnel, protocol switch)
    /// are boxed where they start.
    fn send(
        self,
        grpc: bool,
        target: Target,
        mut req: Request<RequestBody>,
    ) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send {
        let exchange = match self.protocol {
            Protocol::Http2 => {
                headers::strip_hop_by_hop(
                    req.headers_mut(),
                    Keep {
                        upgrade: false,
                        te_trailers: true,
                    },
                );
                Exchange::Http2
            }
            _ => self.prepare_h1(&mut req),
        };
        async move {
            let result = match exchange {
                Exchange::Http1 => self
                    .pool
                    .send_h1(&target, req)
                    .await
                    .map(|(resp, checkin)| from_upstream(resp.map(WireBody::Http1), Some(checkin))),
                Exchange::Http2 => self
                    .pool
                    .send_h2(&target, req)
                    .await
                    .map(|resp| from_upstream(resp.map(WireBody::Http2), None)),
                Exchange::Tunnel => Box::pin(self.tunnel(&target, req)).await,
                Exchange::Upgrade => Box::pin(self.upgrade(&target, req)).await,
            };
            Ok(self.answer(grpc, &target, result))
        }
    }

    /// Prepares an HTTP/1 request for the next hop (origin-form, HTTP/1.1, hop-by-hop headers
    /// dropped) and says how it goes there.
    fn prepare_h1(&self, req: &mut Request<RequestBody>) -> Exchange {
        let connect = req.method() == Method::CONNECT;
        if connect && matches!(self.destination, Destination::PerRequest) {
            return Exchange::Tunnel;
        }
        // A CONNECT addressed through a fixed destination belongs to the app behind it.
        let upgrade = connect || headers::wants_upgrade(req.headers());
        if !connect {
            to_origin_form(req);
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
            Exchange::Upgrade
        } else {
            Exchange::Http1
        }
    }

    /// The response for the outcome of a forwarded request: the upstream's, or the error
    /// stitch writes for a failure (502/504, gRPC `UNAVAILABLE`, 400 for a malformed body).
    fn answer(
        &self,
        grpc: bool,
        target: &Target,
        result: Result<Response<ProxyBody>, ForwardError>,
    ) -> Response<ProxyBody> {
        match result {
            Ok(resp) => resp,
            Err(e) if e.is_malformed_request_body() => self.reject(grpc, Rejection::MalformedBody),
            Err(e) if e.is_client_body_failure() => {
                tracing::debug!(%target, error = %e.with_cause(), "the client's request body ended early");
                body_ended_early(grpc)
            }
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

    fn target_of(&self, req: &Request<WireBody>) -> Result<Target, &'static str> {
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

    /// `CONNECT host:port` to the explicit proxy: connect, answer 200, copy bytes both ways.
    ///
    /// The tunnel is a task of the drain's, and the client socket it takes over from the
    /// HTTP/1 driver carries the connection's lease (permit, open-connection count, byte
    /// counters), so a tunnel is accounted for like the connection it was until it closes.
    async fn tunnel(
        &self,
        target: &Target,
        mut req: Request<RequestBody>,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        let on_upgrade = client_upgrade(&mut req)?;
        let mut upstream = self.pool.connect_tcp(target).await?;
        let lease = self.lease.clone();
        self.lease.shutdown().spawn(async move {
            match on_upgrade.await {
                Ok(mut client) => {
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
        let client_upgrade = client_upgrade(&mut req)?;
        let (resp, switched) = self.pool.send_upgrade(target, req).await?;
        let resp = resp.map(WireBody::Http1);
        // The client driver hands the socket over after a 101 (or a 2xx to CONNECT) only.
        let mut upstream = match switched {
            Switched::Yes(upgraded) => upgraded,
            Switched::No(checkin) => return Ok(from_upstream(resp, Some(checkin))),
        };
        let lease = self.lease.clone();
        self.lease.shutdown().spawn(async move {
            let mut client = match client_upgrade.await {
                Ok(client) => client,
                Err(e) => return tracing::debug!(error = %e, "protocol switch failed"),
            };
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

/// The client connection's hand-over after a protocol switch or `CONNECT`, which the HTTP/1
/// driver attached to the request; a request without one (HTTP/2) cannot switch.
fn client_upgrade<B>(req: &mut Request<B>) -> Result<OnUpgrade, ForwardError> {
    req.extensions_mut().remove::<OnUpgrade>().ok_or_else(|| {
        ForwardError::connect(std::io::Error::other(
            "the client connection cannot switch protocols",
        ))
    })
}

/// Why a request is answered by stitch without being forwarded.
enum Refusal {
    /// It breaks a protocol rule (`400`, and on HTTP/1 the connection closes).
    Malformed(Rejection),
    /// It names no valid upstream (`400`).
    NoUpstream(&'static str),
}

/// How a request goes upstream.
enum Exchange {
    /// On a pooled HTTP/1 connection.
    Http1,
    /// On the target's shared HTTP/2 connection.
    Http2,
    /// `CONNECT` to the explicit proxy: stitch opens the tunnel itself.
    Tunnel,
    /// A protocol switch (or a `CONNECT` for the app behind a fixed destination), on a
    /// connection of its own.
    Upgrade,
}

/// The upstream's response as stitch returns it: hop-by-hop headers dropped, the body streamed
/// (and, for a pooled HTTP/1 connection, `checkin` returning it once the body is read).
fn from_upstream(resp: Response<WireBody>, checkin: Option<Checkin>) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, Keep::default());
    Response::from_parts(parts, ProxyBody::Upstream(UpstreamBody::new(body, checkin)))
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

/// The answer to a request whose body ended early because the client closed its connection
/// (or its socket failed): a `400`, neither counted as a refusal nor marked as an upstream
/// failure. The HTTP/1 driver drops it unwritten, as the client is gone.
fn body_ended_early(grpc: bool) -> Response<ProxyBody> {
    local_error(
        grpc,
        StatusCode::BAD_REQUEST,
        "stitch: the request body ended early (the client closed its connection)",
    )
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

impl tower::Service<Request<WireBody>> for Forward {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    /// Refusals are answered here, without a forwarding future; a forwarded request gets one
    /// boxed future, [`Forward::send`]'s (or, held for its first body frame,
    /// [`Forward::read_ahead_then_send`]'s).
    fn call(&mut self, req: Request<WireBody>) -> Self::Future {
        let grpc = crate::grpc::is_grpc(req.headers());
        let target = match self.admit(&req) {
            Ok(target) => target,
            Err(why) => return Box::pin(std::future::ready(Ok(self.refuse(grpc, why)))),
        };
        let this = self.clone();
        if this.needs_read_ahead(&req) {
            return Box::pin(this.read_ahead_then_send(grpc, target, req));
        }
        Box::pin(this.send(grpc, target, req.map(RequestBody::new)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `make` returns, without running it (or building its arguments).
    fn future_size<A, B, C, D, F: Future>(_make: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// One of these futures is allocated per request in flight, so its size is memory per busy
    /// connection (issue 15). An `async fn` future is as large as the largest state it may
    /// await: before the rare paths (tunnel, upgrade, read-ahead, connect) were boxed and the
    /// request stopped being held once per `async fn` level, it was 3,784 bytes (debug
    /// build). With hyper's client it was about 1,000; since stitch's own HTTP/1 client runs
    /// the upstream exchange inside this future (hyper ran it in a connection task of its own,
    /// with 8 KiB read and write buffers and a request channel per upstream connection, all
    /// gone now) it is about 1,450: the exchange (~1,080, holding the request once) plus this
    /// future's own copy of the request and its forwarder. A size bound, not a timing one: it
    /// fails when a change makes the common path carry a large state again.
    #[test]
    fn the_per_request_future_stays_small() {
        let common = future_size(Forward::send);
        let read_ahead = future_size(Forward::read_ahead_then_send);
        println!("forwarding future: {common} bytes; with the read-ahead: {read_ahead} bytes");
        assert!(
            common <= 1536,
            "the forwarding future grew to {common} bytes"
        );
        assert!(
            read_ahead <= 2048,
            "the read-ahead future grew to {read_ahead} bytes"
        );
    }

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
