//! Protocol detection: read the client's first bytes and decide as early as those bytes
//! allow, then hand them back to whoever serves the connection
//! ([`super::io::ProxyIo::replaying`] replays them).
//!
//! Every byte is checked the moment it arrives against the two things an HTTP client can
//! send first: the HTTP/2 connection preface (RFC 9113 §3.4) and an HTTP/1 request line
//! (`method SP request-target SP HTTP/1.x CRLF`, RFC 9112 §3, by httparse's rules, which are
//! hyper's):
//!
//! - the full preface → [`Outcome::Http2`] (h2c, gRPC);
//! - a request line → [`Outcome::Http1`], handed over once the whole request head is in (so
//!   the head's deadline below is one deadline from accept, not one per reader);
//! - the first byte that can belong to neither (a TLS record's `0x16`, a Postgres or Kafka
//!   length's `0x00`, a newline inside a method) → [`Outcome::Opaque`] at once: client-first
//!   binary protocols never wait;
//! - nothing at all within `--detect-timeout` → [`Outcome::Silent`], relayed opaque
//!   (server-speaks-first protocols such as SMTP or MySQL wait for a banner);
//! - bytes that can still become an HTTP request but stop short of a complete head by
//!   `--header-read-timeout` after accept → [`Outcome::HeadTimeout`]: the slowloris guard. The
//!   connection is closed ([`close_stalled`], `408` when the bytes were HTTP/1) and never
//!   reaches the destination.
//!
//! A peer that half-closes before deciding, or an undecided prefix as long as the head limit,
//! is relayed opaque (availability over certainty, as linkerd does; the relay is where it
//! would have gone without stitch). Reading (rather than `MSG_PEEK`) lets one async read wait
//! for more bytes without spinning; the bytes are replayed unchanged, so no byte is lost or
//! reordered. The scan is incremental: every byte is looked at once however the client splits
//! its writes.

use std::io;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// The HTTP/2 client connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The only version prefix httparse (and so hyper) accepts on a request line.
const HTTP1_VERSION: &[u8] = b"HTTP/1.";
/// What a client whose head stalled is told before the connection closes.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
/// Most bytes one read asks for while detecting. They are read straight into the prefix
/// buffer on the heap: a 1 KiB array in this future made every connection's task 1 KiB
/// larger for its whole life (the task is sized for its largest state), detection over or not.
const READ_CHUNK: usize = 1024;
/// A prefix buffer with more spare room than this is copied to one of its own size before it is
/// handed on: the connection keeps it (for the replay) as long as it lives.
const SPARE_KEPT: usize = 64;
/// How long a stalled connection is drained after the `408`, so the client reads the answer
/// instead of a reset caused by its own unread bytes (what nginx calls a lingering close).
const LINGER: Duration = Duration::from_millis(500);

/// What the client speaks, for whoever serves the connection.
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
    /// Log label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "h2",
            Protocol::Opaque => "opaque",
        }
    }
}

/// How detection ended; [`Outcome::as_str`] is the `outcome` label of `stitch_detect_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// An HTTP/1 request head.
    Http1,
    /// The HTTP/2 preface.
    Http2,
    /// Bytes that cannot be HTTP (or an undecided prefix cut short by EOF or the size bound).
    Opaque,
    /// No byte within the detect timeout: a server-speaks-first protocol, relayed opaque.
    Silent,
    /// An HTTP prefix that did not become a complete head within the header-read timeout; the
    /// connection is closed. `http1`: the bytes were an HTTP/1 prefix, so a `408` can be sent.
    HeadTimeout {
        /// Whether an HTTP/1 response can be written (not a partial HTTP/2 preface).
        http1: bool,
    },
}

impl Outcome {
    /// The metric label: `http1`, `h2`, `opaque`, `opaque_silent`, `header_timeout`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Http1 => "http1",
            Outcome::Http2 => "h2",
            Outcome::Opaque => "opaque",
            Outcome::Silent => "opaque_silent",
            Outcome::HeadTimeout { .. } => "header_timeout",
        }
    }

    /// How to serve the connection, or `None` when it must be closed.
    pub(crate) fn protocol(self) -> Option<Protocol> {
        match self {
            Outcome::Http1 => Some(Protocol::Http1),
            Outcome::Http2 => Some(Protocol::Http2),
            Outcome::Opaque | Outcome::Silent => Some(Protocol::Opaque),
            Outcome::HeadTimeout { .. } => None,
        }
    }
}

/// The bounds detection works within.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DetectLimits {
    /// Silence this long from accept means a server-speaks-first protocol (`--detect-timeout`).
    pub silence: Duration,
    /// An HTTP prefix must become a complete head this long after accept
    /// (`--header-read-timeout`).
    pub head: Duration,
    /// Most bytes read (`--max-header-bytes`).
    pub max_bytes: usize,
}

/// Reads from `io` until the outcome is known (see the module doc). Returns it with every
/// byte read.
pub(crate) async fn detect<I>(io: &mut I, limits: DetectLimits) -> io::Result<(Outcome, BytesMut)>
where
    I: AsyncRead + Unpin,
{
    let (outcome, buf) = read_until_decided(io, limits).await?;
    Ok((outcome, fitted(buf)))
}

/// `buf` in an allocation of its own size when reads left it with spare room: a few bytes
/// copied once per connection instead of up to [`READ_CHUNK`] idle bytes held for its life.
fn fitted(buf: BytesMut) -> BytesMut {
    if buf.capacity() - buf.len() > SPARE_KEPT {
        BytesMut::from(&buf[..])
    } else {
        buf
    }
}

/// The read loop of [`detect`].
async fn read_until_decided<I>(io: &mut I, limits: DetectLimits) -> io::Result<(Outcome, BytesMut)>
where
    I: AsyncRead + Unpin,
{
    let accepted = Instant::now();
    let mut buf = BytesMut::new();
    let mut sniffer = Sniffer::default();
    loop {
        match sniffer.feed(&buf) {
            Verdict::Http1Head => return Ok((Outcome::Http1, buf)),
            Verdict::Http2 => return Ok((Outcome::Http2, buf)),
            Verdict::NotHttp => return Ok((Outcome::Opaque, buf)),
            Verdict::NeedMore => {}
        }
        if buf.len() >= limits.max_bytes {
            // hyper answers an oversized head (431); an endless undecided prefix passes opaque.
            return Ok((sniffer.cut_short(), buf));
        }
        let deadline = accepted
            + if buf.is_empty() {
                limits.silence
            } else {
                limits.head
            };
        let want = READ_CHUNK.min(limits.max_bytes - buf.len());
        buf.reserve(want);
        let mut room = (&mut buf).limit(want);
        match tokio::time::timeout_at(deadline, io.read_buf(&mut room)).await {
            Ok(Ok(0)) => return Ok((sniffer.cut_short(), buf)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_elapsed) if buf.is_empty() => return Ok((Outcome::Silent, buf)),
            Err(_elapsed) => {
                let http1 = sniffer.http1_possible();
                return Ok((Outcome::HeadTimeout { http1 }, buf));
            }
        }
    }
}

/// Ends a connection whose head stalled: `408 Request Timeout` when the client spoke HTTP/1,
/// then a write shutdown and a short drain so the answer is read rather than reset. Bounded
/// in time; errors only mean the client is gone already.
pub(crate) async fn close_stalled<I>(io: &mut I, http1: bool)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let closing = async {
        if http1 {
            io.write_all(REQUEST_TIMEOUT).await?;
        }
        io.shutdown().await?;
        let mut discard = [0u8; 1024];
        while io.read(&mut discard).await? > 0 {}
        Ok::<_, io::Error>(())
    };
    let _ = tokio::time::timeout(LINGER, closing).await;
}

/// What the bytes so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Still a prefix of an HTTP/1 head or the HTTP/2 preface.
    NeedMore,
    /// A complete HTTP/1 request head (its request line checked by httparse).
    Http1Head,
    /// The HTTP/2 preface.
    Http2,
    /// Neither can follow from these bytes.
    NotHttp,
}

/// Where the HTTP/1 scan stands; each state names what the next byte may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// Before the method: empty lines may come first (RFC 9112 §2.2; httparse skips them).
    #[default]
    Lead,
    /// A CR among the leading empty lines; LF must follow.
    LeadCr,
    /// Inside the method token.
    Method,
    /// After the method's SP: the target's first byte.
    TargetStart,
    /// Inside the request target.
    Target,
    /// This many bytes of `HTTP/1.x` matched.
    Version(u8),
    /// The CR ending the request line; LF must follow.
    LineCr,
    /// Inside the header section; `at_line_start` after a line's LF, `cr` after a CR there.
    Headers { at_line_start: bool, cr: bool },
    /// The head is complete.
    Done,
    /// Not HTTP/1.
    Failed,
}

/// The incremental classifier: [`Sniffer::feed`] is given the whole buffer each time and
/// looks only at the bytes it has not seen.
#[derive(Debug, Default)]
struct Sniffer {
    phase: Phase,
    /// Bytes of the buffer already scanned.
    scanned: usize,
    /// Where the request line starts (after leading empty lines).
    line_start: usize,
}

impl Sniffer {
    fn feed(&mut self, buf: &[u8]) -> Verdict {
        if buf.is_empty() {
            return Verdict::NeedMore;
        }
        let preface = buf.len().min(H2_PREFACE.len());
        let may_be_h2 = buf[..preface] == H2_PREFACE[..preface];
        if may_be_h2 && preface == H2_PREFACE.len() {
            return Verdict::Http2;
        }
        for (i, &b) in buf.iter().enumerate().skip(self.scanned) {
            let before = self.phase;
            self.phase = self.step(i, b);
            let line_ended = matches!(before, Phase::Version(_) | Phase::LineCr)
                && matches!(self.phase, Phase::Headers { .. });
            // The request line is complete: httparse has the last word on it.
            if line_ended && !request_line_parses(&buf[self.line_start..=i]) {
                self.phase = Phase::Failed;
            }
            if matches!(self.phase, Phase::Done | Phase::Failed) {
                break;
            }
        }
        self.scanned = buf.len();
        match self.phase {
            Phase::Done => Verdict::Http1Head,
            Phase::Failed if may_be_h2 => Verdict::NeedMore,
            Phase::Failed => Verdict::NotHttp,
            _ => Verdict::NeedMore,
        }
    }

    /// The state after byte `b` at index `i`.
    fn step(&mut self, i: usize, b: u8) -> Phase {
        match self.phase {
            Phase::Lead => match b {
                b'\r' => Phase::LeadCr,
                b'\n' => Phase::Lead,
                b if is_token(b) => {
                    self.line_start = i;
                    Phase::Method
                }
                _ => Phase::Failed,
            },
            Phase::LeadCr if b == b'\n' => Phase::Lead,
            Phase::Method if b == b' ' => Phase::TargetStart,
            Phase::Method if is_token(b) => Phase::Method,
            Phase::TargetStart | Phase::Target if is_target_byte(b) => Phase::Target,
            Phase::Target if b == b' ' => Phase::Version(0),
            Phase::Version(n) if usize::from(n) < HTTP1_VERSION.len() => {
                if b == HTTP1_VERSION[usize::from(n)] {
                    Phase::Version(n + 1)
                } else {
                    Phase::Failed
                }
            }
            Phase::Version(7) if matches!(b, b'0' | b'1') => Phase::Version(8),
            Phase::Version(8) if b == b'\r' => Phase::LineCr,
            Phase::Version(8) | Phase::LineCr if b == b'\n' => Phase::Headers {
                at_line_start: true,
                cr: false,
            },
            // Header lines are hyper's to judge (400 or 431); only the empty line ending the
            // head matters here.
            Phase::Headers { at_line_start, cr } => match b {
                b'\n' if at_line_start => Phase::Done,
                b'\n' => Phase::Headers {
                    at_line_start: true,
                    cr: false,
                },
                b'\r' if at_line_start && !cr => Phase::Headers {
                    at_line_start: true,
                    cr: true,
                },
                _ => Phase::Headers {
                    at_line_start: false,
                    cr: false,
                },
            },
            Phase::Done => Phase::Done,
            _ => Phase::Failed,
        }
    }

    /// The outcome when no more bytes will come (EOF, or the size bound): a complete request
    /// line is HTTP/1 (hyper answers what is wrong with the rest); anything else passes opaque.
    fn cut_short(&self) -> Outcome {
        match self.phase {
            Phase::Headers { .. } | Phase::Done => Outcome::Http1,
            _ => Outcome::Opaque,
        }
    }

    /// Whether the bytes so far can still be an HTTP/1 request (so a `408` makes sense).
    fn http1_possible(&self) -> bool {
        self.phase != Phase::Failed
    }
}

/// `tchar` (RFC 9110 §5.6.2), what httparse accepts in a method.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What httparse accepts in a request target: visible ASCII and any non-ASCII byte (the
/// target must be UTF-8 as a whole, which the final httparse check sees).
fn is_target_byte(b: u8) -> bool {
    matches!(b, b'!'..=0x7e | 0x80..=0xff)
}

/// `method SP request-target SP HTTP/1.x CRLF` as httparse (hyper's parser) reads it: with no
/// header slots it parses the request line and reports the head as partial.
fn request_line_parses(line: &[u8]) -> bool {
    let mut no_headers = [httparse::EMPTY_HEADER; 0];
    let mut req = httparse::Request::new(&mut no_headers);
    matches!(req.parse(line), Ok(httparse::Status::Partial)) && req.version.is_some()
}

/// The protocol `buf` commits the client to, or `None` while more bytes are needed.
#[cfg(test)]
fn classify(buf: &[u8]) -> Option<Protocol> {
    let mut sniffer = Sniffer::default();
    match sniffer.feed(buf) {
        Verdict::Http2 => Some(Protocol::Http2),
        Verdict::NotHttp => Some(Protocol::Opaque),
        Verdict::Http1Head => Some(Protocol::Http1),
        Verdict::NeedMore if matches!(sniffer.phase, Phase::Headers { .. }) => {
            Some(Protocol::Http1)
        }
        Verdict::NeedMore => None,
    }
}

#[cfg(test)]
#[path = "detect_tests.rs"]
mod tests;
