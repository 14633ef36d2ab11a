//! What a person wants to read off one span, gathered in one pass over its attributes: the
//! operation as users name it, the status, and the propagation facts stitch recorded.

use std::borrow::Cow;
use std::fmt::Write;

use super::{Clip, Esc};
use crate::telemetry::ring::StoredSpan;
use crate::telemetry::semconv::{
    ERROR_TYPE, HTTP_REQUEST_METHOD, HTTP_RESPONSE_STATUS_CODE, RPC_GRPC_STATUS_CODE,
    SERVER_ADDRESS, SERVER_PORT, STITCH_PARENT_INFERRED, STITCH_PROPAGATION_CONFLICT,
    STITCH_PROPAGATION_DIALECT, STITCH_PROPAGATION_INJECTED, STITCH_PROPAGATION_REPAIRS,
    STITCH_TRACESTATE_RESTORED, URL_PATH,
};
use crate::telemetry::span::{AttrValue, SpanKind};

/// Longest operation name drawn in a row or a seam (the span detail has it whole).
const MAX_NAME_CHARS: usize = 160;

/// The facts of one span the rows, badges and seams show.
#[derive(Debug, Default)]
pub(super) struct Facts<'a> {
    /// `GET /orders` for a stitch HTTP span (whose name is the bare method), else the name.
    pub(super) operation: Cow<'a, str>,
    /// `200`, `grpc 7`, or the error type of a failed hop; empty when nothing is known.
    pub(super) status: Cow<'a, str>,
    /// The span is marked failed (drawn red: nothing else is).
    pub(super) error: bool,
    /// A stitch produced the span, so absent propagation facts mean "none", not "unknown".
    pub(super) by_stitch: bool,
    /// The dialect stitch extracted the context from.
    pub(super) dialect: Option<&'a str>,
    /// The dialects stitch wrote on the forwarded request.
    pub(super) injected: Option<&'a str>,
    /// `dialect:kind` repairs, comma-separated.
    pub(super) repairs: Option<&'a str>,
    /// `winner>loser` when dialects disagreed on the trace id.
    pub(super) conflict: Option<&'a str>,
    /// A dropped `tracestate` was restored.
    pub(super) restored: bool,
    /// The parent is a guess of the orphan policy.
    pub(super) inferred: bool,
    /// `host:port` a client span called.
    pub(super) peer: Option<String>,
}

fn text(value: &AttrValue) -> Option<&str> {
    match value {
        AttrValue::Str(s) => Some(s.as_str()),
        _ => None,
    }
}

impl<'a> Facts<'a> {
    /// Reads the facts of `stored`.
    pub(super) fn of(stored: &'a StoredSpan) -> Facts<'a> {
        let span = &stored.span;
        let mut facts = Facts {
            error: span.status.is_error(),
            by_stitch: stored
                .resource
                .attributes()
                .iter()
                .any(|a| a.key == "telemetry.sdk.name" && text(&a.value) == Some("stitch")),
            ..Facts::default()
        };
        let (mut method, mut path, mut http_status, mut grpc_status, mut error_type) =
            (None, None, None, None, None);
        let (mut address, mut port) = (None, None);
        for a in &span.attributes {
            let v = &a.value;
            match a.key.as_ref() {
                HTTP_REQUEST_METHOD => method = text(v),
                URL_PATH => path = text(v),
                HTTP_RESPONSE_STATUS_CODE => http_status = Some(v),
                RPC_GRPC_STATUS_CODE => grpc_status = Some(v),
                ERROR_TYPE => error_type = text(v),
                SERVER_ADDRESS => address = text(v),
                SERVER_PORT => port = Some(v),
                STITCH_PROPAGATION_DIALECT => facts.dialect = text(v),
                STITCH_PROPAGATION_INJECTED => facts.injected = text(v),
                STITCH_PROPAGATION_REPAIRS => facts.repairs = text(v),
                STITCH_PROPAGATION_CONFLICT => facts.conflict = text(v),
                STITCH_TRACESTATE_RESTORED => facts.restored = *v == AttrValue::Bool(true),
                STITCH_PARENT_INFERRED => facts.inferred = *v == AttrValue::Bool(true),
                key => facts.by_stitch |= key.starts_with("stitch."),
            }
        }
        facts.operation = match (method, path) {
            (Some(m), Some(p)) if m == span.name => Cow::Owned(format!("{m} {p}")),
            _ => Cow::Borrowed(span.name.as_ref()),
        };
        facts.status = match (grpc_status, http_status) {
            (Some(code), _) => Cow::Owned(format!("grpc {}", display(code))),
            (None, Some(code)) => Cow::Owned(display(code)),
            (None, None) if facts.error => Cow::Borrowed(error_type.unwrap_or("error")),
            (None, None) => Cow::Borrowed(""),
        };
        if matches!(span.kind, SpanKind::Client | SpanKind::Producer) {
            facts.peer = address.map(|a| match port {
                Some(p) => format!("{a}:{}", display(p)),
                None => a.to_owned(),
            });
        }
        facts
    }

    /// `in → out` for a stitch span (`none` when no context arrived), `None` otherwise.
    pub(super) fn dialects(&self) -> Option<String> {
        if !self.by_stitch && self.dialect.is_none() && self.injected.is_none() {
            return None;
        }
        Some(format!(
            "{} → {}",
            self.dialect.unwrap_or("none"),
            self.injected.unwrap_or("—")
        ))
    }

    /// The operation name, clipped for a row or a table cell, escaped.
    pub(super) fn operation_html(&self) -> Clip<'_> {
        Clip(&self.operation, MAX_NAME_CHARS)
    }

    /// The propagation badges: dialect in → out, repaired, restored, conflict, inferred.
    pub(super) fn badges(&self, html: &mut String) {
        if let Some(dialects) = self.dialects() {
            let _ = write!(
                html,
                "<span class=\"b dialect\" title=\"dialect read → dialects written\">{}</span>",
                Clip(&dialects, 80)
            );
        }
        if let Some(repairs) = self.repairs {
            let _ = write!(
                html,
                "<span class=\"b repaired\" title=\"{}\">repaired</span>",
                Clip(repairs, 200)
            );
        }
        if self.restored {
            html.push_str("<span class=\"b restored\">tracestate restored</span>");
        }
        if let Some(conflict) = self.conflict {
            let _ = write!(
                html,
                "<span class=\"b conflict\" title=\"dialects disagreed on the trace id; the first won\">conflict {}</span>",
                Clip(conflict, 80)
            );
        }
        if self.inferred {
            html.push_str("<span class=\"b inferred\" title=\"the app sent no context; stitch linked the call to the only request in flight\">inferred parent</span>");
        }
    }

    /// Repairs, restores and conflicts as short text for a seam cell (empty when none).
    pub(super) fn fixes(&self, out: &mut Vec<String>) {
        if let Some(r) = self.repairs {
            out.push(format!("repaired {r}"));
        }
        if self.restored {
            out.push("tracestate restored".to_owned());
        }
        if let Some(c) = self.conflict {
            out.push(format!("conflict {c}"));
        }
    }
}

/// An attribute value as text.
pub(super) fn display(value: &AttrValue) -> String {
    match value {
        AttrValue::Str(s) => s.to_string(),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::F64(f) => f.to_string(),
        AttrValue::Bool(b) => b.to_string(),
    }
}

/// The kind chip: `server` (inbound hop), `client` (outbound hop), or the received kind.
pub(super) fn kind_chip(kind: SpanKind) -> String {
    let class = match kind {
        SpanKind::Server => "k-server",
        SpanKind::Client => "k-client",
        _ => "k-other",
    };
    format!("<span class=\"kind {class}\">{}</span>", Esc(kind.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::ring::SpanResource;
    use crate::telemetry::span::{Attribute, SpanRecord, SpanStatus};
    use std::sync::Arc;
    use std::time::SystemTime;

    fn stored(
        name: &'static str,
        kind: SpanKind,
        attrs: &[(&'static str, AttrValue)],
    ) -> StoredSpan {
        let mut span = SpanRecord::new([1; 16], [2; 8], None, kind, name, SystemTime::UNIX_EPOCH);
        for (k, v) in attrs {
            span.set_attr(*k, v.clone());
        }
        StoredSpan {
            service: Arc::from("svc"),
            resource: Arc::new(SpanResource::new(vec![Attribute {
                key: "telemetry.sdk.name".into(),
                value: "stitch".into(),
            }])),
            span: Arc::new(span),
        }
    }

    #[test]
    fn stitch_http_spans_read_as_method_and_path_with_their_seam() {
        let s = stored(
            "GET",
            SpanKind::Client,
            &[
                (HTTP_REQUEST_METHOD, "GET".into()),
                (URL_PATH, "/orders".into()),
                (HTTP_RESPONSE_STATUS_CODE, AttrValue::Int(200)),
                (SERVER_ADDRESS, "10.0.0.7".into()),
                (SERVER_PORT, AttrValue::Int(8080)),
                (STITCH_PROPAGATION_INJECTED, "w3c,jd".into()),
                (STITCH_PARENT_INFERRED, true.into()),
            ],
        );
        let f = Facts::of(&s);
        assert_eq!(f.operation, "GET /orders");
        assert_eq!(f.status, "200");
        assert!(!f.error && f.inferred && f.by_stitch);
        assert_eq!(f.dialects().as_deref(), Some("none → w3c,jd"));
        assert_eq!(f.peer.as_deref(), Some("10.0.0.7:8080"));
        let mut html = String::new();
        f.badges(&mut html);
        assert!(html.contains("none → w3c,jd") && html.contains("inferred parent"));
    }

    #[test]
    fn grpc_and_failed_spans_show_their_status_and_sdk_spans_no_dialects() {
        let mut s = stored(
            "pkg.Svc/Do",
            SpanKind::Server,
            &[
                (RPC_GRPC_STATUS_CODE, AttrValue::Int(7)),
                (ERROR_TYPE, "PERMISSION_DENIED".into()),
            ],
        );
        let f = Facts::of(&s);
        assert_eq!(
            (f.operation.as_ref(), f.status.as_ref()),
            ("pkg.Svc/Do", "grpc 7")
        );
        let mut failed = SpanRecord::clone(&s.span);
        failed.attributes.clear();
        failed.set_attr(ERROR_TYPE, "connect_refused");
        failed.status = SpanStatus::Error {
            description: "".into(),
        };
        s.span = Arc::new(failed);
        s.resource = Arc::default();
        let f = Facts::of(&s);
        assert_eq!(f.status, "connect_refused");
        assert!(f.error && !f.by_stitch);
        assert_eq!(f.dialects(), None, "an SDK span has no seam facts");
    }
}
