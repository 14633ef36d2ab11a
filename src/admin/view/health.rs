//! `/health`: this stitch's propagation counters as tables — requests with and without
//! context per direction, then each `stitch_propagation_*` counter by its labels — since
//! start, over the last minute and the last five, with a bar per sample interval.

use std::fmt::Write;
use std::time::Duration;

use super::{Esc, close_page, open_page};
use crate::admin::health::{Report, Row, SAMPLE_EVERY, WINDOWS};

/// The counters shown, in order: metric, title, what it answers.
const SECTIONS: [(&str, &str, &str); 7] = [
    (
        "stitch_propagation_requests_total",
        "Requests by the dialect their context came from",
        "per direction; <em>none</em> = the request carried no usable context",
    ),
    (
        "stitch_propagation_repairs_total",
        "Repairs",
        "malformed headers stitch repaired (lenient mode), by dialect and kind",
    ),
    (
        "stitch_propagation_conflicts_total",
        "Conflicts",
        "dialects that carried different trace ids on one request; the winner is the first in <code>extract</code> order",
    ),
    (
        "stitch_propagation_orphans_total",
        "Orphans",
        "outbound requests without context: a new root, or a parent inferred from the only request in flight",
    ),
    (
        "stitch_propagation_tracestate_restores_total",
        "tracestate restores",
        "the app dropped <code>tracestate</code> and stitch restored it from the inbound request",
    ),
    (
        "stitch_propagation_invalid_headers_total",
        "Invalid headers",
        "trace headers ignored as invalid (treated as absent), by dialect",
    ),
    (
        "stitch_propagation_baggage_dropped_total",
        "Baggage dropped",
        "<code>baggage</code> over the spec's limits, removed",
    ),
];

/// A span of time as people say it: `40 s`, `3 min 20 s`, `2 h 5 min`.
fn ago(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s} s"),
        60..3600 if s.is_multiple_of(60) => format!("{} min", s / 60),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// The page.
pub(in crate::admin) fn page(report: &Report) -> String {
    let mut html = String::with_capacity(16 * 1024);
    open_page(&mut html, "stitch — propagation health");
    let windows: Vec<String> = WINDOWS
        .iter()
        .zip(report.covered)
        .map(|(w, covered)| {
            if covered + SAMPLE_EVERY / 2 >= *w {
                format!("last {}", ago(*w))
            } else {
                format!("last {} (only {} so far)", ago(*w), ago(covered))
            }
        })
        .collect();
    let _ = write!(
        html,
        "<p class=\"summary\">This stitch's own hops, from the <code>stitch_propagation_*</code> counters \
         <a href=\"/metrics\">/metrics</a> exposes: since start ({} ago) and over the last {}. Trend \
         bars: one per {} s, oldest first. Every stitch has its own page.</p>",
        ago(report.since_start),
        WINDOWS.map(ago).join(" and the last "),
        SAMPLE_EVERY.as_secs()
    );
    context_table(&mut html, report, &windows);
    for (metric, title, what) in SECTIONS {
        let rows: Vec<&Row> = report
            .rows
            .iter()
            .filter(|r| r.series.metric == metric)
            .collect();
        let _ = write!(
            html,
            "<h2 id=\"{metric}\">{title}</h2><p class=\"meta\">{what} (<code>{metric}</code>)</p>"
        );
        counter_table(&mut html, &rows, &windows);
    }
    close_page(&mut html);
    html
}

/// Per direction: requests with a context and without, since start and per window.
fn context_table(html: &mut String, report: &Report, windows: &[String]) {
    html.push_str("<h2 id=\"context\">Requests with and without context</h2><table class=\"health context\"><thead><tr><th>direction</th><th>since start</th>");
    for w in windows {
        let _ = write!(html, "<th>{}</th>", Esc(w));
    }
    html.push_str("</tr></thead><tbody>");
    for direction in ["inbound", "outbound"] {
        let rows: Vec<&Row> = report
            .rows
            .iter()
            .filter(|r| {
                r.series.metric == "stitch_propagation_requests_total"
                    && r.series.label("direction") == direction
            })
            .collect();
        let split = |count: &dyn Fn(&Row) -> u64| {
            let (mut with, mut without) = (0, 0);
            for r in &rows {
                if r.series.label("dialect") == "none" {
                    without += count(r);
                } else {
                    with += count(r);
                }
            }
            let share = (with * 100)
                .checked_div(with + without)
                .map_or_else(String::new, |percent| format!(" ({percent}% with)"));
            format!("<td class=\"n\">{with} with · {without} without{share}</td>")
        };
        let _ = write!(html, "<tr><td>{direction}</td>{}", split(&|r| r.total));
        for i in 0..WINDOWS.len() {
            html.push_str(&split(&|r| r.windows[i]));
        }
        html.push_str("</tr>");
    }
    html.push_str("</tbody></table>");
}

/// One counter's series: their labels, since start, per window, and the trend.
fn counter_table(html: &mut String, rows: &[&Row], windows: &[String]) {
    let Some(first) = rows.first() else {
        html.push_str("<p>None since start.</p>");
        return;
    };
    html.push_str("<table class=\"health\"><thead><tr>");
    for (name, _) in &first.series.labels {
        let _ = write!(html, "<th>{}</th>", Esc(name));
    }
    html.push_str("<th>since start</th>");
    for w in windows {
        let _ = write!(html, "<th>{}</th>", Esc(w));
    }
    html.push_str("<th>trend</th></tr></thead><tbody>");
    for row in rows {
        html.push_str("<tr>");
        for (_, value) in &row.series.labels {
            let _ = write!(html, "<td>{}</td>", Esc(value));
        }
        let _ = write!(html, "<td class=\"n\">{}</td>", row.total);
        for n in row.windows {
            let _ = write!(html, "<td class=\"n\">{n}</td>");
        }
        html.push_str("<td><span class=\"spark\">");
        let max = row.trend.iter().copied().max().unwrap_or(0).max(1);
        for &n in &row.trend {
            let _ = write!(
                html,
                "<i style=\"height:{}%\" title=\"{n}\"></i>",
                (n * 100 / max).max(6)
            );
        }
        html.push_str("</span></td></tr>");
    }
    html.push_str("</tbody></table>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::health::Series;

    fn row(metric: &str, labels: &[(&str, &str)], total: u64) -> Row {
        Row {
            series: Series {
                metric: metric.to_owned(),
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            },
            total,
            windows: [1, total],
            trend: vec![0, 1, 3],
        }
    }

    #[test]
    fn splits_requests_by_context_and_lists_each_counter() {
        let requests = "stitch_propagation_requests_total";
        let report = Report {
            since_start: Duration::from_secs(200),
            covered: [Duration::from_secs(60), Duration::from_secs(200)],
            rows: vec![
                row(requests, &[("direction", "inbound"), ("dialect", "w3c")], 6),
                row(
                    requests,
                    &[("direction", "inbound"), ("dialect", "none")],
                    2,
                ),
                row(
                    "stitch_propagation_repairs_total",
                    &[("dialect", "<b3>"), ("kind", "whitespace")],
                    4,
                ),
            ],
        };
        let html = page(&report);
        assert!(
            html.contains("<td>inbound</td><td class=\"n\">6 with · 2 without (75% with)</td>"),
            "{html}"
        );
        assert!(html.contains("<td>outbound</td><td class=\"n\">0 with · 0 without</td>"));
        assert!(html.contains("<th>last 1 min</th><th>last 5 min (only 3 min 20 s so far)</th>"));
        assert!(html.contains("<td>&lt;b3&gt;</td><td>whitespace</td><td class=\"n\">4</td>"));
        assert!(html.contains(
            "<h2 id=\"stitch_propagation_conflicts_total\">Conflicts</h2><p class=\"meta\">"
        ));
        assert!(html.contains("None since start."));
    }
}
