//! `/traces` (recent traces, filtered) and `/traces/{id}` (one trace) as pages: per trace a
//! heading with its verdict, the findings, the seam table and the waterfall.
//!
//! Server-side limits keep a page small however full the ring is: the list draws at most
//! [`MAX_ROWS_PER_TRACE`] rows of a trace and [`MAX_ROWS_PER_PAGE`] in all (later traces keep
//! their heading, findings and seams), one trace's page at most [`MAX_ROWS_ONE_TRACE`].

use std::fmt::Write;

use super::index::{TraceIndex, describe};
use super::{Clip, Esc, close_page, millis, open_page, seams, utc, waterfall};
use crate::telemetry::ring::{TraceDetail, TraceQuery};
use crate::telemetry::span::{SpanId, to_hex};

/// Most waterfall rows of one trace on the list page.
pub(crate) const MAX_ROWS_PER_TRACE: usize = 300;
/// Most waterfall rows on the list page.
pub(crate) const MAX_ROWS_PER_PAGE: usize = 2000;
/// Most waterfall rows on one trace's page.
pub(crate) const MAX_ROWS_ONE_TRACE: usize = 2000;

/// How full the ring is, for the list's summary line.
#[derive(Debug, Clone, Copy)]
pub(in crate::admin) struct RingFill {
    /// Spans held.
    pub(in crate::admin) spans: usize,
    /// Spans it may hold.
    pub(in crate::admin) capacity: usize,
}

/// The list page: filters, legend and the traces that matched.
pub(in crate::admin) fn list_page(
    traces: &[TraceDetail],
    query: &TraceQuery,
    fill: RingFill,
) -> String {
    let mut html = String::with_capacity(16 * 1024 + traces.len() * 8 * 1024);
    open_page(&mut html, "stitch — recent traces");
    let _ = write!(
        html,
        "<p class=\"summary\">{} spans in the ring (it keeps {}); the {} most recently updated \
         traces that match the filters below.</p>",
        fill.spans,
        fill.capacity,
        traces.len()
    );
    filter_form(&mut html, query);
    legend(&mut html);
    if traces.is_empty() {
        html.push_str(if fill.spans == 0 {
            "<p>No traces in the ring yet.</p>"
        } else {
            "<p>No trace matches these filters.</p>"
        });
    }
    let mut budget = MAX_ROWS_PER_PAGE;
    for t in traces {
        let drawn = section(&mut html, t, budget.min(MAX_ROWS_PER_TRACE), None);
        budget -= drawn;
    }
    close_page(&mut html);
    html
}

/// One trace's page, with the span `open` (if any) expanded.
pub(in crate::admin) fn trace_page(trace: &TraceDetail, open: Option<SpanId>) -> String {
    let mut html = String::with_capacity(16 * 1024 + trace.spans.len() * 3 * 1024);
    open_page(
        &mut html,
        &format!("stitch — trace {}", to_hex(&trace.trace_id)),
    );
    legend(&mut html);
    section(&mut html, trace, MAX_ROWS_ONE_TRACE, open);
    close_page(&mut html);
    html
}

fn filter_form(html: &mut String, q: &TraceQuery) {
    let selected = |v: Option<bool>| if q.error == v { " selected" } else { "" };
    let checked = |on: bool| if on { " checked" } else { "" };
    let min_ms = q
        .min_duration
        .map(|d| format!("{}", d.as_secs_f64() * 1000.0))
        .unwrap_or_default();
    let _ = write!(
        html,
        "<form method=\"get\" action=\"/traces\" class=\"filters\">\
         <label>service <input name=\"service\" value=\"{}\" size=\"12\"></label>\
         <label>status <select name=\"status\"><option value=\"any\"{}>any</option>\
         <option value=\"error\"{}>error</option><option value=\"ok\"{}>ok</option></select></label>\
         <label><input type=\"checkbox\" name=\"broken\"{}> broken verdict</label>\
         <label><input type=\"checkbox\" name=\"repaired\"{}> with repairs</label>\
         <label><input type=\"checkbox\" name=\"inferred\"{}> with inferred parents</label>\
         <label>min ms <input name=\"min_duration_ms\" size=\"6\" value=\"{}\"></label>\
         <label>limit <input name=\"limit\" size=\"4\" value=\"{}\"></label>\
         <button type=\"submit\">filter</button></form>",
        Esc(q.service.as_deref().unwrap_or("")),
        selected(None),
        selected(Some(true)),
        selected(Some(false)),
        checked(q.broken),
        checked(q.repaired),
        checked(q.inferred_parent),
        Esc(&min_ms),
        q.limit
    );
}

fn legend(html: &mut String) {
    html.push_str(
        "<details class=\"legend\" id=\"legend\" open><summary>How to read this page</summary><dl>\
         <dt><span class=\"kind k-server\">server</span> blue bar</dt><dd>an inbound hop: the callee's stitch read the caller's headers</dd>\
         <dt><span class=\"kind k-client\">client</span> green bar</dt><dd>an outbound hop: the caller's stitch read what its app sent</dd>\
         <dt><span class=\"st\" style=\"color:#c62828;font-weight:bold\">502</span> red bar</dt><dd>the span failed (5xx to a caller, 4xx/5xx from a callee, a non-OK gRPC status, an unreachable upstream). Red means only this</dd>\
         <dt><span class=\"b dialect\">b3 → w3c,b3</span></dt><dd>the dialect stitch read the context from → the dialects it wrote (<em>none</em>: no context arrived)</dd>\
         <dt><span class=\"b repaired\">repaired</span></dt><dd>a malformed header was safely repaired (lenient mode; hover for what)</dd>\
         <dt><span class=\"b restored\">tracestate restored</span></dt><dd>the app dropped <code>tracestate</code>; stitch put back the one its inbound request carried</dd>\
         <dt><span class=\"b conflict\">conflict w3c&gt;b3</span></dt><dd>two dialects carried different trace ids; the first in <code>extract</code> order won</dd>\
         <dt><span class=\"b inferred\">inferred parent</span></dt><dd>the app sent no context; stitch linked the call to the only request in flight — a marked guess, not an error</dd>\
         <dt><span class=\"b defect\">missing parent</span> <span class=\"b defect\">extra root</span> <span class=\"b defect\">clock skew</span></dt>\
         <dd>where the chain broke: a parent missing from the trace, a second root (the context was lost and restarted), a child starting before its parent beyond the tolerance. Such rows have an orange edge, such hops an orange background</dd>\
         <dt><span class=\"clean verdict\">clean</span> <span class=\"broken verdict\">broken</span></dt><dd>the integrity verdict of the whole trace</dd>\
         <dt>a row</dt><dd>click it for the span's attributes, resource, timing and parent link</dd>\
         </dl></details>",
    );
}

/// Draws one trace with at most `max_rows` waterfall rows (plus the open span); returns
/// how many rows it drew.
fn section(html: &mut String, trace: &TraceDetail, max_rows: usize, open: Option<SpanId>) -> usize {
    let index = TraceIndex::new(trace);
    let trace_hex = to_hex(&trace.trace_id);
    let (verdict_class, verdict_text) = if trace.verdict.clean {
        ("clean", "clean")
    } else {
        ("broken", "broken")
    };
    let root = (0..trace.spans.len())
        .find(|&i| trace.spans[i].span.parent_span_id.is_none())
        .or((!trace.spans.is_empty()).then_some(0));
    let mut services: Vec<&str> = trace.spans.iter().map(|s| &*s.service).collect();
    services.sort_unstable();
    services.dedup();
    let _ = write!(
        html,
        "<section class=\"trace\" id=\"trace-{trace_hex}\"><h2><a href=\"/traces/{trace_hex}\">{trace_hex}</a> \
         <span class=\"meta\">{} · {} · {} spans · {} · {}</span> <span class=\"verdict {verdict_class}\">{verdict_text}</span></h2>",
        root.map_or_else(String::new, |r| index.facts[r].operation_html().to_string()),
        Clip(&services.join(", "), 200),
        trace.spans.len(),
        millis(index.length),
        utc(index.start),
    );
    if !trace.verdict.findings.is_empty() {
        html.push_str("<ul class=\"findings\">");
        for f in trace.verdict.findings.iter().take(50) {
            let class = if f.is_defect() { "defect" } else { "info" };
            let _ = write!(
                html,
                "<li class=\"{class}\">{}</li>",
                Clip(&describe(f), 300)
            );
        }
        if trace.verdict.findings.len() > 50 {
            let _ = write!(
                html,
                "<li>… {} more</li>",
                trace.verdict.findings.len() - 50
            );
        }
        html.push_str("</ul>");
    }
    seams::table(html, &index);
    let order = index.tree_order();
    let mut shown: Vec<(usize, usize)> = order.iter().copied().take(max_rows).collect();
    if let Some(open) = open
        && !shown
            .iter()
            .any(|&(i, _)| trace.spans[i].span.span_id == open)
        && let Some(&at) = order
            .iter()
            .find(|&&(i, _)| trace.spans[i].span.span_id == open)
    {
        shown.push(at);
    }
    waterfall::rows(html, &index, &shown, open);
    if shown.len() < order.len() {
        let _ = write!(
            html,
            "<p class=\"more\">{} more spans not drawn here: <a href=\"/traces/{trace_hex}\">the trace's own page</a> \
             draws up to {MAX_ROWS_ONE_TRACE}, and its JSON (<code>curl /traces/{trace_hex}</code>) has all.</p>",
            order.len() - shown.len()
        );
    }
    html.push_str("</section>");
    shown.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::integrity;
    use crate::telemetry::ring::StoredSpan;
    use crate::telemetry::span::{SpanKind, SpanRecord};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    fn trace(n: u8, hostile: &'static str) -> TraceDetail {
        let svc: Arc<str> = Arc::from("<svc>");
        let at = |ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        let mk = |id: u8, parent: Option<u8>, name: &'static str, ms| StoredSpan {
            service: svc.clone(),
            resource: Arc::default(),
            span: SpanRecord::new(
                [n; 16],
                [id; 8],
                parent.map(|p| [p; 8]),
                SpanKind::Server,
                name,
                at(ms),
            )
            .into(),
        };
        let spans = vec![
            mk(1, None, "root", 0),
            mk(2, Some(1), hostile, 1),
            mk(3, Some(2), "leaf", 2),
        ];
        TraceDetail {
            trace_id: [n; 16],
            verdict: integrity::check(spans.iter().map(|s| &*s.span), Duration::ZERO),
            spans,
        }
    }

    #[test]
    fn escapes_span_data_and_orders_rows_as_a_tree() {
        let html = trace_page(&trace(1, "<script>alert(1)</script>"), Some([2; 8]));
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&lt;svc&gt;"));
        let at = |id: &str| html.find(&format!("data-span-id=\"{id}\"")).expect("row");
        assert!(at("0101010101010101") < at("0202020202020202"));
        assert!(at("0202020202020202") < at("0303030303030303"));
        assert!(
            html.contains("data-span-id=\"0202020202020202\" open>"),
            "the asked-for span is open"
        );
        assert_eq!(
            html.matches(" open>").count(),
            2,
            "that span and the legend only"
        );
    }

    #[test]
    fn list_page_stays_within_its_row_budget() {
        // A wide trace: a root and 399 children.
        let root = trace(9, "x").spans[0].clone();
        let mut wide = vec![root.clone()];
        for n in 0..399u16 {
            let mut child = SpanRecord::clone(&root.span);
            child.span_id = [0, 0, 0, 0, 0, 0, (n >> 8) as u8 + 1, n as u8];
            child.parent_span_id = Some(root.span.span_id);
            wide.push(StoredSpan {
                span: Arc::new(child),
                ..root.clone()
            });
        }
        let wide = TraceDetail {
            trace_id: [9; 16],
            verdict: integrity::check(wide.iter().map(|s| &*s.span), Duration::ZERO),
            spans: wide,
        };
        let mut traces: Vec<TraceDetail> = vec![wide.clone()];
        traces.extend((0..20).map(|n| trace(n, "x")));
        let fill = RingFill {
            spans: 460,
            capacity: 4096,
        };
        let html = list_page(&traces, &TraceQuery::default(), fill);
        assert_eq!(
            html.matches("data-span-id=").count(),
            MAX_ROWS_PER_TRACE + 60
        );
        assert!(html.contains("100 more spans not drawn here"));
        assert_eq!(html.matches("<section class=\"trace\"").count(), 21);
        let one = trace_page(&wide, None);
        assert_eq!(
            one.matches("data-span-id=").count(),
            400,
            "its own page draws it all"
        );
    }
}
