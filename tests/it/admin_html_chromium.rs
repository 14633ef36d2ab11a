//! The `/traces` HTML waterfall in a real browser (headless Chromium): the page loads, every
//! span of a posted chain is in the DOM, the broken trace is marked, and the browser logs
//! no console message (the page has no script, so any console line is an error such as a
//! blocked or failed resource load).
//!
//! Needs Debian's `chromium` (`apt-get install -y chromium`, done by `.ci/run`); without it
//! the test says so on stderr and passes vacuously.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use http::StatusCode;
use stitch::admin::AdminState;

use crate::support::fetch;
use crate::support::telemetry::{admin, chain, hex, otlp_request, post_json, post_protobuf};

/// Runs headless Chromium on `url`; returns (DOM, console lines).
async fn dump_dom(url: &str) -> (String, Vec<String>) {
    let profile = std::env::temp_dir().join(format!(
        "stitch-chromium-{}-{}",
        std::process::id(),
        url.len()
    ));
    let child = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chromium");
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium output");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

fn chromium_available() -> bool {
    std::process::Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waterfall_page_shows_every_span_without_console_errors() {
    if !chromium_available() {
        eprintln!(
            "SKIPPED: `chromium` is not installed (apt-get install -y chromium); .ci/run installs it"
        );
        return;
    }
    let (addr, _shutdown) = admin(AdminState::new(Arc::new(AtomicBool::new(true)))).await;
    let c = chain(0x42);
    let mut hostile = c.b_in.clone();
    hostile.name = "<img src=x onerror=alert(1)>".into();
    assert_eq!(
        post_protobuf(addr, &otlp_request("orders", &[&c.a_in, &c.a_out]))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        post_json(addr, &otlp_request("inventory\"<b>", &[&hostile]))
            .await
            .0,
        StatusCode::OK
    );
    let broken = chain(0x43);
    assert_eq!(
        post_protobuf(addr, &otlp_request("orders", &[&broken.a_in, &broken.b_in]))
            .await
            .0,
        StatusCode::OK
    );

    // The console detector is not vacuous: a page that logs is caught.
    let (_, control) =
        dump_dom("data:text/html,<p>x</p><script>console.error('control')</script>").await;
    assert!(
        control.iter().any(|l| l.contains("control")),
        "console lines are detected"
    );

    let (dom, console) = dump_dom(&format!("http://{addr}/traces")).await;
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert!(dom.contains("stitch — recent traces"), "page loaded: {dom}");
    for span in [&c.a_in, &c.a_out, &hostile, &broken.a_in, &broken.b_in] {
        assert!(
            dom.contains(&format!("data-span-id=\"{}\"", hex(&span.span_id))),
            "span {} in the waterfall",
            hex(&span.span_id)
        );
    }
    assert!(!dom.contains("<img"), "span names are escaped");
    assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(dom.contains(&format!("id=\"trace-{}\"", hex(&c.trace_id))));
    assert!(dom.contains(&format!("id=\"trace-{}\"", hex(&broken.trace_id))));
    assert!(dom.contains("verdict broken"), "the broken trace is marked");
    assert!(dom.contains("never arrived"), "its finding is listed");
    assert!(
        dom.contains(&format!(
            "flagged\" id=\"span-{}\"",
            hex(&broken.b_in.span_id)
        )),
        "the orphaned span is flagged"
    );

    // The filter form works without script: a GET with the filters, prefilled in the page.
    let (dom, console) =
        dump_dom(&format!("http://{addr}/traces?service=orders&status=error")).await;
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert!(dom.contains("name=\"service\" value=\"orders\""));
    assert!(
        dom.contains(&format!("id=\"trace-{}\"", hex(&c.trace_id))),
        "orders + error"
    );
    assert!(
        dom.contains(&format!("id=\"trace-{}\"", hex(&broken.trace_id))),
        "its b_in failed"
    );

    // One trace as HTML too.
    let (dom, console) = dump_dom(&format!("http://{addr}/traces/{}", hex(&c.trace_id))).await;
    assert!(console.is_empty(), "console messages: {console:#?}");
    assert!(dom.contains("verdict clean"));
    assert_eq!(dom.matches("data-span-id=").count(), 3);

    // Without Accept: text/html the same URL is JSON.
    let (_, headers, _) = fetch(addr, "/traces").await;
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
}
