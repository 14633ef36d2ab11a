//! Malformed and abusive clients: ambiguous framing (CL+TE, conflicting Content-Length),
//! slowloris heads, oversized heads, the loop guard, and the connection cap. None of these may
//! reach the upstream ambiguously or pin stitch.

use std::time::Duration;

use crate::support;
use crate::support::upstream::{FIXED_BODY, HttpUpstream};
use crate::support::wire::{Wire, roundtrip};
use crate::support::{Loopback, within};

/// A request whose two framings disagree: by Content-Length the body is `0\r\n\r\n` and a
/// second request `GET /smuggled` follows; by chunked the body is empty and `GET /smuggled`
/// would be read as the next request. A proxy that picks one framing and forwards both
/// headers lets an upstream pick the other (request smuggling).
fn cl_te_request(host: std::net::SocketAddr) -> Vec<u8> {
    format!(
        "POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_never_forwarded_ambiguously() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let mut wire = Wire::connect(stitch.inbound).await;
    wire.send(&cl_te_request(up.addr)).await;
    let first = wire.read_response(false).await;
    // RFC 9112 §6.3 allows either a 400, or chunked framing followed by closing the
    // connection; both must keep /smuggled from ever being served.
    if first.status == 400 {
        wire.expect_closed_within(support::DEADLINE, "after a 400 for CL+TE")
            .await;
    } else {
        assert_eq!(first.status, 200, "unexpected status {}", first.status);
        wire.expect_closed_within(
            support::DEADLINE,
            "CL+TE handled as chunked must close the connection",
        )
        .await;
    }
    // Prove the upstream is idle now: a fresh request is the next thing it records.
    let check = roundtrip(
        stitch.inbound,
        format!("GET /check HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr).as_bytes(),
    )
    .await;
    assert_eq!(check.status, 200);
    let recorded = up.wait_for(1).await;
    assert_eq!(recorded.last().map(|r| r.target.as_str()), Some("/check"));
    for r in &recorded {
        assert_ne!(
            r.target, "/smuggled",
            "a smuggled request reached the upstream"
        );
        assert!(
            !(r.headers.contains_key("content-length")
                && r.headers.contains_key("transfer-encoding")),
            "both framing headers were forwarded: {:?}",
            r.headers
        );
    }
}

#[tokio::test]
async fn conflicting_content_lengths_are_rejected_with_400() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    let resp = roundtrip(
        stitch.inbound,
        format!("POST /echo HTTP/1.1\r\nHost: {}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", up.addr).as_bytes(),
    )
    .await;
    assert_eq!(resp.status, 400);
    assert!(
        up.recorded().is_empty(),
        "nothing forwarded: {:?}",
        up.recorded()
    );
}

#[tokio::test]
async fn slowloris_head_is_cut_off_after_the_header_read_timeout() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr)
        .with(|s| s.header_read_timeout = Duration::from_millis(500))
        .start()
        .await;
    let mut wire = Wire::connect(stitch.inbound).await;
    wire.send(format!("GET / HTTP/1.1\r\nHost: {}\r\n", up.addr).as_bytes())
        .await;
    // Keep trickling header lines so the connection is never idle, only never finished.
    let trickle = async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if tokio::io::AsyncWriteExt::write_all(
                &mut wire.stream,
                format!("X-Slow-{i}: a\r\n").as_bytes(),
            )
            .await
            .is_err()
            {
                return;
            }
        }
    };
    // Bounded well below the 10 s default, so only the configured 500 ms can satisfy it.
    tokio::time::timeout(Duration::from_secs(5), trickle)
        .await
        .expect("stitch must drop a head that is still unfinished after header_read_timeout");
    assert!(up.recorded().is_empty(), "an unfinished head was forwarded");
}

#[tokio::test]
async fn too_many_header_fields_are_refused() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr)
        .with(|s| s.max_headers = 20)
        .start()
        .await;
    let mut req = format!("GET / HTTP/1.1\r\nHost: {}\r\n", up.addr);
    for i in 0..40 {
        req.push_str(&format!("X-Field-{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let resp = roundtrip(stitch.inbound, req.as_bytes()).await;
    assert!(matches!(resp.status, 400 | 431), "status {}", resp.status);
    assert!(up.recorded().is_empty(), "the oversized head was forwarded");
    // Under the limit still works.
    let ok = roundtrip(
        stitch.inbound,
        format!("GET / HTTP/1.1\r\nHost: {}\r\nX-One: 1\r\n\r\n", up.addr).as_bytes(),
    )
    .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn header_larger_than_the_limit_is_refused() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr)
        .with(|s| s.max_header_bytes = 8 * 1024)
        .start()
        .await;
    let big = "x".repeat(16 * 1024);
    let mut wire = Wire::connect(stitch.inbound).await;
    wire.send(
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nX-Big: {big}\r\n\r\n",
            up.addr
        )
        .as_bytes(),
    )
    .await;
    match within("a refusal", wire.try_read_response(false)).await {
        Ok(resp) => assert!(matches!(resp.status, 400 | 431), "status {}", resp.status),
        // Closing without a response is also a refusal, as long as nothing is forwarded.
        Err(e) => eprintln!("connection closed without a response: {e}"),
    }
    assert!(up.recorded().is_empty(), "the oversized head was forwarded");
    let ok = roundtrip(
        stitch.inbound,
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nX-Small: {}\r\n\r\n",
            up.addr,
            "y".repeat(4 * 1024)
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(ok.status, 200, "a head under the limit passes");
}

#[tokio::test]
async fn request_addressed_to_stitch_itself_is_refused_not_looped() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::new().start().await;
    let own = stitch.outbound;
    for req in [
        format!("GET http://{own}/loop HTTP/1.1\r\nHost: {own}\r\n\r\n"),
        format!("GET /loop HTTP/1.1\r\nHost: {own}\r\n\r\n"),
        format!("GET /loop HTTP/1.1\r\nHost: {}\r\n\r\n", stitch.inbound),
    ] {
        let resp = roundtrip(own, req.as_bytes()).await;
        assert!(
            resp.status >= 400,
            "a self-addressed request must be refused, got {}",
            resp.status
        );
    }
    // stitch is still healthy and still forwards real destinations.
    let ok = roundtrip(
        own,
        format!("GET /fine HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr).as_bytes(),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.text(), FIXED_BODY);
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr)
        .with(|s| s.max_connections = 1)
        .start()
        .await;
    let mut first = Wire::connect(stitch.inbound).await;
    first
        .send(format!("GET /first HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr).as_bytes())
        .await;
    assert_eq!(first.read_response(false).await.status, 200);
    // `first` stays open (keep-alive), holding the only slot.
    let mut second = Wire::connect(stitch.inbound).await;
    second
        .send(format!("GET /second HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr).as_bytes())
        .await;
    let early =
        tokio::time::timeout(Duration::from_millis(500), second.try_read_response(false)).await;
    assert!(
        early.is_err(),
        "the second connection was served while the cap was reached"
    );
    drop(first);
    let resp = second.read_response(false).await;
    assert_eq!(resp.status, 200, "served once the first connection closed");
    assert_eq!(up.wait_for(2).await[1].target, "/second");
}

#[tokio::test]
async fn malformed_request_head_gets_400() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr).start().await;
    for bad in [
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nNo colon here\r\n\r\n",
            up.addr
        ),
        format!("GET / HTTP/1.1\r\nHost: {}\r\nBad Name: v\r\n\r\n", up.addr),
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nContent-Length: -1\r\n\r\n",
            up.addr
        ),
        format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: gzip\r\n\r\n",
            up.addr
        ),
    ] {
        let mut wire = Wire::connect(stitch.inbound).await;
        wire.send(bad.as_bytes()).await;
        let resp = within("a 400", wire.try_read_response(false)).await;
        let status = resp.map(|r| r.status).unwrap_or_default();
        assert_eq!(status, 400, "for {bad:?}");
    }
    assert!(
        up.recorded().is_empty(),
        "a malformed request was forwarded: {:?}",
        up.recorded()
    );
}

/// Deterministic pseudo-random bytes (xorshift), so a failure replays exactly.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test]
async fn garbage_and_mangled_requests_never_take_stitch_down() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr)
        .with(|s| {
            s.detect_timeout = Duration::from_millis(200);
            s.header_read_timeout = Duration::from_millis(500);
        })
        .start()
        .await;
    let valid = format!(
        "POST /echo HTTP/1.1\r\nHost: {}\r\nContent-Length: 4\r\n\r\nbody",
        up.addr
    )
    .into_bytes();
    let h2_preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for seed in 0..40u64 {
        // Pure noise, noise after a valid request line, a valid request with bytes flipped,
        // and an HTTP/2 preface followed by junk frames.
        inputs.push(noise(seed, 64 + (seed as usize * 37) % 2000));
        let mut after_line = b"GET / HTTP/1.1\r\n".to_vec();
        after_line.extend(noise(seed + 1000, 200));
        inputs.push(after_line);
        let mut flipped = valid.clone();
        for (i, b) in noise(seed + 2000, 3).into_iter().enumerate() {
            let at = (b as usize * 7 + i * 13) % flipped.len();
            flipped[at] ^= b | 1;
        }
        inputs.push(flipped);
        let mut h2 = h2_preface.clone();
        h2.extend(noise(seed + 3000, 300));
        inputs.push(h2);
    }
    for input in &inputs {
        let mut wire = Wire::connect(stitch.inbound).await;
        // The peer may reset the connection mid-write; that is a fine answer to garbage.
        let _ = tokio::io::AsyncWriteExt::write_all(&mut wire.stream, input).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut wire.stream).await;
        // Whatever comes back, the connection must end: no hang.
        wire.expect_closed_within(support::DEADLINE, "a garbage connection must end")
            .await;
    }
    assert!(!stitch.task.is_finished(), "stitch stopped serving");
    let ok = roundtrip(stitch.inbound, &valid).await;
    assert_eq!(
        ok.status,
        200,
        "stitch still serves after {} hostile inputs",
        inputs.len()
    );
    assert_eq!(ok.text(), "body");
}

#[tokio::test]
async fn h2_streams_beyond_the_limit_wait_for_a_free_slot() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr)
        .with(|s| s.h2_max_concurrent_streams = 2)
        .start()
        .await;
    let (client, _conn) = support::h2_client(stitch.inbound).await;
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let mut c = client.clone();
            tokio::spawn(async move { c.send_request(support::h2_get(up.addr, "/slow")).await })
        })
        .collect();
    up.wait_for(2).await;
    let mut c = client.clone();
    let third =
        tokio::spawn(async move { c.send_request(support::h2_get(up.addr, "/third")).await });
    // stitch advertised 2 streams; the client must hold the third back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        up.recorded().len(),
        2,
        "a third stream was opened beyond the advertised limit"
    );
    assert!(!third.is_finished());
    up.open_gate(2);
    let resp = within("third stream once a slot frees", third)
        .await
        .expect("task")
        .expect("response");
    assert_eq!(resp.status(), 200);
    for s in slow {
        assert_eq!(
            within("slow stream", s)
                .await
                .expect("task")
                .expect("response")
                .status(),
            200
        );
    }
}

#[tokio::test]
async fn idle_keep_alive_client_connection_is_closed_after_the_idle_timeout() {
    let up = HttpUpstream::start().await;
    let stitch = Loopback::to(up.addr)
        .with(|s| s.idle_timeout = Duration::from_millis(500))
        .start()
        .await;
    let mut wire = Wire::connect(stitch.inbound).await;
    wire.send(format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr).as_bytes())
        .await;
    assert_eq!(wire.read_response(false).await.status, 200);
    // Bounded well below the 1 h default: only the configured 500 ms can close it this early.
    wire.expect_closed_within(
        Duration::from_secs(5),
        "an idle keep-alive connection must not be kept forever",
    )
    .await;
}
