//! OpenTelemetry semantic conventions for the hops stitch sees (stable HTTP and RPC
//! conventions), and the rules that turn a request/response pair into span name,
//! attributes and status.
//!
//! - Name: `{method}` for HTTP (a proxy knows no route; raw paths as names explode
//!   cardinality), `{package.Service}/{Method}` for gRPC.
//! - Error: 5xx on the server side, 4xx and 5xx on the client side, any non-OK gRPC status,
//!   or an upstream failure → `error.type` set and status Error.
//!
//! The trace layer calls, in request order: [`SpanRecord::for_request`] when the head
//! arrives, [`SpanRecord::record_response_head`] when the response head comes back,
//! [`SpanRecord::record_trailers`] if trailers arrive, [`SpanRecord::record_failure`] if
//! the upstream fails, and [`SpanRecord::finish`] at end of stream, error or drop.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::SystemTime;

use http::{HeaderMap, Method, StatusCode, Uri, Version};

use compact_str::CompactString;

use super::span::{AttrValue, SpanId, SpanKind, SpanRecord, SpanStatus, TraceId};

/// `http.request.method`: the request method (`_OTHER` for non-standard ones).
pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
/// `http.request.method_original`: the raw method when it was normalised to `_OTHER`.
pub const HTTP_REQUEST_METHOD_ORIGINAL: &str = "http.request.method_original";
/// `http.response.status_code`.
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
/// `url.path`.
pub const URL_PATH: &str = "url.path";
/// `url.query` (recorded only when enabled: queries often carry secrets).
pub const URL_QUERY: &str = "url.query";
/// `url.scheme`.
pub const URL_SCHEME: &str = "url.scheme";
/// `server.address`: the authority the request was addressed to.
pub const SERVER_ADDRESS: &str = "server.address";
/// `server.port`.
pub const SERVER_PORT: &str = "server.port";
/// `client.address`: the peer that opened the connection.
pub const CLIENT_ADDRESS: &str = "client.address";
/// `network.protocol.version`: `1.0`, `1.1` or `2`.
pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
/// `user_agent.original`.
pub const USER_AGENT_ORIGINAL: &str = "user_agent.original";
/// `rpc.system` (`grpc`).
pub const RPC_SYSTEM: &str = "rpc.system";
/// `rpc.service`: the full service name, `package.Service`.
pub const RPC_SERVICE: &str = "rpc.service";
/// `rpc.method`.
pub const RPC_METHOD: &str = "rpc.method";
/// `rpc.grpc.status_code`: the numeric gRPC status.
pub const RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";
/// `error.type`: the status code, gRPC code name or failure class that made the hop fail.
pub const ERROR_TYPE: &str = "error.type";
/// `stitch.propagation.dialect`: which dialect the context was extracted from (`none` if absent).
pub const STITCH_PROPAGATION_DIALECT: &str = "stitch.propagation.dialect";
/// `stitch.propagation.repairs`: comma-separated repairs applied (e.g. `b3:pad_trace_id`).
pub const STITCH_PROPAGATION_REPAIRS: &str = "stitch.propagation.repairs";
/// `stitch.propagation.conflict`: `winner>loser` when dialects disagreed.
pub const STITCH_PROPAGATION_CONFLICT: &str = "stitch.propagation.conflict";
/// `stitch.propagation.tracestate_restored`: true when a dropped `tracestate` was restored.
pub const STITCH_TRACESTATE_RESTORED: &str = "stitch.propagation.tracestate_restored";
/// `stitch.parent.inferred`: true when the parent was inferred for an orphan (never silent).
pub const STITCH_PARENT_INFERRED: &str = "stitch.parent.inferred";
/// `stitch.propagation.injected`: comma-separated dialects written on the forwarded request.
pub const STITCH_PROPAGATION_INJECTED: &str = "stitch.propagation.injected";

/// What the trace layer knows about a request when its head arrives.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request target (origin-form or absolute-form).
    pub uri: &'a Uri,
    /// The HTTP version spoken by the client.
    pub version: Version,
    /// The request headers (after propagation rewrote them; no trace header is recorded).
    pub headers: &'a HeaderMap,
    /// The connection's peer address.
    pub client_address: Option<IpAddr>,
    /// The destination port, when the authority does not say it.
    pub destination_port: Option<u16>,
    /// Whether to record `url.query` (off by default: queries often carry secrets).
    pub record_query: bool,
    /// Whether the content type is gRPC's (names the span `{package.Service}/{Method}`).
    pub grpc: bool,
}

impl<'a> RequestFacts<'a> {
    /// Facts from request parts, with the optional extras left empty.
    pub fn from_parts(parts: &'a http::request::Parts) -> Self {
        RequestFacts {
            method: &parts.method,
            uri: &parts.uri,
            version: parts.version,
            headers: &parts.headers,
            client_address: None,
            destination_port: None,
            record_query: false,
            grpc: is_grpc(&parts.headers),
        }
    }
}

/// `{package.Service}` and `{Method}` from a gRPC path `/package.Service/Method`.
pub fn grpc_service_method(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((service, method))
}

pub use crate::proxy::http::headers::is_grpc;

/// The conventional gRPC status code name, used as `error.type`.
pub fn grpc_code_name(code: i64) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "_OTHER",
    }
}

fn known_method(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return None,
    })
}

fn protocol_version(v: Version) -> Option<&'static str> {
    Some(match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => return None,
    })
}

/// The authority a request names: the absolute-form URI, else `Host` (HTTP/1) — HTTP/2's
/// `:authority` arrives in the URI. Split by hand: parsing a `Host` value into an
/// `Authority` would copy it first.
fn authority<'f>(facts: &RequestFacts<'f>) -> Option<(&'f str, Option<u16>)> {
    if let Some(a) = facts.uri.authority() {
        return Some((a.host(), a.port_u16()));
    }
    let host = facts.headers.get(http::header::HOST)?.to_str().ok()?;
    split_host_port(host.trim())
}

/// `host[:port]` or `[v6]:port` into the host (brackets kept, as `Authority::host` does)
/// and the port; `None` if the port is not a number or the host is empty or has userinfo.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = match authority.rfind([':', ']']) {
        Some(i) if authority.as_bytes()[i] == b':' => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    if host.is_empty()
        || host.contains(['@', '/', ' '])
        || (host.contains(':') && !host.starts_with('['))
    {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((host, port))
}

/// An IP address as text without the formatting machinery (it runs for every server span);
/// IPv4 fits inline in the `CompactString`.
fn ip_text(ip: IpAddr) -> AttrValue {
    let IpAddr::V4(v4) = ip else {
        return AttrValue::Str(CompactString::from(ip.to_string()));
    };
    let mut out = CompactString::const_new("");
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    AttrValue::Str(out)
}

impl SpanRecord {
    /// Opens a hop's span from the request head: name by the convention, request attributes
    /// set, `end` equal to `start` until [`SpanRecord::finish`].
    pub fn for_request(
        trace_id: TraceId,
        span_id: SpanId,
        parent_span_id: Option<SpanId>,
        kind: SpanKind,
        facts: &RequestFacts<'_>,
        start: SystemTime,
    ) -> SpanRecord {
        let grpc = if facts.grpc {
            grpc_service_method(facts.uri.path())
        } else {
            None
        };
        let method_name = known_method(facts.method);
        let name: Cow<'static, str> = match (grpc, method_name) {
            (Some((service, method)), _) => Cow::Owned(format!("{service}/{method}")),
            (None, Some(m)) => Cow::Borrowed(m),
            (None, None) => Cow::Borrowed("HTTP"),
        };
        let mut span = SpanRecord::new(trace_id, span_id, parent_span_id, kind, name, start);
        // Every key below is set once on a fresh span: push, no search.
        match method_name {
            Some(m) => span.push_attr(HTTP_REQUEST_METHOD, m),
            None => {
                span.push_attr(HTTP_REQUEST_METHOD, "_OTHER");
                span.push_attr(
                    HTTP_REQUEST_METHOD_ORIGINAL,
                    AttrValue::text(facts.method.as_str()),
                );
            }
        }
        span.push_attr(URL_PATH, AttrValue::text(facts.uri.path()));
        if facts.record_query
            && let Some(q) = facts.uri.query()
        {
            span.push_attr(URL_QUERY, AttrValue::text(q));
        }
        let scheme = facts.uri.scheme_str().unwrap_or("http");
        span.push_attr(URL_SCHEME, if scheme == "https" { "https" } else { "http" });
        if let Some((host, port)) = authority(facts) {
            span.push_attr(SERVER_ADDRESS, AttrValue::text(host));
            if let Some(port) = port.or(facts.destination_port) {
                span.push_attr(SERVER_PORT, i64::from(port));
            }
        } else if let Some(port) = facts.destination_port {
            span.push_attr(SERVER_PORT, i64::from(port));
        }
        if let Some(ip) = facts.client_address {
            span.push_attr(CLIENT_ADDRESS, ip_text(ip));
        }
        if let Some(v) = protocol_version(facts.version) {
            span.push_attr(NETWORK_PROTOCOL_VERSION, v);
        }
        if let Some(ua) = facts
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            span.push_attr(USER_AGENT_ORIGINAL, AttrValue::text(ua));
        }
        if let Some((service, method)) = grpc {
            span.push_attr(RPC_SYSTEM, "grpc");
            span.push_attr(RPC_SERVICE, AttrValue::text(service));
            span.push_attr(RPC_METHOD, AttrValue::text(method));
        }
        span
    }

    /// Records the response head: status code, and `grpc-status` of a trailers-only
    /// gRPC response.
    pub fn record_response_head(&mut self, status: StatusCode, headers: &HeaderMap) {
        self.set_attr(HTTP_RESPONSE_STATUS_CODE, i64::from(status.as_u16()));
        self.record_trailers(headers);
    }

    /// Records `grpc-status` from the trailers (or a trailers-only response head).
    pub fn record_trailers(&mut self, trailers: &HeaderMap) {
        if self.attr(RPC_SYSTEM).is_none() {
            return;
        }
        if let Some(code) = trailers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<i64>().ok())
        {
            self.set_attr(RPC_GRPC_STATUS_CODE, code);
        }
    }

    /// Marks the hop failed because the upstream could not be reached or broke
    /// (`error_type` is a low-cardinality class such as `connect_error`, `timeout`).
    pub fn record_failure(&mut self, error_type: &'static str) {
        self.set_attr(ERROR_TYPE, error_type);
        self.status = SpanStatus::Error {
            description: Cow::Borrowed(error_type),
        };
    }

    /// Ends the span at `end` and applies the error rule.
    pub fn finish(mut self, end: SystemTime) -> SpanRecord {
        self.close(end);
        self
    }

    /// [`SpanRecord::finish`] in place, for a record already behind its `Arc`.
    pub fn close(&mut self, end: SystemTime) {
        self.end = end;
        self.apply_error_rule();
    }

    fn apply_error_rule(&mut self) {
        if self.status.is_error() {
            return;
        }
        let grpc_code = match self.attr(RPC_GRPC_STATUS_CODE) {
            Some(super::span::AttrValue::Int(c)) => Some(*c),
            _ => None,
        };
        if let Some(code) = grpc_code {
            if code != 0 {
                let name = grpc_code_name(code);
                self.set_attr(ERROR_TYPE, name);
                self.status = SpanStatus::Error {
                    description: Cow::Owned(format!("gRPC status {name}")),
                };
            }
            return;
        }
        let status = match self.attr(HTTP_RESPONSE_STATUS_CODE) {
            Some(super::span::AttrValue::Int(c)) => *c,
            _ => return,
        };
        let failed = match self.kind {
            SpanKind::Client => status >= 400,
            _ => status >= 500,
        };
        if failed {
            self.set_attr(ERROR_TYPE, status.to_string());
            self.status = SpanStatus::Error {
                description: Cow::Owned(format!("HTTP {status}")),
            };
        }
    }
}

#[cfg(test)]
mod tests;
