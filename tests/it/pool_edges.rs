//! Edges of the upstream pool: a failed HTTP/2 connect fails every stream waiting for it at
//! once (not one connect timeout after another), and the next stream tries again.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;

use crate::support::tcp::unresponsive_port;
use crate::support::{Loopback, collect_body, h2_client, h2_get, serve_http, within};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const STREAMS: usize = 10;

#[tokio::test]
async fn h2_streams_waiting_for_a_failed_connect_fail_together_and_the_next_stream_retries() {
    // An upstream whose connects hang (full accept queue) until it starts serving below.
    let (upstream, mut black_hole) = unresponsive_port().await;
    let stitch = Loopback::to(upstream)
        .with(|s| s.connect_timeout = CONNECT_TIMEOUT)
        .start()
        .await;
    let (client, _conn) = h2_client(stitch.inbound).await;

    let started = Instant::now();
    let streams: Vec<_> = (0..STREAMS)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let resp = client
                    .send_request(h2_get(upstream, "/"))
                    .await
                    .expect("stitch answers every stream");
                (resp.status(), started.elapsed())
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for stream in streams {
        let (status, took) = within("a stream's answer", stream).await.expect("task");
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "the connect timed out");
        slowest = slowest.max(took);
    }
    // One shared attempt fails them all after about one connect timeout; one attempt per
    // waiting stream would take STREAMS × 1 s for the last. The bound leaves room for a
    // loaded machine.
    assert!(
        slowest < CONNECT_TIMEOUT * 5,
        "the last of {STREAMS} waiting streams failed after {slowest:?} (connect timeout {CONNECT_TIMEOUT:?})"
    );

    // The upstream comes back: the same listener starts accepting and serving h2c.
    let socket = black_hole
        .remove(0)
        .downcast::<socket2::Socket>()
        .expect("the black hole's listener comes first");
    drop(black_hole);
    let listener = std::net::TcpListener::from(*socket);
    listener.set_nonblocking(true).expect("non-blocking");
    let listener = TcpListener::from_std(listener).expect("a tokio listener");
    serve_http(listener, |_req| async {
        Response::new(Full::new(Bytes::from_static(b"back")))
    });
    // The queue the black hole filled drains as the server accepts; a connect sent while it is
    // still full has its SYN dropped and retried a second later — past the 1 s connect timeout,
    // a 504 that has nothing to do with the pool. Wait until a connect completes at once.
    within("the upstream accepting again", async {
        loop {
            let attempt = tokio::net::TcpStream::connect(upstream);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), attempt).await {
                return;
            }
        }
    })
    .await;
    let mut client = client;
    let resp = within(
        "the next stream after the failure",
        client.send_request(h2_get(upstream, "/")),
    )
    .await
    .expect("a response");
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "a new connect attempt, not the cached failure"
    );
    assert_eq!(collect_body(resp.into_body()).await.0, "back");
}
