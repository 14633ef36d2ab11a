//! `/traces` and `/traces/{trace_id}`: the ring as JSON (or HTML for browsers, drawn by
//! [`super::view::traces`]).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{Map, Value, json};

use super::view::traces::{RingFill, list_page, trace_page};
use super::{AdminState, json, respond, text, view, wants_html};
use crate::telemetry::TraceRing;
use crate::telemetry::ring::{StoredSpan, TraceDetail, TraceQuery, TraceSummary};
use crate::telemetry::span::{Attribute, SpanStatus, from_hex, to_hex};

const DEFAULT_LIMIT_JSON: usize = 100;
const DEFAULT_LIMIT_HTML: usize = 20;
const MAX_LIMIT: usize = 1000;

pub(super) fn list(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let html = wants_html(req);
    let query = match parse_query(req.uri().query().unwrap_or(""), html) {
        Ok(q) => q,
        Err(msg) => return json(StatusCode::BAD_REQUEST, &json!({ "error": msg })),
    };
    if html {
        return self::html(render_list(&state.ring, &query));
    }
    let summaries = state.ring.recent(&query);
    json(
        StatusCode::OK,
        &json!({ "traces": summaries.iter().map(summary_json).collect::<Vec<_>>() }),
    )
}

pub(super) fn one(state: &AdminState, req: &Request<Incoming>, id: &str) -> Response<Full<Bytes>> {
    let Some(trace_id) = from_hex::<16>(id) else {
        return text(StatusCode::BAD_REQUEST, "trace id must be 32 hex digits\n");
    };
    let Some(detail) = state.ring.trace(&trace_id) else {
        return text(StatusCode::NOT_FOUND, "trace not in the ring\n");
    };
    if wants_html(req) {
        // `?span=ID` opens that span's detail (the permalink every span's detail offers).
        let open = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|p| p.strip_prefix("span="))
            .and_then(from_hex::<8>);
        return html(trace_page(&detail, open));
    }
    json(StatusCode::OK, &detail_json(&detail))
}

/// An HTML page, with the policy that forbids scripts (see [`view`]).
pub(super) fn html(page: String) -> Response<Full<Bytes>> {
    let mut resp = respond(StatusCode::OK, "text/html; charset=utf-8", page);
    resp.headers_mut().insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(view::CSP),
    );
    resp
}

fn render_list(ring: &TraceRing, query: &TraceQuery) -> String {
    let details: Vec<TraceDetail> = ring
        .recent(query)
        .iter()
        .filter_map(|s| ring.trace(&s.trace_id))
        .collect();
    let fill = RingFill {
        spans: ring.span_count(),
        capacity: ring.capacity(),
    };
    list_page(&details, query, fill)
}

/// The `/traces` page for `raw_query` (the URL's query string, filters as the page's form
/// sends them) as a browser gets it. Public for the rendering benchmark.
pub fn traces_html(ring: &TraceRing, raw_query: &str) -> Result<String, String> {
    Ok(render_list(ring, &parse_query(raw_query, true)?))
}

fn parse_query(raw: &str, html: bool) -> Result<TraceQuery, String> {
    let mut q = TraceQuery {
        limit: if html {
            DEFAULT_LIMIT_HTML
        } else {
            DEFAULT_LIMIT_JSON
        },
        ..TraceQuery::default()
    };
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode_component(v).ok_or_else(|| format!("invalid encoding in {k}"))?;
        match k {
            "service" if !v.is_empty() => q.service = Some(v),
            "status" => {
                q.error = match v.as_str() {
                    "error" => Some(true),
                    "ok" | "unset" => Some(false),
                    "" | "any" => None,
                    _ => return Err("status must be error, ok or any".to_owned()),
                }
            }
            "min_duration_ms" if !v.is_empty() => {
                let min = v
                    .parse::<f64>()
                    .ok()
                    .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
                    .ok_or("min_duration_ms must be a non-negative number")?;
                q.min_duration = Some(min);
            }
            "limit" if !v.is_empty() => {
                let n: usize = v.parse().map_err(|_| "limit must be a number")?;
                q.limit = n.min(MAX_LIMIT);
            }
            "broken" => q.broken = flag(k, &v)?,
            "repaired" => q.repaired = flag(k, &v)?,
            "inferred" => q.inferred_parent = flag(k, &v)?,
            _ => {}
        }
    }
    Ok(q)
}

/// A checkbox filter: `on` (what a form sends), `1` or `true`; off when empty, `0` or `false`.
fn flag(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "on" | "1" | "true" => Ok(true),
        "" | "0" | "false" | "off" => Ok(false),
        _ => Err(format!("{name} must be on or off")),
    }
}

/// Decodes a query component (`+` is a space, `%XX` a byte); `None` on bad escapes or UTF-8.
fn decode_component(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

pub(super) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary_json(s: &TraceSummary) -> Value {
    json!({
        "trace_id": to_hex(&s.trace_id),
        "root_name": s.root_name,
        "root_service": s.root_service,
        "services": s.services,
        "span_count": s.span_count,
        "start_unix_nano": unix_nanos(s.start),
        "duration_ms": millis(s.duration),
        "error": s.error,
        "clean": s.clean,
        "repaired": s.repaired,
        "inferred_parent": s.inferred_parent,
    })
}

fn span_json(s: &StoredSpan) -> Value {
    let span = &s.span;
    let object = |attributes: &[Attribute]| -> Map<String, Value> {
        attributes
            .iter()
            .map(|a| (a.key.to_string(), a.value.to_json()))
            .collect()
    };
    json!({
        "span_id": to_hex(&span.span_id),
        "parent_span_id": span.parent_span_id.map(|p| to_hex(&p)),
        "service": &*s.service,
        "name": span.name,
        "kind": span.kind.as_str(),
        "start_unix_nano": unix_nanos(span.start),
        "end_unix_nano": unix_nanos(span.end),
        "duration_ms": millis(span.duration()),
        "status": span.status.as_str(),
        "status_description": match &span.status {
            SpanStatus::Error { description } => Some(description.as_ref()),
            _ => None,
        },
        "attributes": object(&span.attributes),
        "resource": object(s.resource.attributes()),
    })
}

fn detail_json(d: &TraceDetail) -> Value {
    json!({
        "trace_id": to_hex(&d.trace_id),
        "verdict": d.verdict,
        "spans": d.spans.iter().map(span_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parses_filters_and_rejects_nonsense() {
        let q = parse_query(
            "service=order%20svc&status=error&min_duration_ms=2.5&limit=5000",
            false,
        )
        .expect("valid query");
        assert_eq!(q.service.as_deref(), Some("order svc"));
        assert_eq!(q.error, Some(true));
        assert_eq!(q.min_duration, Some(Duration::from_micros(2500)));
        assert_eq!(q.limit, MAX_LIMIT);
        assert!(parse_query("status=maybe", false).is_err());
        assert!(parse_query("min_duration_ms=-1", false).is_err());
        assert!(parse_query("min_duration_ms=1e300", false).is_err());
        assert!(parse_query("min_duration_ms=NaN", false).is_err());
        assert!(parse_query("service=%zz", false).is_err());
        let checks = parse_query("broken=on&repaired=1&inferred=true", true).expect("flags");
        assert!(checks.broken && checks.repaired && checks.inferred_parent);
        assert!(!parse_query("broken=", true).expect("unchecked").broken);
        assert!(parse_query("broken=maybe", true).is_err());
        assert_eq!(
            parse_query("", true).expect("empty").limit,
            DEFAULT_LIMIT_HTML
        );
    }
}
