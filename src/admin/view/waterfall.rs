//! The waterfall: one row per span in tree order — kind, service, operation, status,
//! propagation badges, a bar on the trace's timeline, the duration — each a `<details>` that
//! opens on the span's detail: identity and parent link, timing, every attribute and the
//! producer's resource attributes.

use std::fmt::Write;

use super::facts::{display, kind_chip};
use super::index::TraceIndex;
use super::{Clip, Esc, MAX_VALUE_CHARS, millis, utc};
use crate::telemetry::span::{Attribute, SpanId, SpanKind, SpanStatus, to_hex};

/// Draws the rows `order` lists (positions with depths), with the span `open` expanded.
pub(super) fn rows(
    html: &mut String,
    index: &TraceIndex<'_>,
    order: &[(usize, usize)],
    open: Option<SpanId>,
) {
    html.push_str(
        "<div class=\"wf-head\"><span>operation</span><span>status</span><span>propagation</span>\
         <span>timeline</span><span>duration</span></div>",
    );
    let trace_hex = to_hex(&index.detail.trace_id);
    for &(i, depth) in order {
        row(html, index, &trace_hex, i, depth, open);
    }
}

fn row(
    html: &mut String,
    index: &TraceIndex<'_>,
    trace_hex: &str,
    i: usize,
    depth: usize,
    open: Option<SpanId>,
) {
    let stored = &index.spans()[i];
    let s = &stored.span;
    let facts = &index.facts[i];
    let notes = index.notes_of(i);
    let id = to_hex(&s.span_id);
    let offset = s.start.duration_since(index.start).unwrap_or_default();
    let total = index.length.as_secs_f64();
    let left = offset.as_secs_f64() / total * 100.0;
    let width = (s.duration().as_secs_f64() / total * 100.0).clamp(0.2, 100.0);
    let mut classes = format!("row {}", s.kind.as_str());
    if facts.error {
        classes.push_str(" error");
    }
    if notes.iter().any(|n| n.defect) {
        classes.push_str(" flagged");
    }
    let title = if notes.is_empty() {
        s.status.as_str().to_owned()
    } else {
        notes
            .iter()
            .map(|n| n.text.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let _ = write!(
        html,
        "<details class=\"{classes}\" id=\"span-{id}\" data-span-id=\"{id}\"{}>\
         <summary title=\"{}\"><span class=\"op\" style=\"padding-left:{}em\">{}<span class=\"svc\">{}</span> {}</span>\
         <span class=\"st\">{}</span><span class=\"badges\">",
        if open == Some(s.span_id) { " open" } else { "" },
        Clip(&title, 300),
        depth.min(20),
        kind_chip(s.kind),
        Clip(&stored.service, 60),
        facts.operation_html(),
        Clip(&facts.status, 40),
    );
    facts.badges(html);
    for n in notes.iter().filter(|n| n.defect) {
        let _ = write!(html, "<span class=\"b defect\">{}</span>", n.label);
    }
    let _ = write!(
        html,
        "</span><span class=\"lane\"><span class=\"bar\" style=\"left:{left:.3}%;width:{width:.3}%\"></span></span>\
         <span class=\"dur\">{}</span></summary>",
        millis(s.duration())
    );
    detail(html, index, trace_hex, i);
    html.push_str("</details>");
}

/// The expanded part of a row.
fn detail(html: &mut String, index: &TraceIndex<'_>, trace_hex: &str, i: usize) {
    let stored = &index.spans()[i];
    let s = &stored.span;
    let id = to_hex(&s.span_id);
    let _ = write!(
        html,
        "<div class=\"detail\"><table class=\"kv span\"><caption>Span</caption><tbody>\
         <tr><th>name</th><td>{}</td></tr>\
         <tr><th>span id</th><td><code>{id}</code> · <a href=\"/traces/{trace_hex}?span={id}#span-{id}\">link to this span</a></td></tr>\
         <tr><th>parent</th><td>",
        Clip(&s.name, MAX_VALUE_CHARS)
    );
    match (s.parent_span_id, index.parent_of(i)) {
        (None, _) => html.push_str("none: the span is a root"),
        (Some(p), Some(at)) => {
            let p = to_hex(&p);
            let _ = write!(
                html,
                "<a href=\"#span-{p}\"><code>{p}</code></a> {} ({})",
                index.facts[at].operation_html(),
                Clip(&index.spans()[at].service, 60)
            );
        }
        (Some(p), None) => {
            let _ = write!(
                html,
                "<code>{}</code> — never arrived (missing parent)",
                to_hex(&p)
            );
        }
    }
    let kind = match s.kind {
        SpanKind::Server => "server — inbound hop: the callee's side",
        SpanKind::Client => "client — outbound hop: the caller's side",
        other => other.as_str(),
    };
    let status = match &s.status {
        SpanStatus::Error { description } if !description.is_empty() => {
            format!("error: {}", Clip(description, MAX_VALUE_CHARS))
        }
        other => other.as_str().to_owned(),
    };
    let offset = s.start.duration_since(index.start).unwrap_or_default();
    let _ = write!(
        html,
        "</td></tr><tr><th>kind</th><td>{kind}</td></tr><tr><th>status</th><td>{status}</td></tr>\
         <tr><th>start</th><td>{} (+{} into the trace)</td></tr><tr><th>end</th><td>{}</td></tr>\
         <tr><th>duration</th><td>{}</td></tr>",
        utc(s.start),
        millis(offset),
        utc(s.end),
        millis(s.duration()),
    );
    for n in index.notes_of(i) {
        let _ = write!(
            html,
            "<tr><th>{}</th><td>{}</td></tr>",
            n.label,
            Esc(&n.text)
        );
    }
    html.push_str("</tbody></table>");

    let mut attributes: Vec<&Attribute> = s.attributes.iter().collect();
    attributes.sort_by(|a, b| a.key.cmp(&b.key));
    let _ = write!(
        html,
        "<table class=\"kv attrs\"><caption>Attributes ({})</caption><tbody>",
        attributes.len()
    );
    kv_rows(html, attributes);
    let resource = stored.resource.attributes();
    let _ = write!(
        html,
        "</tbody></table><table class=\"kv resource\"><caption>Resource</caption><tbody>\
         <tr><th>service.name</th><td>{}</td></tr>",
        Clip(&stored.service, MAX_VALUE_CHARS)
    );
    kv_rows(html, resource.iter());
    html.push_str("</tbody></table></div>");
}

fn kv_rows<'a>(html: &mut String, attributes: impl IntoIterator<Item = &'a Attribute>) {
    for a in attributes {
        let _ = write!(
            html,
            "<tr><th>{}</th><td>{}</td></tr>",
            Clip(&a.key, 200),
            Clip(&display(&a.value), MAX_VALUE_CHARS)
        );
    }
}
