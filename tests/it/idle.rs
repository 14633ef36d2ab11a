//! Idle HTTP/1 keep-alive client connections against slow request heads: an idle connection
//! lives for `--idle-timeout` (application pools reuse connections idle for minutes), while a
//! head whose first byte arrived must be complete within `--header-read-timeout`, after an idle
//! period too. A drain still closes idle connections at once.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::support::metrics::{metric, scrape};
use crate::support::process::spawn_stitch;
use crate::support::upstream::{FIXED_BODY, HttpUpstream};
use crate::support::wire::Wire;
use crate::support::{DEADLINE, Loopback, eventually};

/// One request on `wire` and its `200`.
async fn request_ok(wire: &mut Wire, up: &HttpUpstream, path: &str) {
    wire.send(format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr).as_bytes())
        .await;
    let resp = wire.read_response(false).await;
    assert_eq!(resp.status, 200, "{path}");
    assert_eq!(resp.text(), FIXED_BODY, "{path}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_header_read_timeout_and_serves_again() {
    let up = HttpUpstream::start().await;
    let header_read_timeout = Duration::from_secs(1);
    let stitch = Loopback::to(up.addr)
        .with(|s| {
            s.header_read_timeout = header_read_timeout;
            s.idle_timeout = Duration::from_secs(60);
        })
        .start()
        .await;
    let mut wire = Wire::connect(stitch.inbound).await;
    request_ok(&mut wire, &up, "/first").await;
    // Idle for well over the head deadline, as a client pool's connection is between uses.
    tokio::time::sleep(header_read_timeout * 5 / 2).await;
    request_ok(&mut wire, &up, "/after-idling").await;
    let targets: Vec<_> = up.recorded().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/first", "/after-idling"]);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let up = HttpUpstream::start().await;
    let header_read_timeout = Duration::from_secs(1);
    let idle_timeout = Duration::from_secs(3);
    let stitch = Loopback::to(up.addr)
        .with(|s| {
            s.header_read_timeout = header_read_timeout;
            s.idle_timeout = idle_timeout;
        })
        .start()
        .await;
    let mut wire = Wire::connect(stitch.inbound).await;
    request_ok(&mut wire, &up, "/").await;
    let idle_since = Instant::now();
    // Bounded far below the 1 h default: only the configured 3 s can close it this early.
    wire.expect_closed_within(
        idle_timeout + DEADLINE,
        "an idle keep-alive connection is closed at the idle timeout",
    )
    .await;
    let took = idle_since.elapsed();
    // The idle timer started when stitch began waiting, a moment before `idle_since`; twice
    // the head deadline tells the two timeouts apart with room to spare.
    assert!(
        took >= header_read_timeout * 2,
        "closed after {took:?} idle: that is the header-read timeout, not the idle timeout"
    );
}

#[tokio::test]
async fn a_head_trickled_after_an_idle_period_is_closed_at_the_header_read_timeout() {
    let up = HttpUpstream::start().await;
    let header_read_timeout = Duration::from_secs(1);
    let idle_timeout = Duration::from_secs(60);
    let stitch = Loopback::to(up.addr)
        .with(|s| {
            s.header_read_timeout = header_read_timeout;
            s.idle_timeout = idle_timeout;
        })
        .start()
        .await;
    let mut wire = Wire::connect(stitch.inbound).await;
    request_ok(&mut wire, &up, "/first").await;
    tokio::time::sleep(header_read_timeout * 3 / 2).await;
    // Then a head that never ends: a header line every 200 ms, so the connection is never
    // silent for long, only never finished.
    let started = Instant::now();
    wire.send(format!("GET /trickled HTTP/1.1\r\nHost: {}\r\n", up.addr).as_bytes())
        .await;
    let trickle = async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wire
                .stream
                .write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    };
    // Far below the idle timeout: only the head deadline can end it this early.
    tokio::time::timeout(idle_timeout / 4, trickle)
        .await
        .expect("stitch must close a head unfinished at the header-read timeout after idling");
    let took = started.elapsed();
    assert!(
        took >= header_read_timeout,
        "closed {took:?} after the head began, before its deadline"
    );
    let targets: Vec<_> = up.recorded().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/first"], "the unfinished head reached the app");
}

#[tokio::test]
async fn a_drain_closes_idle_keep_alive_connections_at_once() {
    let up = HttpUpstream::start().await;
    let mut stitch = Loopback::to(up.addr)
        .with(|s| {
            s.idle_timeout = Duration::from_secs(3600);
            s.drain_timeout = Duration::from_secs(120);
        })
        .start()
        .await;
    let mut wire = Wire::connect(stitch.inbound).await;
    request_ok(&mut wire, &up, "/").await;
    stitch.shutdown.trigger();
    // Far below both the idle timeout and the drain deadline: an idle connection has nothing
    // to finish, so the drain closes it and is done.
    wire.expect_closed_within(
        Duration::from_secs(5),
        "the drain closes an idle connection",
    )
    .await;
    stitch
        .run_returns("run() to return once the idle connection is closed")
        .await;
}

#[tokio::test]
async fn sigterm_with_an_idle_keep_alive_connection_exits_zero_promptly() {
    let up = HttpUpstream::start().await;
    let mut stitch = spawn_stitch(
        up.addr,
        &["--idle-timeout", "1h", "--drain-timeout", "120s"],
    )
    .await;
    let mut wire = Wire::connect(stitch.inbound).await;
    request_ok(&mut wire, &up, "/").await;
    stitch.terminate();
    // Well under the drain deadline: the idle connection has nothing to finish.
    wire.expect_closed_within(DEADLINE, "SIGTERM closes the idle keep-alive connection")
        .await;
    let code = stitch.wait_exit(DEADLINE).await;
    assert_eq!(code, Some(0), "a drained shutdown exits 0");
}

/// At the connection cap, a client that arrives makes room: keep-alive connections idle for a
/// while (here two, filling `max_connections: 2`, under the default hour of idle timeout) are
/// closed so it is served at once instead of waiting in the backlog for an hour.
#[tokio::test]
async fn a_client_at_the_cap_closes_connections_idle_long_enough_and_is_served() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr)
        .with(|s| s.max_connections = 2)
        .start()
        .await;
    let mut idle = [
        Wire::connect(stitch.inbound).await,
        Wire::connect(stitch.inbound).await,
    ];
    for (i, wire) in idle.iter_mut().enumerate() {
        request_ok(wire, &up, &format!("/pool-{i}")).await;
    }
    // Idle for longer than `proxy::cap::IDLE_ENOUGH` (1 s), as a pool's spare connection is.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut third = Wire::connect(stitch.inbound).await;
    tokio::time::timeout(DEADLINE, request_ok(&mut third, &up, "/third"))
        .await
        .expect("the third client is served once the idle connections made room");
    for wire in &mut idle {
        wire.expect_closed_within(DEADLINE, "an idle connection made room")
            .await;
    }
}

/// Connections in steady use are not closed for room: a pool sending every 100 ms is never
/// idle for `IDLE_ENOUGH`, so a third client at `max_connections: 2` waits while they work,
/// and is served once one of them leaves.
#[tokio::test]
async fn connections_in_use_are_not_closed_for_room_and_the_waiting_client_is_served_later() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr)
        .with(|s| s.max_connections = 2)
        .start()
        .await;
    let mut busy = [
        Wire::connect(stitch.inbound).await,
        Wire::connect(stitch.inbound).await,
    ];
    for wire in &mut busy {
        request_ok(wire, &up, "/warm").await;
    }
    let mut third = Wire::connect(stitch.inbound).await;
    third
        .send(format!("GET /third HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr).as_bytes())
        .await;
    // Two and a half seconds of steady use: room is asked for every second meanwhile.
    for round in 0..25 {
        for wire in &mut busy {
            request_ok(wire, &up, &format!("/busy-{round}")).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !up.recorded().iter().any(|r| r.target == "/third"),
        "the third client was served while both permits were in use"
    );
    drop(busy);
    let resp = tokio::time::timeout(DEADLINE, third.read_response(false))
        .await
        .expect("the third client is served once a connection left");
    assert_eq!(resp.status, 200);
}

/// How many inbound connections stitch has parked (`proxy::park`).
async fn parked(admin: std::net::SocketAddr) -> f64 {
    metric(
        &scrape(admin).await,
        "stitch_idle_parked_connections",
        &[("direction", "inbound")],
    )
}

/// An idle keep-alive connection leaves its task for the worker's lot after
/// `--idle-park-after`; a client that then sends — here two pipelined requests at once — is
/// served as before, the connection parks again, and every byte it sent is counted once.
#[tokio::test]
async fn an_idle_connection_is_parked_then_served_again_with_every_byte_counted() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let mut wire = Wire::connect(stitch.inbound).await;
    let first = format!("GET /first HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr);
    wire.send(first.as_bytes()).await;
    assert_eq!(wire.read_response(false).await.status, 200);
    eventually("the idle connection parked", async || {
        parked(stitch.admin).await == 1.0
    })
    .await;
    let pipelined = format!(
        "GET /second HTTP/1.1\r\nHost: {0}\r\n\r\nGET /third HTTP/1.1\r\nHost: {0}\r\n\r\n",
        up.addr
    );
    wire.send(pipelined.as_bytes()).await;
    for _ in 0..2 {
        let resp = wire.read_response(false).await;
        assert_eq!((resp.status, resp.text().as_str()), (200, FIXED_BODY));
    }
    let targets: Vec<_> = up.recorded().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/first", "/second", "/third"]);
    eventually("the connection parked again", async || {
        parked(stitch.admin).await == 1.0
    })
    .await;
    drop(wire);
    let sent = (first.len() + pipelined.len()) as f64;
    eventually(
        "the connection closed, its bytes counted once",
        async || {
            let text = scrape(stitch.admin).await;
            let inbound = [("direction", "inbound")];
            metric(&text, "stitch_idle_parked_connections", &inbound) == 0.0
                && metric(&text, "stitch_open_connections", &inbound) == 0.0
                && metric(&text, "stitch_request_bytes_total", &inbound) == sent
        },
    )
    .await;
}

/// `--idle-park-after` not shorter than `--idle-timeout` turns parking off: the idle
/// connection keeps its task, and serves again all the same.
#[tokio::test]
async fn parking_is_off_when_it_would_come_after_the_idle_timeout() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr)
        .with(|s| {
            s.idle_timeout = Duration::from_secs(60);
            s.idle_park_after = Duration::from_secs(60);
        })
        .start()
        .await;
    let mut wire = Wire::connect(stitch.inbound).await;
    request_ok(&mut wire, &up, "/first").await;
    // Ten times the default `--idle-park-after`, watched throughout.
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        assert_eq!(parked(stitch.admin).await, 0.0, "parked with parking off");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    request_ok(&mut wire, &up, "/second").await;
}
