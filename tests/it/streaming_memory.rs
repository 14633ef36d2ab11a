//! Bodies are streamed, never buffered: a 1 GiB upload and a 1 GiB download through the real
//! stitch binary keep its peak resident memory (`VmHWM`) under 32 MiB.
//!
//! Both ends are raw sockets writing and discarding a generated pattern, so the test's own
//! cost stays small and the only HTTP stack the bytes cross is stitch's.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::AsyncWriteExt;

use crate::support;
use crate::support::process::spawn_stitch;
use crate::support::wire::Wire;

/// Bytes moved in each direction.
const BODY_BYTES: u64 = 1 << 30;
/// The bound on stitch's peak resident set size.
const PEAK_RSS_LIMIT_KIB: u64 = 32 * 1024;
const BLOCK: usize = 256 * 1024;

/// An upstream that discards upload bodies (`POST`, answering with the count) and serves
/// [`BODY_BYTES`] of generated data for anything else.
async fn bulk_upstream() -> SocketAddr {
    let (listener, addr) = support::listener().await;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut wire = Wire::new(stream);
                while let Ok(Some(head)) = wire
                    .read_head()
                    .await
                    .map(|h| h.map(|h| String::from_utf8_lossy(&h).to_ascii_lowercase()))
                {
                    if head.starts_with("post") {
                        let len: u64 = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if wire.discard_n(len).await.is_err() {
                            return;
                        }
                        let body = len.to_string();
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if wire.stream.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    } else {
                        let head =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {BODY_BYTES}\r\n\r\n");
                        if wire.stream.write_all(head.as_bytes()).await.is_err()
                            || write_pattern(&mut wire.stream).await.is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn write_pattern(stream: &mut tokio::net::TcpStream) -> std::io::Result<()> {
    let block: Vec<u8> = (0..BLOCK).map(|i| (i % 253) as u8).collect();
    let mut left = BODY_BYTES;
    while left > 0 {
        let n = (BLOCK as u64).min(left) as usize;
        stream.write_all(&block[..n]).await?;
        left -= n as u64;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_and_download_keep_peak_rss_under_32_mib() {
    let up = bulk_upstream().await;
    let stitch = spawn_stitch(up, &[]).await;
    let baseline = stitch.peak_rss_kib();

    let started = Instant::now();
    let mut wire = Wire::connect(stitch.inbound).await;
    wire.send(
        format!("POST /upload HTTP/1.1\r\nHost: {up}\r\nContent-Length: {BODY_BYTES}\r\n\r\n")
            .as_bytes(),
    )
    .await;
    tokio::time::timeout(
        std::time::Duration::from_secs(300),
        write_pattern(&mut wire.stream),
    )
    .await
    .expect("upload finishes")
    .expect("upload writes");
    let resp = wire.read_response(false).await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.text(),
        BODY_BYTES.to_string(),
        "the upstream got every byte"
    );
    let upload_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    wire.send(format!("GET /download HTTP/1.1\r\nHost: {up}\r\n\r\n").as_bytes())
        .await;
    let head = tokio::time::timeout(std::time::Duration::from_secs(60), wire.read_head())
        .await
        .expect("download head")
        .expect("read head")
        .expect("a head");
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains(&format!("content-length: {BODY_BYTES}")),
        "length kept: {head}"
    );
    tokio::time::timeout(
        std::time::Duration::from_secs(300),
        wire.discard_n(BODY_BYTES),
    )
    .await
    .expect("download finishes")
    .expect("download reads");
    let download_secs = started.elapsed().as_secs_f64();

    let peak = stitch.peak_rss_kib();
    eprintln!(
        "stitch peak RSS {peak} KiB (at start {baseline} KiB); 1 GiB up in {upload_secs:.1}s, down in {download_secs:.1}s"
    );
    assert!(
        peak < PEAK_RSS_LIMIT_KIB,
        "peak RSS {peak} KiB exceeds {PEAK_RSS_LIMIT_KIB} KiB: bodies are being buffered"
    );
}

/// How much an endless upstream body may get ahead of a client that stopped reading: the sum
/// of flow-control windows and socket buffers on both sides, far below "everything".
const BACKPRESSURE_LIMIT: u64 = 64 * 1024 * 1024;

/// Waits until the upstream stops producing (no progress for a second) and returns the total;
/// fails as soon as the total passes [`BACKPRESSURE_LIMIT`].
async fn produced_plateau(up: &support::upstream::HttpUpstream) -> u64 {
    support::within("the upstream to be held back", async {
        let mut last = u64::MAX;
        loop {
            let now = up.produced();
            assert!(
                now < BACKPRESSURE_LIMIT,
                "{now} bytes produced for a client that reads nothing: no backpressure"
            );
            if now == last && now > 0 {
                return now;
            }
            last = now;
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    })
    .await
}

#[tokio::test]
async fn h1_slow_reader_holds_back_the_upstream() {
    use http_body_util::BodyExt;
    let up = support::upstream::HttpUpstream::start().await;
    let stitch = support::Loopback::to(up.addr).start().await;
    let mut client = support::h1_client(stitch.inbound).await;
    let resp = support::within(
        "response head",
        client.send_request(support::get(up.addr, "/infinite")),
    )
    .await
    .expect("response");
    let mut body = resp.into_body();
    let first = support::within("first frame", body.frame())
        .await
        .expect("a frame")
        .expect("no error");
    assert!(first.is_data());
    let held = produced_plateau(&up).await;
    eprintln!("h1: upstream held back after {held} bytes");
}

#[tokio::test]
async fn h2_slow_reader_holds_back_the_upstream_via_flow_control() {
    use http_body_util::BodyExt;
    let up = support::upstream::HttpUpstream::start().await;
    let stitch = support::Loopback::to(up.addr).start().await;
    let (mut client, _conn) = support::h2_client(stitch.inbound).await;
    let resp = support::within(
        "response head",
        client.send_request(support::h2_get(up.addr, "/infinite")),
    )
    .await
    .expect("response");
    let mut body = resp.into_body();
    let first = support::within("first frame", body.frame())
        .await
        .expect("a frame")
        .expect("no error");
    assert!(first.is_data());
    let held = produced_plateau(&up).await;
    eprintln!("h2: upstream held back after {held} bytes");
    // The connection is still alive: another stream on it completes.
    let resp = support::within(
        "second stream",
        client.send_request(support::h2_get(up.addr, "/")),
    )
    .await
    .expect("response");
    assert_eq!(
        support::collect_body(resp.into_body()).await.0,
        support::upstream::FIXED_BODY
    );
}
