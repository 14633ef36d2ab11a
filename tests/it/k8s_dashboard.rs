//! The Grafana dashboard asks only for metrics stitch really exposes: real traffic runs
//! through a real stitch (every trace dialect, a repair, a conflict, an invalid header, an
//! orphan, HTTP/1 and HTTP/2, a rules reload, a failing exporter) and through a real webhook,
//! both `/metrics` are scraped, and every metric name of every dashboard query (and template
//! variable) must be one of theirs.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::upstream::HttpUpstream;
use crate::support::{Loopback, closed_port, h1_client, h2_client, h2_get};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use stitch::telemetry::{ExportConfig, Protocol, TelemetryConfig};

const DASHBOARD: &str = "charts/stitch/dashboards/stitch-dashboard.json";

/// Every PromQL expression of the dashboard: panel targets and template variable queries.
fn queries(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("a panel has targets");
        assert!(!targets.is_empty(), "panel {} asks nothing", panel["title"]);
        for t in targets {
            out.push(t["expr"].as_str().expect("an expr").to_owned());
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if let Some(q) = var["query"]["query"].as_str() {
            out.push(q.to_owned());
        }
    }
    out
}

/// `stitch_*` identifiers in a PromQL expression (label values in quotes are not names).
fn metric_names(expr: &str) -> Vec<String> {
    let unquoted: String = expr
        .split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, part)| part)
        .collect::<Vec<_>>()
        .join(" ");
    let mut names = Vec::new();
    let mut rest = unquoted.as_str();
    while let Some(at) = rest.find("stitch_") {
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded {
            names.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// Sample names a scrape exposes: the samples present, and every sample name a declared
/// family can have (a counter `x` is `x_total`, a histogram `x_bucket`/`_sum`/`_count`).
fn exposed(scrape: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut samples, mut declared) = (BTreeSet::new(), BTreeSet::new());
    for line in scrape.lines() {
        if let Some(decl) = line.strip_prefix("# TYPE ") {
            let mut words = decl.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for s in suffixes {
                declared.insert(format!("{name}{s}"));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_owned());
        }
    }
    (samples, declared)
}

async fn get_text(addr: std::net::SocketAddr, path: &str) -> String {
    let mut client = h1_client(addr).await;
    let response = client
        .send_request(crate::support::get(addr, path))
        .await
        .expect("admin answers");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    String::from_utf8(body.to_vec()).expect("UTF-8")
}

/// Real traffic through a real stitch; returns its `/metrics`.
async fn proxy_scrape() -> String {
    let upstream = HttpUpstream::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, "repair: lenient\n").expect("write rules");
    let telemetry = TelemetryConfig {
        // A collector that is not there: failed batches, dropped spans, degradation.
        export: Some(ExportConfig::new(
            Protocol::HttpProtobuf,
            format!("http://{}", closed_port().await),
        )),
        batch_delay: Duration::from_millis(20),
        ..TelemetryConfig::default()
    };
    let stitch = Loopback::to(upstream.addr)
        .rules(Some(rules.clone()))
        .telemetry(telemetry)
        .start()
        .await;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let inbound: [&[(&str, String)]; 7] = [
        &[("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))],
        &[("b3", format!("{trace}-00f067aa0ba902b7-1"))],
        &[("uber-trace-id", format!("{trace}:00f067aa0ba902b7:0:1"))],
        &[],
        // Upper-case hex: repaired in lenient mode.
        &[(
            "traceparent",
            format!("00-{}-00F067AA0BA902B7-01", trace.to_uppercase()),
        )],
        // Two dialects, two traces: a conflict.
        &[
            ("traceparent", format!("00-{trace}-00f067aa0ba902b7-01")),
            (
                "b3",
                "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1".to_owned(),
            ),
        ],
        &[("traceparent", "00-garbage".to_owned())],
    ];
    let mut client = h1_client(stitch.inbound).await;
    for headers in inbound {
        let mut req = http::Request::get("/order").header("host", upstream.addr.to_string());
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        let response = client
            .send_request(req.body(Full::new(Bytes::new())).expect("request"))
            .await
            .expect("proxied");
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.expect("body");
    }
    let (mut h2, _conn) = h2_client(stitch.inbound).await;
    let response = h2
        .send_request(h2_get(upstream.addr, "/h2"))
        .await
        .expect("h2 proxied");
    assert_eq!(response.status(), 200);
    // An outbound call without context: an orphan.
    let mut out = h1_client(stitch.outbound).await;
    let response = out
        .send_request(
            http::Request::get(format!("http://{}/pay", upstream.addr))
                // RFC 9112 §3.2: Host accompanies an absolute-form target too.
                .header("host", upstream.addr.to_string())
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("outbound proxied");
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.expect("body");
    // A rules reload.
    std::fs::write(&rules, "repair: lenient\ninject: [w3c, b3]\n").expect("rewrite rules");
    crate::support::within("the rules reload is counted", async {
        while !get_text(stitch.admin, "/metrics")
            .await
            .contains("stitch_config_reloads_total{result=\"ok\"} 1")
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // An SDK's spans sent to the sidecar's OTLP receiver.
    let otlp = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "sdk"}}]},
        "scopeSpans": [{"spans": [{"traceId": trace, "spanId": "00f067aa0ba902b7", "name": "work",
            "kind": 2, "startTimeUnixNano": "1000", "endTimeUnixNano": "2000"}]}]}]});
    let mut admin = h1_client(stitch.admin).await;
    let response = admin
        .send_request(
            http::Request::post("/v1/traces")
                .header("host", stitch.admin.to_string())
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(otlp.to_string())))
                .expect("request"),
        )
        .await
        .expect("OTLP accepted");
    assert_eq!(response.status(), 200);
    upstream.wait_for(9).await;
    // The spans of this traffic fail to export (no collector) and are counted as dropped.
    crate::support::within("the failed export is counted", async {
        while !get_text(stitch.admin, "/metrics")
            .await
            .contains("stitch_spans_dropped_total{reason=")
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    get_text(stitch.admin, "/metrics").await
}

/// A real webhook after one admission; returns its `/metrics`.
async fn webhook_scrape() -> String {
    let name = "stitch-webhook.stitch-system.svc";
    let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("a certificate");
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write");
    let webhook = stitch::webhook::Webhook::bind(
        "127.0.0.1:0".parse().expect("address"),
        cert_path,
        key_path,
        stitch::inject::InjectOptions::default(),
    )
    .await
    .expect("the webhook starts");
    let addr = webhook.local_addr().expect("bound");
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(webhook.run(stop.clone()));
    let ca = cert.cert.pem().into_bytes();
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "1", "kind": {"kind": "Pod"}, "resource": {"resource": "pods"},
            "operation": "CREATE", "namespace": "shop",
            "object": {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "b"}]}}}});
    let (status, _) = crate::support::k8s::https_request(
        addr,
        name,
        &ca,
        "POST",
        "/mutate/namespace-enabled",
        review.to_string().into_bytes(),
        false,
    )
    .await
    .expect("admission");
    assert_eq!(status, 200);
    let (status, body) =
        crate::support::k8s::https_request(addr, name, &ca, "GET", "/metrics", vec![], false)
            .await
            .expect("metrics");
    assert_eq!(status, 200);
    stop.cancel();
    String::from_utf8(body).expect("UTF-8")
}

#[tokio::test]
async fn every_dashboard_query_uses_metrics_stitch_exposes() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::support::k8s::root().join(DASHBOARD))
            .expect("the dashboard"),
    )
    .expect("JSON");
    let used: BTreeSet<String> = queries(&dashboard)
        .iter()
        .flat_map(|q| metric_names(q))
        .collect();
    for query in queries(&dashboard) {
        assert!(
            !metric_names(&query).is_empty(),
            "a query without a stitch metric: {query}"
        );
    }

    let proxy = proxy_scrape().await;
    let webhook = webhook_scrape().await;
    let (mut samples, mut declared) = exposed(&proxy);
    let (webhook_samples, webhook_declared) = exposed(&webhook);
    samples.extend(webhook_samples);
    declared.extend(webhook_declared);
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !samples.contains(*n) && !declared.contains(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard asks for metrics stitch does not expose: {missing:?}\n{proxy}"
    );

    // The article's SLIs come out of this traffic as data, not only as declared families.
    for name in [
        "stitch_requests_total",
        "stitch_request_duration_seconds_bucket",
        "stitch_propagation_requests_total",
        "stitch_propagation_repairs_total",
        "stitch_propagation_conflicts_total",
        "stitch_propagation_orphans_total",
        "stitch_propagation_invalid_headers_total",
        "stitch_open_connections",
        "stitch_config_reloads_total",
        "stitch_webhook_admissions_total",
    ] {
        assert!(used.contains(name), "the dashboard does not show {name}");
        assert!(
            samples.contains(name),
            "no {name} sample after the traffic:\n{proxy}"
        );
    }
    for dialect in ["w3c", "b3", "jaeger", "none"] {
        let sample = format!(
            "stitch_propagation_requests_total{{direction=\"inbound\",dialect=\"{dialect}\"}}"
        );
        assert!(proxy.contains(&sample), "no {sample}:\n{proxy}");
    }
    // Every section of the article's SLIs has panels.
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    assert_eq!(
        titles,
        [
            "Trace completeness",
            "Requests (RED) by direction and protocol",
            "Exporter health",
            "Configuration and injection"
        ]
    );
}

#[test]
fn metric_names_are_read_from_promql() {
    assert_eq!(
        metric_names(
            r#"sum by (le) (rate(stitch_request_duration_seconds_bucket{x="stitch_not"}[5m])) / my_stitch_other"#
        ),
        ["stitch_request_duration_seconds_bucket"]
    );
}
