//! The commands the injected sidecar's lifecycle hooks run, against a real stitch:
//! `wait-ready` (classic-mode postStart) returns once `/ready` answers and fails when it never
//! does; `wait-drain` (classic-mode preStop) waits while the app still has connections through
//! stitch and returns once they are gone, or at its timeout; `POST /shutdown` (a classic-mode
//! Job's last step) drains and stops stitch.

use std::process::Stdio;
use std::time::Duration;

use crate::support::upstream::HttpUpstream;
use crate::support::{Loopback, closed_port, h1_client, within};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::process::Command;

fn hook(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stitch"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs a hook command to its end (within the test deadline).
async fn run_hook(args: &[&str]) -> std::process::Output {
    within(&format!("stitch {}", args.join(" ")), hook(args).output())
        .await
        .expect("the hook runs")
}

#[tokio::test]
async fn wait_ready_returns_once_stitch_is_ready() {
    let upstream = HttpUpstream::start().await;
    let stitch = Loopback::to(upstream.addr).launch().await;
    let admin = stitch.admin.to_string();
    let out = run_hook(&["wait-ready", "--admin", &admin, "--timeout", "10s"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let nobody = closed_port().await.to_string();
    let out = run_hook(&["wait-ready", "--admin", &nobody, "--timeout", "1s"]).await;
    assert!(
        !out.status.success(),
        "no stitch: the hook fails (the kubelet restarts it)"
    );
}

/// A client connection through stitch that served one request and stays open.
async fn keep_alive_connection(
    stitch: &crate::support::StitchUnderTest,
    upstream: &HttpUpstream,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let mut client = h1_client(stitch.inbound).await;
    let response = client
        .send_request(crate::support::get(upstream.addr, "/"))
        .await
        .expect("proxied");
    response.into_body().collect().await.expect("body");
    client
}

#[tokio::test]
async fn wait_drain_waits_for_the_apps_connections() {
    let upstream = HttpUpstream::start().await;
    let stitch = Loopback::to(upstream.addr).launch().await;
    let admin = stitch.admin.to_string();

    // The app's keep-alive connection through stitch.
    let client = keep_alive_connection(&stitch, &upstream).await;

    let mut drain = hook(&[
        "wait-drain",
        "--admin",
        &admin,
        "--min-wait",
        "0s",
        "--timeout",
        "60s",
    ])
    .spawn()
    .expect("starts");
    // Several polls happen in this time; an open connection keeps it waiting.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        drain.try_wait().expect("status").is_none(),
        "wait-drain returned while the app still had a connection"
    );
    drop(client);
    let out = within(
        "wait-drain after the connection closed",
        drain.wait_with_output(),
    )
    .await
    .expect("runs");
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("no connections open"), "{said}");

    // With a connection held past the timeout it gives up and lets the kubelet go on.
    let _held = keep_alive_connection(&stitch, &upstream).await;
    let out = run_hook(&[
        "wait-drain",
        "--admin",
        &admin,
        "--min-wait",
        "0s",
        "--timeout",
        "1s",
    ])
    .await;
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("still open"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn post_shutdown_from_inside_the_pod_stops_stitch() {
    let upstream = HttpUpstream::start().await;
    let stitch = Loopback::to(upstream.addr).launch().await;
    let mut admin = h1_client(stitch.admin).await;
    let response = admin
        .send_request(
            http::Request::post("/shutdown")
                .header("host", stitch.admin.to_string())
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("answered");
    assert_eq!(response.status(), 202);
    let mut stitch = stitch;
    let result = within("stitch stops", &mut stitch.task).await;
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
}
