//! An HTTP/2 client connection that stays silent past `h2_idle_timeout` is closed with
//! GOAWAY; one that keeps a stream busy is not cut.

mod support;

use std::time::Duration;

use support::upstream::{FIXED_BODY, HttpUpstream};
use support::{collect_body, h2_client, h2_get, settings, start_stitch, within};

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
