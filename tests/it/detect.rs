//! Protocol detection decides as early as the bytes allow: a first byte that cannot be HTTP
//! (TLS, Postgres) is relayed at once however long `--detect-timeout` is; bytes that can still
//! become an HTTP request are held to `--header-read-timeout` and then closed with `408`
//! (never relayed to the app); only silence becomes opaque after `--detect-timeout`. Each
//! ending is told apart in `stitch_detect_total{outcome}`.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::metrics::{metric, scrape};
use crate::support::tcp::{BANNER, banner_server, echo_server};
use crate::support::tls::TlsEcho;
use crate::support::upstream::HttpUpstream;
use crate::support::wire::Wire;
use crate::support::{Loopback, within};

/// The detect timeout of these tests: a client that waited for it could not meet [`PROMPT`].
const DETECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A generous bound for "at once" (not a latency figure: it only separates deciding on the
/// first byte from waiting out [`DETECT_TIMEOUT`]).
const PROMPT: Duration = Duration::from_millis(2500);

async fn detect_outcomes(admin: std::net::SocketAddr, outcome: &str) -> f64 {
    metric(
        &scrape(admin).await,
        "stitch_detect_total",
        &[("outcome", outcome)],
    )
}

#[tokio::test]
async fn a_tls_handshake_through_stitch_does_not_wait_for_the_detect_timeout() {
    let tls = TlsEcho::start().await;
    let stitch = Loopback::to(tls.addr)
        .with(|s| s.detect_timeout = DETECT_TIMEOUT)
        .start()
        .await;
    let started = Instant::now();
    let echoed = within(
        "a TLS handshake and echo through stitch",
        tls.handshake_and_echo(stitch.inbound, b"over TLS"),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(echoed, b"over TLS");
    assert!(
        took < PROMPT,
        "the ClientHello waited {took:?} (detect timeout {DETECT_TIMEOUT:?})"
    );
    assert_eq!(detect_outcomes(stitch.admin, "opaque").await, 1.0);
}

#[tokio::test]
async fn a_postgres_startup_is_relayed_at_once() {
    let echo = echo_server().await;
    let stitch = Loopback::to(echo)
        .with(|s| s.detect_timeout = DETECT_TIMEOUT)
        .start()
        .await;
    // SSLRequest: length 8, code 80877103; the client then waits for the server's one byte.
    let ssl_request = b"\x00\x00\x00\x08\x04\xd2\x16\x2f";
    let mut wire = Wire::connect(stitch.inbound).await;
    let started = Instant::now();
    wire.send(ssl_request).await;
    let echoed = within("the echo", wire.read_n(ssl_request.len()))
        .await
        .expect("echoed bytes");
    let took = started.elapsed();
    assert_eq!(echoed, ssl_request);
    assert!(took < PROMPT, "a non-HTTP first byte waited {took:?}");
    assert_eq!(detect_outcomes(stitch.admin, "opaque").await, 1.0);
}

#[tokio::test]
async fn a_trickling_http_client_is_closed_with_408_and_never_reaches_the_app() {
    let app = HttpUpstream::start().await;
    let header_read_timeout = Duration::from_millis(1500);
    let stitch = Loopback::to(app.addr)
        .with(|s| {
            // Silence would be decided long before: the bytes keep the connection HTTP.
            s.detect_timeout = Duration::from_millis(200);
            s.header_read_timeout = header_read_timeout;
        })
        .start()
        .await;
    let mut client = crate::support::connect(stitch.inbound).await;
    let started = Instant::now();
    let request = format!("GET /slow HTTP/1.1\r\nHost: {}\r\nX-A: b\r\n\r\n", app.addr);
    let mut answer = Vec::new();
    let trickle = async {
        for byte in request.as_bytes() {
            if client.write_all(&[*byte]).await.is_err() {
                // Closed (and gone) before we read the end: what we read so far is the answer.
                return;
            }
            // Read whatever came back meanwhile; the end of the stream ends the trickle.
            let mut chunk = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(150), client.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
        panic!("the whole request trickled through without stitch closing the connection");
    };
    within("stitch to close the trickling client", trickle).await;
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 408 "),
        "the client was told {answer:?}"
    );
    assert!(
        took >= header_read_timeout,
        "closed after {took:?}, before the header-read timeout"
    );
    assert_eq!(app.connections(), 0, "the trickling client reached the app");
    assert_eq!(detect_outcomes(stitch.admin, "header_timeout").await, 1.0);
    assert_eq!(detect_outcomes(stitch.admin, "opaque").await, 0.0);
    assert_eq!(detect_outcomes(stitch.admin, "opaque_silent").await, 0.0);
}

#[tokio::test]
async fn a_silent_client_still_becomes_opaque_after_the_detect_timeout() {
    let banner = banner_server().await;
    let detect_timeout = Duration::from_millis(300);
    let stitch = Loopback::to(banner)
        .with(|s| s.detect_timeout = detect_timeout)
        .start()
        .await;
    let mut wire = Wire::connect(stitch.inbound).await;
    let started = Instant::now();
    let got = within("the banner", wire.read_n(BANNER.len()))
        .await
        .expect("banner");
    assert_eq!(got, BANNER);
    assert!(started.elapsed() >= detect_timeout);
    assert_eq!(detect_outcomes(stitch.admin, "opaque_silent").await, 1.0);
    assert_eq!(detect_outcomes(stitch.admin, "header_timeout").await, 0.0);
}
