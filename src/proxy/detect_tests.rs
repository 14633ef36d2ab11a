use super::*;
use crate::proxy::io::ProxyIo;
use tokio::io::AsyncWriteExt;

/// Generous limits: only the bytes can decide within them.
const PATIENT: DetectLimits = DetectLimits {
    silence: Duration::from_secs(3600),
    head: Duration::from_secs(3600),
    max_bytes: 1024,
};

fn limits(silence_ms: u64, head_ms: u64, max_bytes: usize) -> DetectLimits {
    DetectLimits {
        silence: Duration::from_millis(silence_ms),
        head: Duration::from_millis(head_ms),
        max_bytes,
    }
}

#[test]
fn prefixes_classify_per_protocol() {
    let cases: &[(&[u8], Option<Protocol>)] = &[
        (b"", None),
        (b"PRI * HTTP/2.0\r\n", None),
        (H2_PREFACE, Some(Protocol::Http2)),
        (b"GET / HTTP/1.1\r\n", Some(Protocol::Http1)),
        (b"GET /a?b=c HTTP/1.0\r\nHost: x\r\n", Some(Protocol::Http1)),
        (b"OPTIONS * HTTP/1.1\r\n", Some(Protocol::Http1)),
        (
            b"CONNECT example.com:443 HTTP/1.1\r\n",
            Some(Protocol::Http1),
        ),
        (b"GET / HTTP/1.1", None),
        (b"GET / HTTP/2.0\r\n", Some(Protocol::Opaque)),
        (b"EHLO mail.example.com\r\n", Some(Protocol::Opaque)),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n",
            Some(Protocol::Opaque),
        ),
        (b"hello\n", Some(Protocol::Opaque)),
        (b"PRX", None),
    ];
    for (input, want) in cases {
        assert_eq!(
            classify(input),
            *want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn the_first_byte_that_cannot_be_http_decides() {
    let opaque: &[&[u8]] = &[
        b"\x16",                   // a TLS handshake record
        b"\x00\x00\x00\x08\x04",   // a Postgres SSLRequest's length
        b"\x00\x00\x00\x2a\x00",   // a Kafka request's length
        b"*1\r",                   // Redis RESP
        b"GET\t",                  // a tab where the method's SP belongs
        b"GET  ",                  // an empty request target
        b"GET / HTTP/2",           // HTTP/1 has no version 2 (and this is not the preface)
        b"GET / HTTP/1.2",         // nor 1.2
        b"GET / HTTP/1.1\r\r",     // CR without LF
        b"GET / HTTP/1.1x",        // junk after the version
        b"\r\r",                   // a broken empty line before the request
        b"GET /\xff HTTP/1.1\r\n", // a target that is not UTF-8 (httparse's final check)
    ];
    for input in opaque {
        assert_eq!(
            classify(input),
            Some(Protocol::Opaque),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    let undecided: &[&[u8]] = &[
        b"G",
        b"GET",
        b"GET ",
        b"GET /",
        b"GET / H",
        b"M-SEARCH * HTTP/1.",
        b"\r\n\r\nGE",
        b"PRI * HTTP/2.0\r\n\r\nSM\r",
    ];
    for input in undecided {
        assert_eq!(
            classify(input),
            None,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn the_head_is_complete_at_its_empty_line() {
    let complete: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.0\nHost: x\n\n",
        b"\r\nPOST /p HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
    ];
    for input in complete {
        assert_eq!(
            Sniffer::default().feed(input),
            Verdict::Http1Head,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    let mut sniffer = Sniffer::default();
    assert_eq!(
        sniffer.feed(b"GET / HTTP/1.1\r\nHost: x\r\n"),
        Verdict::NeedMore
    );
    assert_eq!(sniffer.cut_short(), Outcome::Http1);
}

#[test]
fn feeding_byte_by_byte_decides_like_feeding_at_once() {
    let inputs: &[&[u8]] = &[
        b"GET /x HTTP/1.1\r\nHost: h\r\nX: y\r\n\r\n",
        H2_PREFACE,
        b"PRI * HTTP/2.0\r\n\r\nSX",
        b"\x16\x03\x01",
        b"GET /\xff HTTP/1.1\r\n",
        b"\nGET / HTTP/1.0\n\n",
        b"GET / HTTP/1.1\r\nA: b\r\r\n",
    ];
    for input in inputs {
        let at_once = Sniffer::default().feed(input);
        let mut sniffer = Sniffer::default();
        let mut verdict = Verdict::NeedMore;
        for end in 1..=input.len() {
            verdict = sniffer.feed(&input[..end]);
            if verdict != Verdict::NeedMore {
                break;
            }
        }
        assert_eq!(verdict, at_once, "{:?}", String::from_utf8_lossy(input));
    }
}

#[tokio::test(start_paused = true)]
async fn silence_times_out_as_opaque_and_keeps_nothing() {
    let (mut client, _server) = tokio::io::duplex(64);
    let (outcome, buf) = detect(&mut client, limits(20, 3_600_000, 1024))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Silent);
    assert_eq!(outcome.protocol(), Some(Protocol::Opaque));
    assert!(buf.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_tls_client_hello_is_opaque_without_waiting() {
    let (mut a, mut b) = tokio::io::duplex(64);
    // The writer stays open: only the bytes can decide, and time would otherwise run out (a
    // paused clock jumps straight to the next timer, so waiting would show as a timeout).
    b.write_all(b"\x16\x03\x01\x02\x00\x01").await.unwrap();
    let (outcome, buf) = detect(&mut a, PATIENT).await.unwrap();
    assert_eq!(outcome, Outcome::Opaque);
    assert_eq!(&buf[..], b"\x16\x03\x01\x02\x00\x01");
    drop(b);
}

#[tokio::test(start_paused = true)]
async fn a_trickled_http_prefix_is_held_until_the_head_deadline() {
    let (mut a, mut b) = tokio::io::duplex(64);
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for byte in b"GET /slow HTTP/1.1\r\nHost: x\r\n" {
            if b.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    // Silence would end after 1 s; the bytes keep it HTTP until the 10 s head deadline.
    let (outcome, buf) = detect(&mut a, limits(1_000, 10_000, 1024)).await.unwrap();
    assert_eq!(outcome, Outcome::HeadTimeout { http1: true });
    assert_eq!(outcome.protocol(), None);
    assert!(started.elapsed() >= Duration::from_secs(10));
    // One byte a second: about ten of them arrived.
    assert!(buf.starts_with(b"GET /slow"), "{buf:?}");
    trickle.abort();
}

#[tokio::test(start_paused = true)]
async fn a_stalled_preface_gets_no_http1_answer() {
    let (mut a, mut b) = tokio::io::duplex(64);
    b.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let (outcome, _) = detect(&mut a, limits(1_000, 5_000, 1024)).await.unwrap();
    assert_eq!(outcome, Outcome::HeadTimeout { http1: false });
    drop(b);
}

#[tokio::test]
async fn split_request_line_is_reassembled_and_replayed() {
    let (mut a, mut b) = tokio::io::duplex(64);
    let writer = tokio::spawn(async move {
        b.write_all(b"GET /x HT").await.unwrap();
        tokio::task::yield_now().await;
        b.write_all(b"TP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
        b
    });
    let (outcome, buf) = detect(&mut a, PATIENT).await.unwrap();
    assert_eq!(outcome.protocol(), Some(Protocol::Http1));
    let _b = writer.await.unwrap();
    let mut replay = ProxyIo::new(a).replaying(buf);
    let mut got = vec![0u8; 9];
    replay.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"GET /x HT");
}

#[tokio::test]
async fn an_endless_line_is_bounded() {
    let (mut a, mut b) = tokio::io::duplex(1 << 16);
    b.write_all(&[b'x'; 5000]).await.unwrap();
    let (outcome, buf) = detect(&mut a, limits(5_000, 5_000, 4096)).await.unwrap();
    assert_eq!(outcome.protocol(), Some(Protocol::Opaque));
    assert_eq!(buf.len(), 4096);
}

#[tokio::test]
async fn eof_before_a_decision_passes_opaque_and_after_a_request_line_http1() {
    for (sent, want) in [
        (&b"GE"[..], Outcome::Opaque),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", Outcome::Http1),
    ] {
        let (mut a, mut b) = tokio::io::duplex(64);
        b.write_all(sent).await.unwrap();
        drop(b);
        let (outcome, buf) = detect(&mut a, PATIENT).await.unwrap();
        assert_eq!(outcome, want, "{:?}", String::from_utf8_lossy(sent));
        assert_eq!(&buf[..], sent);
    }
}

#[tokio::test]
async fn a_stalled_http1_client_reads_408_then_the_end() {
    let (mut stitch_side, mut client) = tokio::io::duplex(1024);
    client.write_all(b"GET /sl").await.unwrap();
    close_stalled(&mut stitch_side, true).await;
    drop(stitch_side);
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, REQUEST_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn the_prefix_kept_for_the_connection_life_is_no_larger_than_its_bytes() {
    let (mut a, mut b) = tokio::io::duplex(4096);
    let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    b.write_all(head).await.unwrap();
    let (outcome, buf) = detect(&mut a, PATIENT).await.unwrap();
    assert_eq!(outcome, Outcome::Http1);
    assert_eq!(&buf[..], head);
    // Each read reserves READ_CHUNK; the connection replays (and holds) the prefix, so the
    // spare room must have been given back.
    assert!(
        buf.capacity() - buf.len() <= SPARE_KEPT,
        "capacity {} for {} bytes",
        buf.capacity(),
        buf.len()
    );
    drop(b);
}
