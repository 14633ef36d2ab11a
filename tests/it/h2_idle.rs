//! The HTTP/2 client idle timeout closes only silent connections (the silent case is in
//! `lifecycle.rs`): a connection kept busy for longer than the timeout is never cut.

use std::time::Duration;

use crate::support::upstream::{FIXED_BODY, HttpUpstream};
use crate::support::{Loopback, collect_body, h2_client, h2_get, within};

#[tokio::test]
async fn a_busy_h2_client_connection_is_kept() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr)
        .with(|s| s.h2_idle_timeout = Duration::from_secs(1))
        .start()
        .await;
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
