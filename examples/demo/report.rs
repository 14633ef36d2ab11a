//! What the demo prints about the traces: whether each order stayed one trace (from the
//! headers the services saw), and what the collector and the metrics say about it.

use std::net::SocketAddr;

use http::HeaderMap;
use serde_json::Value;

use super::services;

/// Whether every service saw the same trace id, whatever header carried it; the id if so.
pub(crate) fn same_trace(body: &str) -> (String, Option<String>) {
    let ids: Vec<Option<String>> = body.lines().map(trace_id_in).collect();
    let found: Vec<&String> = ids.iter().flatten().collect();
    if !found.is_empty() && found.len() == ids.len() && found.windows(2).all(|w| w[0] == w[1]) {
        let id = found[0].clone();
        (
            format!("one trace ({id}) across all {} services", ids.len()),
            Some(id),
        )
    } else {
        let summary = format!(
            "{} of {} services carried a trace context: not one trace",
            found.len(),
            ids.len()
        );
        (summary, None)
    }
}

/// The 128-bit trace id (32 hex; 64-bit B3 ids left-padded) in one service's report line.
fn trace_id_in(line: &str) -> Option<String> {
    let (_, headers) = line.split_once(" saw ")?;
    let value = headers.split(", ").next()?.split_once(": ")?.1;
    let id = if headers.starts_with("b3") || headers.starts_with("x-b3-traceid") {
        value.split('-').next()?
    } else {
        // traceparent `00-{id}-…`, jd-trace-id `t-{id}-…`
        value.split('-').nth(1)?
    };
    let id = id.to_ascii_lowercase();
    (id.len() <= 32 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| format!("{id:0>32}"))
}

async fn get_json(admin: SocketAddr, path: &str) -> Result<Value, String> {
    match services::get(admin, path, HeaderMap::new()).await {
        Ok((status, body)) if status.is_success() => {
            serde_json::from_str(&body).map_err(|e| format!("{path}: not JSON ({e})"))
        }
        Ok((status, _)) => Err(format!("{path} answered {status}")),
        Err(e) => Err(format!("{path} failed: {e}")),
    }
}

/// How many traces the collector's ring holds (`/traces` is `{"traces": [...]}`).
pub(crate) async fn collector_summary(collector: SocketAddr) -> String {
    match get_json(collector, "/traces").await {
        Ok(json) => match json.get("traces").and_then(Value::as_array) {
            Some(list) => format!("{} recent traces", list.len()),
            None => "an unexpected /traces document".to_owned(),
        },
        Err(e) => e,
    }
}

/// One trace as the collector sees it: spans, services and the integrity verdict.
pub(crate) async fn trace_verdict(collector: SocketAddr, trace_id: &str) -> String {
    let json = match get_json(collector, &format!("/traces/{trace_id}")).await {
        Ok(json) => json,
        Err(e) => return e,
    };
    let spans = json.get("spans").and_then(Value::as_array);
    let mut services: Vec<&str> = spans
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("service").and_then(Value::as_str))
        .collect();
    services.sort_unstable();
    services.dedup();
    let verdict = json.get("verdict");
    let clean = verdict
        .and_then(|v| v.get("clean"))
        .and_then(Value::as_bool);
    let findings: Vec<&str> = verdict
        .and_then(|v| v.get("findings"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.get("kind").and_then(Value::as_str))
        .collect();
    format!(
        "{} spans across {}; verdict {}{}",
        spans.map_or(0, Vec::len),
        services.join(", "),
        match clean {
            Some(true) => "clean",
            Some(false) => "BROKEN",
            None => "unknown",
        },
        if findings.is_empty() {
            String::new()
        } else {
            format!(" (noted: {})", findings.join(", "))
        }
    )
}

/// The non-zero `stitch_propagation_*` samples of one stitch's `/metrics`.
pub(crate) async fn propagation_metrics(admin: SocketAddr) -> Vec<String> {
    let Ok((_, text)) = services::get(admin, "/metrics", HeaderMap::new()).await else {
        return vec!["(metrics unavailable)".to_owned()];
    };
    text.lines()
        .filter(|l| l.starts_with("stitch_propagation_"))
        .filter(|l| l.rsplit(' ').next().is_some_and(|v| v != "0"))
        .map(str::to_owned)
        .collect()
}
