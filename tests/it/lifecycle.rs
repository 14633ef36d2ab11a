//! Start-up and shutdown: health endpoints, graceful drain in-process and through the real
//! binary on SIGTERM (in-flight requests finish, new connections are refused, exit 0), and
//! HTTP/2 GOAWAY on shutdown.

use std::time::Duration;

use crate::support;
use crate::support::process::{spawn_stitch, wait_refused};
use crate::support::upstream::{FIXED_BODY, HttpUpstream};
use crate::support::wire::{Wire, roundtrip};
use crate::support::{Loopback, collect_body, get, h1_client, h2_client, h2_get, within};

#[tokio::test]
async fn live_and_ready_answer_once_running() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    for path in ["/live", "/ready"] {
        let resp = roundtrip(
            stitch.admin,
            format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(resp.status, 200, "{path}");
    }
}

#[tokio::test]
async fn shutdown_lets_the_in_flight_request_finish_and_refuses_new_connections() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr)
        .with(|s| s.drain_timeout = Duration::from_secs(30))
        .start()
        .await;
    let mut client = h1_client(stitch.inbound).await;
    let in_flight = tokio::spawn(client.send_request(get(up.addr, "/slow")));
    up.wait_for(1).await;
    stitch.shutdown.trigger();
    wait_refused(stitch.inbound).await;
    // While the request drains, the admin server still answers, and says "not ready" so a
    // load balancer stops sending.
    let ready = roundtrip(
        stitch.admin,
        b"GET /ready HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(ready.status, 503, "/ready during the drain");
    up.open_gate(1);
    let resp = within("the in-flight response", in_flight)
        .await
        .expect("task")
        .expect("the in-flight request completes during the drain");
    assert_eq!(resp.status(), 200);
    assert_eq!(collect_body(resp.into_body()).await.0, "slow done");
    let mut stitch = stitch;
    stitch.run_returns("run() to return after the drain").await;
}

#[tokio::test]
async fn shutdown_sends_goaway_to_idle_h2_connections() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr)
        .with(|s| {
            // Longer than the wait below: the connection must close because of GOAWAY, not because
            // the drain deadline ran out.
            s.drain_timeout = Duration::from_secs(120);
        })
        .start()
        .await;
    let (mut client, conn) = h2_client(stitch.inbound).await;
    let resp = within("h2 request", client.send_request(h2_get(up.addr, "/")))
        .await
        .expect("response");
    assert_eq!(collect_body(resp.into_body()).await.0, FIXED_BODY);
    stitch.shutdown.trigger();
    let closed = within("the idle h2 connection to be closed by GOAWAY", conn)
        .await
        .expect("task");
    assert!(closed.is_ok(), "graceful close, not an error: {closed:?}");
}

#[tokio::test]
async fn sigterm_drains_in_flight_request_refuses_new_connections_and_exits_zero() {
    let up = HttpUpstream::start().await;
    let mut stitch = spawn_stitch(up.addr, &["--drain-timeout", "30s"]).await;
    let mut wire = Wire::connect(stitch.inbound).await;
    wire.send(format!("GET /slow HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr).as_bytes())
        .await;
    up.wait_for(1).await;
    stitch.terminate();
    wait_refused(stitch.inbound).await;
    wait_refused(stitch.outbound).await;
    assert!(
        stitch.child.try_wait().expect("try_wait").is_none(),
        "stitch exited while a request was still in flight"
    );
    up.open_gate(1);
    let resp = wire.read_response(false).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "slow done");
    let code = stitch.wait_exit(support::DEADLINE).await;
    assert_eq!(code, Some(0), "a drained shutdown exits 0");
}

#[tokio::test]
async fn sigterm_with_nothing_in_flight_exits_zero_promptly() {
    let up = HttpUpstream::start().await;
    let mut stitch = spawn_stitch(up.addr, &["--drain-timeout", "120s"]).await;
    let ok = roundtrip(
        stitch.inbound,
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            up.addr
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(ok.status, 200);
    stitch.terminate();
    // Well under the drain deadline: with nothing in flight there is nothing to wait for.
    let code = stitch.wait_exit(support::DEADLINE).await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn malformed_client_requests_are_not_logged_as_errors() {
    let up = HttpUpstream::start().await;
    let mut stitch = spawn_stitch(up.addr, &["--drain-timeout", "30s"]).await;
    for bad in [
        format!("GET / HTTP/1.1\r\nHost: {}\r\nNo colon\r\n\r\n", up.addr),
        format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
            up.addr
        ),
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\n{}\r\n",
            "X-Pad: y\r\n".repeat(200)
        ),
    ] {
        let mut wire = Wire::connect(stitch.inbound).await;
        wire.send(bad.as_bytes()).await;
        let resp = within("a refusal", wire.try_read_response(false)).await;
        assert!(resp.map(|r| r.status >= 400).unwrap_or(true), "for {bad:?}");
    }
    stitch.terminate();
    assert_eq!(stitch.wait_exit(support::DEADLINE).await, Some(0));
    let mut loud = Vec::new();
    while let Some(line) = within("log lines", stitch.log_lines.recv()).await {
        if line.contains("\"level\":\"ERROR\"") {
            loud.push(line);
        }
    }
    assert!(
        loud.is_empty(),
        "client mistakes logged at error:\n{}",
        loud.join("\n")
    );
}

#[tokio::test]
async fn silent_h2_client_connection_gets_goaway_after_the_idle_timeout() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr)
        .with(|s| s.h2_idle_timeout = Duration::from_millis(500))
        .start()
        .await;
    let (mut client, conn) = h2_client(stitch.inbound).await;
    let resp = within("h2 request", client.send_request(h2_get(up.addr, "/")))
        .await
        .expect("response");
    assert_eq!(collect_body(resp.into_body()).await.0, FIXED_BODY);
    // Well under the 600 s default: only the configured 500 ms can close it.
    let closed = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the silent connection is closed by stitch")
        .expect("task");
    assert!(
        closed.is_ok(),
        "a graceful GOAWAY, not an error: {closed:?}"
    );
}
