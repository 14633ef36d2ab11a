//! The facts of one of stitch's own hops, kept as read until the span is read or exported.
//!
//! Building a hop's attributes on the request path — nine to twelve keyed, typed values in a
//! vector of their own, the authority split, the user agent validated — and freeing them when
//! the ring evicts the span cost about 2,000 instructions per request, for spans most of
//! which nobody reads. Instead the request path copies a few facts into this fixed-size
//! record (short strings inline, inside the span's one allocation), and
//! [`HopFacts::visit`] turns them into attributes, in the conventions' order, when the span
//! is encoded for OTLP (without allocating) or read by the admin views.

use std::net::IpAddr;

use compact_str::{CompactString, ToCompactString};
use http::{Method, Version};

use super::semconv::{
    CLIENT_ADDRESS, ERROR_TYPE, HTTP_REQUEST_METHOD, HTTP_REQUEST_METHOD_ORIGINAL,
    HTTP_RESPONSE_STATUS_CODE, NETWORK_PROTOCOL_VERSION, RPC_GRPC_STATUS_CODE, RPC_METHOD,
    RPC_SERVICE, RPC_SYSTEM, SERVER_ADDRESS, SERVER_PORT, STITCH_PARENT_INFERRED,
    STITCH_PROPAGATION_DIALECT, STITCH_PROPAGATION_INJECTED, STITCH_TRACESTATE_RESTORED, URL_PATH,
    URL_SCHEME, USER_AGENT_ORIGINAL, grpc_service_method, ip_text, known_method, protocol_version,
    split_host_port,
};
use super::span::AttrValue;

/// An attribute value lent for one call of a visitor: how a hop's facts hand out
/// values without allocating them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttrRef<'a> {
    /// A string value.
    Str(&'a str),
    /// An integer value.
    Int(i64),
    /// A floating-point value.
    F64(f64),
    /// A boolean value.
    Bool(bool),
}

impl AttrRef<'_> {
    /// The value owned, to keep beyond the visit.
    pub fn to_value(self) -> AttrValue {
        match self {
            AttrRef::Str(s) => AttrValue::text(s),
            AttrRef::Int(i) => AttrValue::Int(i),
            AttrRef::F64(f) => AttrValue::F64(f),
            AttrRef::Bool(b) => AttrValue::Bool(b),
        }
    }
}

impl<'a> From<&'a AttrValue> for AttrRef<'a> {
    fn from(value: &'a AttrValue) -> Self {
        match value {
            AttrValue::Str(s) => AttrRef::Str(s),
            AttrValue::Int(i) => AttrRef::Int(*i),
            AttrValue::F64(f) => AttrRef::F64(*f),
            AttrValue::Bool(b) => AttrRef::Bool(*b),
        }
    }
}

/// What made a hop fail, as `error.type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorType {
    /// A failure class (`connect_error`, `cancelled`) or a gRPC status name.
    Named(&'static str),
    /// The HTTP status code that made the hop fail.
    Status(u16),
}

/// The request head's facts a hop's span needs, copied (never borrowed: a slice of the
/// connection's read buffer would keep that buffer alive in the ring), plus what propagation
/// did and what the response said.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HopFacts {
    pub(crate) method: Method,
    pub(crate) path: CompactString,
    pub(crate) https: bool,
    /// The authority text as the request named it (`host[:port]`), split when read.
    pub(crate) authority: Option<CompactString>,
    /// The authority came from the URI (absolute form, HTTP/2's `:authority`), which the
    /// http crate has validated: one the hand split refuses (userinfo) is read its way.
    pub(crate) authority_in_uri: bool,
    pub(crate) destination_port: Option<u16>,
    pub(crate) client: Option<IpAddr>,
    pub(crate) version: Version,
    pub(crate) user_agent: Option<CompactString>,
    /// A gRPC request with a `/package.Service/Method` path (the span is named after it).
    pub(crate) rpc: bool,
    pub(crate) dialect: Option<CompactString>,
    pub(crate) injected: Option<CompactString>,
    pub(crate) tracestate_restored: bool,
    pub(crate) parent_inferred: bool,
    pub(crate) status_code: Option<u16>,
    pub(crate) grpc_status: Option<i64>,
    pub(crate) error_type: Option<ErrorType>,
}

impl HopFacts {
    /// Calls `f` with each attribute the facts make, in the order the conventions list them
    /// (request, propagation, response). Allocates only for an IPv6 client address.
    pub(crate) fn visit(&self, mut f: impl FnMut(&'static str, AttrRef<'_>)) {
        match known_method(&self.method) {
            Some(m) => f(HTTP_REQUEST_METHOD, AttrRef::Str(m)),
            None => {
                f(HTTP_REQUEST_METHOD, AttrRef::Str("_OTHER"));
                f(
                    HTTP_REQUEST_METHOD_ORIGINAL,
                    AttrRef::Str(self.method.as_str()),
                );
            }
        }
        f(URL_PATH, AttrRef::Str(&self.path));
        let scheme = if self.https { "https" } else { "http" };
        f(URL_SCHEME, AttrRef::Str(scheme));
        self.visit_server(&mut f);
        if let Some(ip) = self.client {
            f(CLIENT_ADDRESS, AttrRef::from(&ip_text(ip)));
        }
        if let Some(v) = protocol_version(self.version) {
            f(NETWORK_PROTOCOL_VERSION, AttrRef::Str(v));
        }
        if let Some(ua) = &self.user_agent {
            f(USER_AGENT_ORIGINAL, AttrRef::Str(ua));
        }
        if self.rpc
            && let Some((service, method)) = grpc_service_method(&self.path)
        {
            f(RPC_SYSTEM, AttrRef::Str("grpc"));
            f(RPC_SERVICE, AttrRef::Str(service));
            f(RPC_METHOD, AttrRef::Str(method));
        }
        if let Some(d) = &self.dialect {
            f(STITCH_PROPAGATION_DIALECT, AttrRef::Str(d));
        }
        if self.tracestate_restored {
            f(STITCH_TRACESTATE_RESTORED, AttrRef::Bool(true));
        }
        if self.parent_inferred {
            f(STITCH_PARENT_INFERRED, AttrRef::Bool(true));
        }
        if let Some(list) = &self.injected {
            f(STITCH_PROPAGATION_INJECTED, AttrRef::Str(list));
        }
        if let Some(code) = self.status_code {
            f(HTTP_RESPONSE_STATUS_CODE, AttrRef::Int(i64::from(code)));
        }
        if let Some(code) = self.grpc_status {
            f(RPC_GRPC_STATUS_CODE, AttrRef::Int(code));
        }
        match self.error_type {
            Some(ErrorType::Named(name)) => f(ERROR_TYPE, AttrRef::Str(name)),
            Some(ErrorType::Status(code)) => f(ERROR_TYPE, AttrRef::Str(&code.to_compact_string())),
            None => {}
        }
    }

    /// `server.address` and `server.port`: the authority split (a URI's by the http crate's
    /// rules when the hand split refuses it), the port falling back to the destination's.
    fn visit_server(&self, f: &mut impl FnMut(&'static str, AttrRef<'_>)) {
        let text = self.authority.as_deref();
        if let Some((host, port)) = text.and_then(split_host_port) {
            f(SERVER_ADDRESS, AttrRef::Str(host));
            self.visit_port(port, f);
            return;
        }
        if let Some(parsed) = text
            .filter(|_| self.authority_in_uri)
            .and_then(|t| t.parse::<http::uri::Authority>().ok())
        {
            f(SERVER_ADDRESS, AttrRef::Str(parsed.host()));
            self.visit_port(parsed.port_u16(), f);
            return;
        }
        self.visit_port(None, f);
    }

    fn visit_port(&self, port: Option<u16>, f: &mut impl FnMut(&'static str, AttrRef<'_>)) {
        if let Some(port) = port.or(self.destination_port) {
            f(SERVER_PORT, AttrRef::Int(i64::from(port)));
        }
    }

    /// Bytes held outside the record (strings too long to sit inline), for the ring's bound.
    pub(crate) fn heap_bytes(&self) -> usize {
        let strings = [
            Some(&self.path),
            self.authority.as_ref(),
            self.user_agent.as_ref(),
            self.dialect.as_ref(),
            self.injected.as_ref(),
        ];
        strings
            .into_iter()
            .flatten()
            .filter(|s| s.is_heap_allocated())
            .map(|s| s.len())
            .sum()
    }
}
