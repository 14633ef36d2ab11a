//! The human trace view: server-rendered HTML, one waterfall per trace, inline CSS, no
//! scripts and no external assets (it must work air-gapped and from a `kubectl
//! port-forward`). Every value from a span is escaped.

use std::collections::HashMap;
use std::fmt::Write;
use std::time::SystemTime;

use crate::telemetry::integrity::Finding;
use crate::telemetry::ring::{StoredSpan, TraceDetail, TraceQuery};
use crate::telemetry::span::{SpanId, to_hex};

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.3em}section{margin:1.5em 0;border:1px solid #ddd;border-radius:6px;padding:.8em}\
h2{font-size:1.05em;margin:.2em 0 .6em}.meta{color:#666;font-weight:normal}\
.verdict{display:inline-block;padding:.1em .5em;border-radius:4px;font-size:.85em}\
.clean{background:#e3f6e3;color:#1b5e20}.broken{background:#fde2e1;color:#b71c1c}\
.findings{margin:.3em 0 .8em;color:#b71c1c}.findings li.info{color:#8a6d00}\
.filters{margin:.5em 0 1em}.filters label{margin-right:.6em}.row{display:flex;align-items:center;height:22px}.label{width:38%;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}\
.lane{position:relative;flex:1;height:14px;background:#f4f4f4}\
.bar{position:absolute;height:14px;border-radius:2px;background:#4a78c2;min-width:2px}\
.row.client .bar{background:#7aa35a}.row.error .bar{background:#d9534f}\
.row.flagged .label{color:#b71c1c;font-weight:bold}.svc{color:#666}.dur{color:#666;font-size:.85em;margin-left:.4em}";

/// Escapes text for HTML element content and quoted attribute values.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A full page with one waterfall per trace; `filters` adds the list's filter form (a plain
/// GET form: no script needed).
pub(super) fn page(title: &str, traces: &[TraceDetail], filters: Option<&TraceQuery>) -> String {
    let mut html = String::with_capacity(4096 + traces.len() * 2048);
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <link rel=\"icon\" href=\"data:,\"><title>{}</title><style>{STYLE}</style></head><body><h1>{}</h1>",
        escape(title),
        escape(title)
    );
    if let Some(q) = filters {
        filter_form(&mut html, q);
    }
    if traces.is_empty() {
        html.push_str("<p>No traces in the ring yet.</p>");
    }
    for t in traces {
        trace_section(&mut html, t);
    }
    html.push_str("</body></html>");
    html
}

fn filter_form(html: &mut String, q: &TraceQuery) {
    let status = |v: Option<bool>| match (q.error, v) {
        (a, b) if a == b => " selected",
        _ => "",
    };
    let min_ms = q
        .min_duration
        .map(|d| format!("{}", d.as_secs_f64() * 1000.0))
        .unwrap_or_default();
    let _ = write!(
        html,
        "<form method=\"get\" action=\"/traces\" class=\"filters\">\
         <label>service <input name=\"service\" value=\"{}\"></label> \
         <label>status <select name=\"status\"><option value=\"any\"{}>any</option>\
         <option value=\"error\"{}>error</option><option value=\"ok\"{}>ok</option></select></label> \
         <label>min ms <input name=\"min_duration_ms\" size=\"6\" value=\"{}\"></label> \
         <label>limit <input name=\"limit\" size=\"4\" value=\"{}\"></label> \
         <button type=\"submit\">filter</button></form>",
        escape(q.service.as_deref().unwrap_or("")),
        status(None),
        status(Some(true)),
        status(Some(false)),
        escape(&min_ms),
        q.limit
    );
}

fn trace_section(html: &mut String, t: &TraceDetail) {
    let trace_hex = to_hex(&t.trace_id);
    let start = t
        .spans
        .iter()
        .map(|s| s.span.start)
        .min()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let end = t.spans.iter().map(|s| s.span.end).max().unwrap_or(start);
    let total = end
        .duration_since(start)
        .unwrap_or_default()
        .as_secs_f64()
        .max(1e-9);
    let (verdict_class, verdict_text) = if t.verdict.clean {
        ("clean", "clean")
    } else {
        ("broken", "broken")
    };
    let _ = write!(
        html,
        "<section class=\"trace\" id=\"trace-{trace_hex}\"><h2><a href=\"/traces/{trace_hex}\">{trace_hex}</a> \
         <span class=\"meta\">{} spans · {:.3} ms</span> <span class=\"verdict {verdict_class}\">{verdict_text}</span></h2>",
        t.spans.len(),
        total * 1000.0
    );
    let mut flagged: HashMap<String, Vec<String>> = HashMap::new();
    if !t.verdict.findings.is_empty() {
        html.push_str("<ul class=\"findings\">");
        for f in &t.verdict.findings {
            let text = describe(f);
            if let Some(id) = f.span_id() {
                flagged.entry(id.to_owned()).or_default().push(text.clone());
            }
            let class = if f.is_defect() { "defect" } else { "info" };
            let _ = write!(html, "<li class=\"{class}\">{}</li>", escape(&text));
        }
        html.push_str("</ul>");
    }
    for (span, depth) in tree_order(&t.spans) {
        let s = &span.span;
        let id = to_hex(&s.span_id);
        let left = s
            .start
            .duration_since(start)
            .unwrap_or_default()
            .as_secs_f64()
            / total
            * 100.0;
        let width = (s.duration().as_secs_f64() / total * 100.0).max(0.2);
        let mut classes = vec!["row", s.kind.as_str()];
        if s.status.is_error() {
            classes.push("error");
        }
        let notes = flagged.get(&id);
        if notes.is_some() {
            classes.push("flagged");
        }
        let title = notes
            .map(|n| n.join("; "))
            .unwrap_or_else(|| s.status.as_str().to_owned());
        let _ = write!(
            html,
            "<div class=\"{}\" id=\"span-{id}\" data-span-id=\"{id}\" title=\"{}\">\
             <div class=\"label\" style=\"padding-left:{}em\"><span class=\"svc\">{}</span> {}<span class=\"dur\">{:.3} ms</span></div>\
             <div class=\"lane\"><div class=\"bar\" style=\"left:{left:.3}%;width:{width:.3}%\"></div></div></div>",
            classes.join(" "),
            escape(&title),
            depth.min(20),
            escape(&span.service),
            escape(&s.name),
            s.duration().as_secs_f64() * 1000.0
        );
    }
    html.push_str("</section>");
}

fn describe(f: &Finding) -> String {
    match f {
        Finding::MissingParent {
            span_id,
            parent_span_id,
        } => format!("span {span_id}: parent {parent_span_id} never arrived"),
        Finding::MultipleRoots { root_span_ids } => {
            format!(
                "{} roots: {}",
                root_span_ids.len(),
                root_span_ids.join(", ")
            )
        }
        Finding::ChildBeforeParent {
            span_id,
            parent_span_id,
            skew_us,
        } => format!("span {span_id} starts {skew_us} µs before its parent {parent_span_id}"),
        Finding::InferredParent { span_id } => format!("span {span_id}: parent inferred"),
    }
}

/// Spans in depth-first order from the roots (and from spans whose parent is missing),
/// each with its depth; children by start time.
fn tree_order(spans: &[StoredSpan]) -> Vec<(&StoredSpan, usize)> {
    let ids: std::collections::HashSet<SpanId> = spans.iter().map(|s| s.span.span_id).collect();
    let mut children: HashMap<SpanId, Vec<&StoredSpan>> = HashMap::new();
    let mut tops = Vec::new();
    for s in spans {
        match s.span.parent_span_id {
            Some(p) if ids.contains(&p) && p != s.span.span_id => {
                children.entry(p).or_default().push(s)
            }
            _ => tops.push(s),
        }
    }
    let mut out = Vec::with_capacity(spans.len());
    let mut stack: Vec<(&StoredSpan, usize)> = tops.into_iter().rev().map(|s| (s, 0)).collect();
    let mut seen = std::collections::HashSet::new();
    while let Some((s, depth)) = stack.pop() {
        if !seen.insert(s.span.span_id) {
            continue; // a parent cycle in received data must not loop forever
        }
        out.push((s, depth));
        if let Some(kids) = children.get(&s.span.span_id) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    // Spans only reachable through a cycle are still shown.
    for s in spans {
        if !seen.contains(&s.span.span_id) {
            out.push((s, 0));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::integrity;
    use crate::telemetry::span::{SpanKind, SpanRecord};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn escapes_and_orders_spans_as_a_tree() {
        let svc: Arc<str> = Arc::from("<svc>");
        let at = |ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        let mk = |id: u8, parent: Option<u8>, name: &'static str, ms| StoredSpan {
            service: svc.clone(),
            span: SpanRecord::new(
                [1; 16],
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
            mk(3, Some(2), "grandchild", 2),
            mk(2, Some(1), "<script>", 1),
        ];
        let order: Vec<u8> = tree_order(&spans)
            .iter()
            .map(|(s, _)| s.span.span_id[0])
            .collect();
        assert_eq!(order, vec![1, 2, 3]);
        let detail = TraceDetail {
            trace_id: [1; 16],
            verdict: integrity::check(spans.iter().map(|s| &*s.span), Duration::ZERO),
            spans,
        };
        let html = page("t", &[detail], None);
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("&lt;svc&gt;"));
    }
}
