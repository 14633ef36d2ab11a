//! Connection lifetimes beyond the basic drain: an HTTP/2 client connection silent past
//! `h2_idle_timeout` is closed with GOAWAY while a busy one is kept, and during a drain the
//! admin server stays up and reports not-ready.

mod support;

use std::time::Duration;

use support::process::wait_refused;
use support::upstream::{FIXED_BODY, HttpUpstream};
use support::{collect_body, get, h1_client, h2_client, h2_get, settings, start_stitch, within};

#[tokio::test]
async fn a_silent_h2_client_connection_gets_goaway_after_the_idle_timeout() {
    let up = HttpUpstream::start().await;
    let mut s = settings(Some(up.addr));
    s.h2_idle_timeout = Duration::from_millis(300);
    let stitch = start_stitch(s).await;
    let (mut client, conn) = h2_client(stitch.inbound).await;
    let resp = within("h2 request", client.send_request(h2_get(up.addr, "/")))
        .await
        .expect("response");
    assert_eq!(collect_body(resp.into_body()).await.0, FIXED_BODY);
    // No shutdown is triggered: only the idle timeout can close this connection.
    let closed = within("the idle h2 connection to be closed", conn)
        .await
        .expect("task");
    assert!(
        closed.is_ok(),
        "graceful close (GOAWAY), not an error: {closed:?}"
    );
    assert!(!stitch.shutdown.is_triggered());
}

#[tokio::test]
async fn a_busy_h2_client_connection_is_kept() {
    let up = HttpUpstream::start().await;
    let mut s = settings(Some(up.addr));
    s.h2_idle_timeout = Duration::from_secs(1);
    let stitch = start_stitch(s).await;
    let (mut client, conn) = h2_client(stitch.inbound).await;
    // Requests every 100 ms for 2.5 s: longer than two idle timeouts, never silent for one.
    for _ in 0..25 {
        let resp = within("h2 request", client.send_request(h2_get(up.addr, "/")))
            .await
            .expect("the connection stays usable while busy");
        assert_eq!(collect_body(resp.into_body()).await.0, FIXED_BODY);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!conn.is_finished(), "a busy connection must not be closed");
}

async fn ready_status(admin: std::net::SocketAddr) -> u16 {
    let mut client = h1_client(admin).await;
    let resp = within("/ready", client.send_request(get(admin, "/ready")))
        .await
        .expect("the admin server answers during the drain");
    resp.status().as_u16()
}

#[tokio::test]
async fn while_draining_the_admin_server_answers_not_ready() {
    let up = HttpUpstream::start().await;
    let mut s = settings(Some(up.addr));
    s.drain_timeout = Duration::from_secs(30);
    let stitch = start_stitch(s).await;
    assert_eq!(ready_status(stitch.admin).await, 200);
    let mut client = h1_client(stitch.inbound).await;
    let in_flight = tokio::spawn(client.send_request(get(up.addr, "/slow")));
    up.wait_for(1).await;
    stitch.shutdown.trigger();
    wait_refused(stitch.inbound).await;
    assert_eq!(
        ready_status(stitch.admin).await,
        503,
        "draining: not ready, but answering"
    );
    up.open_gate(1);
    let resp = within("the in-flight response", in_flight)
        .await
        .expect("task")
        .expect("the in-flight request completes");
    assert_eq!(resp.status(), 200);
    let mut stitch = stitch;
    within("run() to return after the drain", &mut stitch.task)
        .await
        .expect("task")
        .expect("run() returns Ok");
    wait_refused(stitch.admin).await;
}
