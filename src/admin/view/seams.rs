//! The seam table: where a trace's context crossed from one service to the next, in order,
//! with what each stitch read and wrote there — the view no trace UI has.
//!
//! A hop is a callee's server (or consumer) span with its caller, the parent span — usually
//! the caller's client span; a client span no traced callee answered; or a span that starts
//! the trace or lost its parent. The caller's stitch saw what the app sent and wrote the
//! wire; the callee's stitch read the wire and wrote what its app understands. Hops with a
//! defect of the verdict (missing parent, several roots, clock skew) are highlighted.

use std::fmt::Write;

use super::index::TraceIndex;
use super::{Clip, Esc};
use crate::telemetry::span::{SpanKind, to_hex};

/// Most hops listed per trace (a trace with more is summarised below the table).
pub(super) const MAX_HOPS: usize = 200;

/// One hop: positions in the trace's spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hop {
    caller: Option<usize>,
    callee: Option<usize>,
}

/// The hops of a trace in the order they started.
fn hops(index: &TraceIndex<'_>) -> Vec<Hop> {
    let spans = index.spans();
    let mut hops = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        let parent = index.parent_of(i);
        match s.span.kind {
            SpanKind::Server | SpanKind::Consumer => hops.push(Hop {
                caller: parent,
                callee: Some(i),
            }),
            SpanKind::Client | SpanKind::Producer => {
                let answered = index.children.get(&s.span.span_id).is_some_and(|kids| {
                    kids.iter().any(|&k| {
                        matches!(spans[k].span.kind, SpanKind::Server | SpanKind::Consumer)
                    })
                });
                if !answered {
                    hops.push(Hop {
                        caller: Some(i),
                        callee: None,
                    });
                }
            }
            // In-process work is a hop only where it starts the trace or lost its parent.
            SpanKind::Internal if parent.is_none() => hops.push(Hop {
                caller: None,
                callee: Some(i),
            }),
            SpanKind::Internal => {}
        }
    }
    // Spans are ordered by start, so a hop's first span orders the hops.
    hops.sort_by_key(|h| h.caller.or(h.callee));
    hops
}

/// Draws the seam table of one trace.
pub(super) fn table(html: &mut String, index: &TraceIndex<'_>) {
    let trace_hex = to_hex(&index.detail.trace_id);
    let hops = hops(index);
    let _ = write!(
        html,
        "<table class=\"seams\" id=\"seams-{trace_hex}\"><caption>Seams: where the context crossed \
         a service boundary ({} hops)</caption><thead><tr><th>#</th><th>hop</th><th>operation</th>\
         <th>caller's stitch: app sent → wrote</th><th>callee's stitch: received → wrote to app</th>\
         <th>repairs · restores · conflicts</th><th>parent link</th></tr></thead><tbody>",
        hops.len()
    );
    for (n, hop) in hops.iter().take(MAX_HOPS).enumerate() {
        row(html, index, n + 1, *hop);
    }
    html.push_str("</tbody></table>");
    if hops.len() > MAX_HOPS {
        let _ = write!(
            html,
            "<p class=\"more\">{} more hops not listed (the JSON at /traces/{trace_hex} has every span).</p>",
            hops.len() - MAX_HOPS
        );
    }
}

fn row(html: &mut String, index: &TraceIndex<'_>, n: usize, hop: Hop) {
    let spans = index.spans();
    let service = |i: Option<usize>| i.map(|i| &*spans[i].service);
    let callee_name = match (hop.callee, hop.caller) {
        (Some(i), _) => Esc(&spans[i].service).to_string(),
        (None, Some(c)) => {
            let peer = index.facts[c].peer.as_deref().unwrap_or("unknown peer");
            format!(
                "{} <span class=\"meta\">(not traced)</span>",
                Clip(peer, 80)
            )
        }
        (None, None) => String::new(),
    };
    let caller_name = match (hop.caller, hop.callee) {
        (Some(_), _) => Esc(service(hop.caller).unwrap_or("")).to_string(),
        (None, Some(i)) if spans[i].span.parent_span_id.is_some() => "?".to_owned(),
        (None, _) => "—".to_owned(),
    };
    let shown = hop.callee.or(hop.caller).unwrap_or(0);
    let side = |i: Option<usize>| {
        i.and_then(|i| index.facts[i].dialects())
            .map_or_else(|| "—".to_owned(), |d| Clip(&d, 80).to_string())
    };
    // The caller's stitch is the one that produced the caller span, when that is a client.
    let caller_client = hop
        .caller
        .filter(|&i| matches!(spans[i].span.kind, SpanKind::Client | SpanKind::Producer));
    let mut fixes = Vec::new();
    for i in [caller_client, hop.callee].into_iter().flatten() {
        index.facts[i].fixes(&mut fixes);
    }
    let (class, link) = link(index, hop);
    let _ = write!(
        html,
        "<tr class=\"hop {class}\"><td>{n}</td><td><span class=\"svc\">{caller_name}</span> → \
         <span class=\"svc\">{callee_name}</span></td><td><a href=\"#span-{}\">{}</a></td>\
         <td class=\"side\">{}</td><td class=\"side\">{}</td><td>{}</td><td class=\"link\">{}</td></tr>",
        to_hex(&spans[shown].span.span_id),
        index.facts[shown].operation_html(),
        side(caller_client),
        side(hop.callee),
        if fixes.is_empty() {
            "—".to_owned()
        } else {
            Clip(&fixes.join("; "), 300).to_string()
        },
        Esc(&link),
    );
}

/// The row's class and what its parent link is: broken (a defect on either span), inferred,
/// a root, an untraced callee, or linked.
fn link(index: &TraceIndex<'_>, hop: Hop) -> (&'static str, String) {
    let spans = index.spans();
    let notes: Vec<_> = [hop.caller, hop.callee]
        .into_iter()
        .flatten()
        .flat_map(|i| index.notes_of(i).iter().filter(|n| n.defect))
        .collect();
    if !notes.is_empty() {
        let text: Vec<String> = notes
            .iter()
            .map(|n| format!("{}: {}", n.label, n.text))
            .collect();
        return ("broken", text.join("; "));
    }
    if [hop.caller, hop.callee]
        .into_iter()
        .flatten()
        .any(|i| index.facts[i].inferred)
    {
        return (
            "inferred",
            "inferred parent: the app sent no context, stitch linked the only request in flight"
                .to_owned(),
        );
    }
    match (hop.caller, hop.callee) {
        (None, Some(_)) => ("ok", "root: the trace starts here".to_owned()),
        (Some(c), None) if spans[c].span.parent_span_id.is_none() => (
            "ok",
            "root: the trace starts here; the callee sent no span".to_owned(),
        ),
        (Some(_), None) => ("ok", "linked; the callee sent no span".to_owned()),
        (Some(c), Some(_)) if spans[c].span.parent_span_id.is_none() => {
            ("ok", "linked; the caller starts the trace".to_owned())
        }
        _ => ("ok", "linked".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::integrity;
    use crate::telemetry::ring::{StoredSpan, TraceDetail};
    use crate::telemetry::span::SpanRecord;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    fn span(id: u8, parent: Option<u8>, kind: SpanKind, service: &str, ms: u64) -> StoredSpan {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        let mut s = SpanRecord::new([1; 16], [id; 8], parent.map(|p| [p; 8]), kind, "GET", at);
        s.end = at + Duration::from_millis(10);
        StoredSpan {
            service: Arc::from(service),
            resource: Arc::default(),
            span: Arc::new(s),
        }
    }

    fn detail(spans: Vec<StoredSpan>) -> TraceDetail {
        let mut spans = spans;
        spans.sort_by_key(|s| s.span.start);
        TraceDetail {
            trace_id: [1; 16],
            verdict: integrity::check(spans.iter().map(|s| &*s.span), Duration::ZERO),
            spans,
        }
    }

    #[test]
    fn hops_pair_client_and_server_spans_in_start_order() {
        use SpanKind::{Client, Internal, Server};
        let d = detail(vec![
            span(1, None, Server, "gateway", 0),
            span(2, Some(1), Client, "gateway", 1),
            span(3, Some(2), Server, "order", 2),
            span(4, Some(3), Internal, "order", 3),
            span(5, Some(3), Client, "order", 4), // nobody answered
            span(6, Some(9), Server, "payment", 5), // its caller never arrived
        ]);
        let index = TraceIndex::new(&d);
        let got: Vec<(Option<u8>, Option<u8>)> = hops(&index)
            .iter()
            .map(|h| {
                let id = |i: Option<usize>| i.map(|i| d.spans[i].span.span_id[0]);
                (id(h.caller), id(h.callee))
            })
            .collect();
        assert_eq!(
            got,
            [
                (None, Some(1)),
                (Some(2), Some(3)),
                (Some(5), None),
                (None, Some(6))
            ]
        );
        let mut html = String::new();
        table(&mut html, &index);
        assert!(html.contains("<tr class=\"hop broken\">"), "{html}");
        assert!(html.contains("missing parent: parent 0909090909090909 never arrived"));
        assert!(html.contains("gateway</span> → <span class=\"svc\">order"));
        assert!(html.contains("unknown peer <span class=\"meta\">(not traced)</span>"));
    }
}
