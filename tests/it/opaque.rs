//! Opaque TCP through stitch: bytes that are not HTTP are copied both ways untouched,
//! half-close is respected, and server-speaks-first protocols work (after the detect
//! timeout, or at once on a port declared opaque).

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::support::tcp::{BANNER, EOF_MARKER, banner_server, echo_server};
use crate::support::wire::Wire;
use crate::support::{Loopback, within};

#[tokio::test]
async fn client_first_binary_bytes_are_echoed_untouched_and_half_close_is_respected() {
    let echo = echo_server().await;
    let stitch = Loopback::to(echo).start().await;
    let mut wire = Wire::connect(stitch.inbound).await;
    // Every byte value, led by bytes no HTTP method starts with.
    let mut payload = b"\x00\x01\x02PGSQL\xff".to_vec();
    payload.extend((0..=255u8).cycle().take(300_000));
    wire.send(&payload).await;
    let echoed = within("echo", wire.read_n(payload.len()))
        .await
        .expect("echoed bytes");
    assert!(echoed == payload, "opaque bytes altered");
    // Half-close: our write side ends, the upstream sees EOF, and its last words still reach us.
    within("shutdown(write)", wire.stream.shutdown())
        .await
        .expect("half-close");
    let tail = within("rest after half-close", wire.read_to_close())
        .await
        .expect("read to EOF");
    assert_eq!(
        tail, EOF_MARKER,
        "the upstream's reply after our EOF must arrive"
    );
}

#[tokio::test]
async fn text_that_looks_almost_like_http_is_still_opaque() {
    let echo = echo_server().await;
    let stitch = Loopback::to(echo).start().await;
    let mut wire = Wire::connect(stitch.inbound).await;
    let payload = b"GET\tnot-a-request-line\r\n\r\n";
    wire.send(payload).await;
    let echoed = within("echo", wire.read_n(payload.len()))
        .await
        .expect("echoed bytes");
    assert_eq!(echoed, payload);
}

#[tokio::test]
async fn server_first_banner_arrives_after_the_detect_timeout() {
    let banner = banner_server().await;
    let stitch = Loopback::to(banner)
        .with(|s| s.detect_timeout = Duration::from_millis(300))
        .start()
        .await;
    let mut wire = Wire::connect(stitch.inbound).await;
    // The client says nothing: detection must give up and connect the banner server.
    let got = within("the banner", wire.read_n(BANNER.len()))
        .await
        .expect("banner");
    assert_eq!(got, BANNER);
    wire.send(b"HELO client\r\n").await;
    assert_eq!(
        within("echo", wire.read_n(13)).await.expect("echo"),
        b"HELO client\r\n"
    );
}

#[tokio::test]
async fn opaque_port_skips_detection_so_the_banner_comes_at_once() {
    let banner = banner_server().await;
    let stitch = Loopback::to(banner)
        .with(|s| {
            // A detect timeout far beyond the test deadline: the banner can only arrive in time if
            // detection is skipped for this port.
            s.detect_timeout = Duration::from_secs(600);
            s.opaque_ports = vec![banner.port()];
        })
        .start()
        .await;
    let mut wire = Wire::connect(stitch.inbound).await;
    let got = within("the banner without detection", wire.read_n(BANNER.len()))
        .await
        .expect("banner");
    assert_eq!(got, BANNER);
    // On an opaque port even an HTTP-looking first line is just bytes.
    let http_looking = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    wire.send(http_looking).await;
    assert_eq!(
        within("echo", wire.read_n(http_looking.len()))
            .await
            .expect("echo"),
        http_looking
    );
}
