//! Protocol detection: read the client's first bytes under a timeout and classify them, then
//! hand the bytes back to whoever serves the connection ([`super::io::ProxyIo::replaying`]
//! replays them).
//!
//! - the HTTP/2 connection preface (RFC 9113 §3.4) → [`Protocol::Http2`] (h2c, gRPC);
//! - a parsable HTTP/1.x request line → [`Protocol::Http1`];
//! - anything else, or nothing before the timeout (server-speaks-first protocols such as SMTP
//!   or MySQL wait for a banner) → [`Protocol::Opaque`].
//!
//! Availability over certainty (as linkerd does): when in doubt the bytes pass through opaque.
//! Reading (rather than `MSG_PEEK`) lets one async read wait for more bytes without spinning;
//! the bytes are replayed unchanged, so no byte is lost or reordered.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The HTTP/2 client connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// HTTP/1.0 or HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
    /// Not HTTP (or undecidable): bytes are copied untouched.
    Opaque,
}

impl Protocol {
    /// Metric/log label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "h2",
            Protocol::Opaque => "opaque",
        }
    }
}

/// Reads from `io` until the protocol is known, `max_bytes` were read, the peer stopped
/// sending (EOF), or `timeout` passed. Returns the protocol and every byte read.
pub(crate) async fn detect<I>(
    io: &mut I,
    timeout: Duration,
    max_bytes: usize,
) -> io::Result<(Protocol, BytesMut)>
where
    I: AsyncRead + Unpin,
{
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 1024];
    let reading = async {
        loop {
            if let Some(protocol) = classify(&buf) {
                return Ok::<_, io::Error>(protocol);
            }
            if buf.len() >= max_bytes {
                return Ok(Protocol::Opaque);
            }
            let want = chunk.len().min(max_bytes - buf.len());
            let n = io.read(&mut chunk[..want]).await?;
            if n == 0 {
                return Ok(classify(&buf).unwrap_or(Protocol::Opaque));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let protocol = match tokio::time::timeout(timeout, reading).await {
        Ok(result) => result?,
        Err(_elapsed) => Protocol::Opaque,
    };
    Ok((protocol, buf))
}

/// Classifies a prefix, or `None` if more bytes are needed to decide.
pub(crate) fn classify(buf: &[u8]) -> Option<Protocol> {
    if buf.is_empty() {
        return None;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Protocol::Http2);
    }
    let line_end = buf.iter().position(|&b| b == b'\n')?;
    Some(if is_http1_request_line(&buf[..=line_end]) {
        Protocol::Http1
    } else {
        Protocol::Opaque
    })
}

/// `method SP request-target SP HTTP/1.x CRLF` (RFC 9112 §3), checked by httparse: with no
/// header slots it parses the request line and reports the head as partial.
fn is_http1_request_line(line: &[u8]) -> bool {
    let mut no_headers = [httparse::EMPTY_HEADER; 0];
    let mut req = httparse::Request::new(&mut no_headers);
    matches!(req.parse(line), Ok(httparse::Status::Partial)) && req.version.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::io::ProxyIo;
    use tokio::io::AsyncWriteExt;

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

    #[tokio::test]
    async fn silence_times_out_as_opaque_and_keeps_nothing() {
        let (mut client, _server) = tokio::io::duplex(64);
        let (protocol, buf) = detect(&mut client, Duration::from_millis(20), 1024)
            .await
            .unwrap();
        assert_eq!(protocol, Protocol::Opaque);
        assert!(buf.is_empty());
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
        let (protocol, buf) = detect(&mut a, Duration::from_secs(5), 1024).await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
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
        let (protocol, buf) = detect(&mut a, Duration::from_secs(5), 4096).await.unwrap();
        assert_eq!(protocol, Protocol::Opaque);
        assert_eq!(buf.len(), 4096);
    }
}
