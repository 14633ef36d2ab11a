//! OpenTelemetry semantic conventions for the hops stitch sees (stable HTTP and RPC
//! conventions), and the rules that turn a request/response pair into span name,
//! attributes and status.
//!
//! - Name: `{method}` for HTTP (a proxy knows no route; raw paths as names explode
//!   cardinality), `{package.Service}/{Method}` for gRPC.
//! - Error: 5xx on the server side, 4xx and 5xx on the client side, any non-OK gRPC status,
//!   or an upstream failure → `error.type` set and status Error.
//!
//! This module holds the names and the pure rules; the methods of
//! [`SpanRecord`](super::SpanRecord) (in `span.rs`, with the record) apply them, in request
//! order: `for_request` when the head arrives, `record_response_head` when the response head
//! comes back, `record_trailers` if trailers arrive, `record_failure` if the upstream fails,
//! and `finish` at end of stream, error or drop.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, Method, Uri, Version};

use compact_str::CompactString;

use super::span::AttrValue;

/// `http.request.method`: the request method (`_OTHER` for non-standard ones).
pub(crate) const HTTP_REQUEST_METHOD: &str = "http.request.method";
/// `http.request.method_original`: the raw method when it was normalised to `_OTHER`.
pub(crate) const HTTP_REQUEST_METHOD_ORIGINAL: &str = "http.request.method_original";
/// `http.response.status_code`.
pub(crate) const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
/// `url.path`.
pub(crate) const URL_PATH: &str = "url.path";
/// `url.query` (recorded only when enabled: queries often carry secrets).
pub(crate) const URL_QUERY: &str = "url.query";
/// `url.scheme`.
pub(crate) const URL_SCHEME: &str = "url.scheme";
/// `server.address`: the authority the request was addressed to.
pub(crate) const SERVER_ADDRESS: &str = "server.address";
/// `server.port`.
pub(crate) const SERVER_PORT: &str = "server.port";
/// `client.address`: the peer that opened the connection.
pub(crate) const CLIENT_ADDRESS: &str = "client.address";
/// `network.protocol.version`: `1.0`, `1.1` or `2`.
pub(crate) const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
/// `user_agent.original`.
pub(crate) const USER_AGENT_ORIGINAL: &str = "user_agent.original";
/// `rpc.system` (`grpc`).
pub(crate) const RPC_SYSTEM: &str = "rpc.system";
/// `rpc.service`: the full service name, `package.Service`.
pub(crate) const RPC_SERVICE: &str = "rpc.service";
/// `rpc.method`.
pub(crate) const RPC_METHOD: &str = "rpc.method";
/// `rpc.grpc.status_code`: the numeric gRPC status.
pub(crate) const RPC_GRPC_STATUS_CODE: &str = "rpc.grpc.status_code";
/// `error.type`: the status code, gRPC code name or failure class that made the hop fail.
pub(crate) const ERROR_TYPE: &str = "error.type";
/// `stitch.propagation.dialect`: which dialect the context was extracted from (`none` if absent).
pub const STITCH_PROPAGATION_DIALECT: &str = "stitch.propagation.dialect";
/// `stitch.propagation.repairs`: comma-separated repairs applied (e.g. `b3:pad_trace_id`).
pub(crate) const STITCH_PROPAGATION_REPAIRS: &str = "stitch.propagation.repairs";
/// `stitch.propagation.conflict`: `winner>loser` when dialects disagreed.
pub(crate) const STITCH_PROPAGATION_CONFLICT: &str = "stitch.propagation.conflict";
/// `stitch.propagation.tracestate_restored`: true when a dropped `tracestate` was restored.
pub(crate) const STITCH_TRACESTATE_RESTORED: &str = "stitch.propagation.tracestate_restored";
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
    /// The `Host` header, which the trace layer has read already to route the request
    /// (looking it up again cost about 160 instructions per span).
    pub host: Option<&'a HeaderValue>,
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
            host: parts.headers.get(http::header::HOST),
            client_address: None,
            destination_port: None,
            record_query: false,
            grpc: crate::grpc::is_grpc(&parts.headers),
        }
    }
}

/// `{package.Service}` and `{Method}` from a gRPC path `/package.Service/Method`.
pub(crate) fn grpc_service_method(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((service, method))
}

/// The conventional gRPC status code name, used as `error.type`.
pub(crate) fn grpc_code_name(code: i64) -> &'static str {
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

pub(super) fn known_method(method: &Method) -> Option<&'static str> {
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

pub(super) fn protocol_version(v: Version) -> Option<&'static str> {
    Some(match v {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => return None,
    })
}

/// The authority text a request names, and whether it came from the URI: the absolute-form
/// URI's, else `Host` (HTTP/1) — HTTP/2's `:authority` arrives in the URI. Only found here;
/// the span splits it when read ([`split_host_port`]).
pub(super) fn authority_text<'f>(facts: &RequestFacts<'f>) -> (Option<&'f str>, bool) {
    if let Some(a) = facts.uri.authority() {
        return (Some(a.as_str()), true);
    }
    let host = facts.host.and_then(|h| h.to_str().ok()).map(str::trim);
    (host, false)
}

/// `host[:port]` or `[v6]:port` into the host (brackets kept, as `Authority::host` does)
/// and the port; `None` if the port is not a number or the host is empty or has userinfo.
pub(super) fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
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
pub(super) fn ip_text(ip: IpAddr) -> AttrValue {
    let IpAddr::V4(v4) = ip else {
        return AttrValue::Str(CompactString::from(ip.to_string()));
    };
    // Written into a stack buffer, then copied inline once: pushing char by char cost
    // about 450 instructions per span (a length check and UTF-8 encoding per digit).
    let mut out = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            out[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            out[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        out[len] = b'0' + octet % 10;
        len += 1;
    }
    // Only ASCII digits and dots were written.
    AttrValue::Str(CompactString::from_utf8(&out[..len]).unwrap_or_default())
}

#[cfg(test)]
mod tests;
