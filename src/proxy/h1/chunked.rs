//! The chunked transfer coding (RFC 9112 §7.1): an incremental decoder that hands out data
//! without copying it, and the encoder's framing bytes.
//!
//! ```text
//! chunked-body = *chunk last-chunk trailer-section CRLF
//! chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//! last-chunk   = 1*("0") [ chunk-ext ] CRLF
//! ```
//!
//! Every part a peer controls is bounded: at most [`MAX_SIZE_DIGITS`] hex digits (so a size
//! never overflows), a size line of at most [`MAX_SIZE_LINE`] bytes (extensions are checked
//! for forbidden bytes and skipped), the trailer section within the [`HeadLimits`]. Line
//! endings are CRLF only: a bare LF inside chunked framing is refused (a parser that accepts
//! it and one that does not read different bodies — a smuggling vector).

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::head::{self, HeadLimits};

/// Most hex digits in a chunk size: 16 digits are 64 bits, so a size can never overflow.
pub(crate) const MAX_SIZE_DIGITS: usize = 16;

/// Longest chunk-size line, CRLF included: the digits, then extensions. Extensions carry
/// nothing stitch uses; this bounds what a driver must buffer before it sees a chunk.
pub(crate) const MAX_SIZE_LINE: usize = 4096;

/// One step of decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Body bytes, split off the front of the buffer (no copy); never empty.
    Data(Bytes),
    /// The trailer section's fields (only when there are some); [`Decoded::End`] follows.
    Trailers(HeaderMap),
    /// The body is complete: what is left in the buffer belongs to the next message.
    End,
    /// The buffer holds no complete unit: read more and call again (framing already
    /// understood, such as a chunk-size line, may have been consumed; data never is).
    NeedMore,
}

/// Why a chunked body is malformed. A server-side driver answers `400` (the request body was
/// malformed, `Rejection::MalformedBody`) and closes; an upstream-side driver ends the
/// response and the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ChunkedError {
    /// A size line without hex digits, with a non-hex byte, or with more than
    /// [`MAX_SIZE_DIGITS`] digits.
    #[error("invalid chunk size")]
    Size,
    /// A chunk extension with a forbidden byte (a CTL, a bare CR).
    #[error("invalid chunk extension")]
    Extension,
    /// A size line longer than [`MAX_SIZE_LINE`].
    #[error("chunk size line too long")]
    LineTooLong,
    /// A line ending other than CRLF (a bare LF, a CR before something else), or chunk data
    /// not followed by CRLF.
    #[error("invalid line ending in chunked body")]
    LineEnding,
    /// A trailer section over the head limits (bytes or fields).
    #[error("trailer section too large")]
    TrailersTooLarge,
    /// A malformed trailer field.
    #[error("invalid trailer field")]
    Trailer,
}

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data: expecting its CRLF.
    DataEnd,
    /// After the last chunk: expecting the trailer section and the final CRLF.
    Trailers,
    /// The body ended.
    Done,
}

/// An incremental chunked-body decoder. Feed it the bytes received so far (a driver appends
/// reads to one `BytesMut`); each call consumes what it returns from the front.
#[derive(Debug, Clone)]
pub(crate) struct ChunkedDecoder {
    /// Where in the body the next byte belongs.
    state: State,
    /// Bounds of the trailer section.
    limits: HeadLimits,
}

impl ChunkedDecoder {
    /// A decoder at the start of a body; `limits` bound its trailer section (the head limits
    /// of the message it belongs to).
    pub(crate) fn new(limits: HeadLimits) -> Self {
        ChunkedDecoder {
            state: State::Size,
            limits,
        }
    }

    /// Whether the body has ended ([`Decoded::End`] was returned).
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes the next unit at the front of `buf`. Data is returned as soon as any arrives
    /// (a chunk may come as several [`Decoded::Data`]), so memory stays bounded by the reads,
    /// whatever the chunk sizes. After an error the decoder must not be used again.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkedError> {
        loop {
            match self.state {
                State::Size => match size_line(buf)? {
                    None => return Ok(Decoded::NeedMore),
                    Some((0, len)) => {
                        let _ = buf.split_to(len);
                        self.state = State::Trailers;
                    }
                    Some((size, len)) => {
                        let _ = buf.split_to(len);
                        self.state = State::Data(size);
                    }
                },
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                State::DataEnd => match buf.get(..2) {
                    Some([b'\r', b'\n']) => {
                        let _ = buf.split_to(2);
                        self.state = State::Size;
                    }
                    Some(_) => return Err(ChunkedError::LineEnding),
                    None if buf.first().is_some_and(|b| *b != b'\r') => {
                        return Err(ChunkedError::LineEnding);
                    }
                    None => return Ok(Decoded::NeedMore),
                },
                State::Trailers => {
                    let Some((trailers, len)) = trailer_section(buf, &self.limits)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let _ = buf.split_to(len);
                    self.state = State::Done;
                    if !trailers.is_empty() {
                        return Ok(Decoded::Trailers(trailers));
                    }
                }
                State::Done => return Ok(Decoded::End),
            }
        }
    }
}

/// Parses a complete chunk-size line at the front of `buf`: `Some((size, line length))`, or
/// `None` when the line has not ended yet.
fn size_line(buf: &[u8]) -> Result<Option<(u64, usize)>, ChunkedError> {
    let window = &buf[..buf.len().min(MAX_SIZE_LINE)];
    let Some(lf) = window.iter().position(|b| *b == b'\n') else {
        if buf.len() >= MAX_SIZE_LINE {
            return Err(ChunkedError::LineTooLong);
        }
        // Refuse what can never become a valid line as soon as it arrives; a final CR may
        // still be followed by its LF.
        let so_far = window.strip_suffix(b"\r").unwrap_or(window);
        check_size_line(so_far, false)?;
        return Ok(None);
    };
    let Some(line) = window[..lf].strip_suffix(b"\r") else {
        return Err(ChunkedError::LineEnding);
    };
    let size = check_size_line(line, true)?;
    Ok(Some((size, lf + 1)))
}

/// Checks a size line without its CRLF (`complete`), or the part of one received so far, and
/// returns the size its digits spell: `1*HEXDIG [ BWS ";" chunk-ext ]`.
fn check_size_line(line: &[u8], complete: bool) -> Result<u64, ChunkedError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits > MAX_SIZE_DIGITS || (digits == 0 && (complete || !line.is_empty())) {
        return Err(ChunkedError::Size);
    }
    let rest = &line[digits..];
    let blank = rest
        .iter()
        .take_while(|b| **b == b' ' || **b == b'\t')
        .count();
    match rest.get(blank) {
        // Whitespace (BWS) is only allowed before an extension's `;`.
        None if blank > 0 && complete => return Err(ChunkedError::Size),
        None => {}
        Some(b';') if !rest[blank..].iter().all(|b| is_extension_byte(*b)) => {
            return Err(ChunkedError::Extension);
        }
        Some(b';') => {}
        Some(b'\r' | b'\n') => return Err(ChunkedError::LineEnding),
        Some(_) => return Err(ChunkedError::Size),
    }
    Ok(line[..digits]
        .iter()
        .fold(0u64, |n, b| (n << 4) | u64::from(hex_value(*b))))
}

/// Bytes allowed in chunk extensions (`; name=value`, quoted strings included): HTAB, SP,
/// VCHAR and obs-text — no CTL, so no bare CR.
fn is_extension_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// The value of a hex digit (the caller checked it is one).
fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// Parses a complete trailer section (fields then the final CRLF) at the front of `buf`:
/// `Some((fields, length))`, or `None` when it has not ended yet.
fn trailer_section(
    buf: &BytesMut,
    limits: &HeadLimits,
) -> Result<Option<(HeaderMap, usize)>, ChunkedError> {
    if buf.starts_with(b"\r\n") {
        return Ok(Some((HeaderMap::new(), 2)));
    }
    // Slots on the stack, as for heads: this runs again on every read while a trailer section
    // trickles in, and a heap slot array per call would be an allocation per read.
    let mut stack = [httparse::EMPTY_HEADER; head::STACK_SLOTS];
    let mut heap = Vec::new();
    let slots = head::slots(
        &mut stack,
        &mut heap,
        limits.max_headers,
        httparse::EMPTY_HEADER,
    );
    let (len, fields) = match httparse::parse_headers(buf, slots) {
        Ok(httparse::Status::Complete(done)) => done,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head_bytes => {
            return Err(ChunkedError::TrailersTooLarge);
        }
        Ok(httparse::Status::Partial) => {
            if has_bare_lf(buf) {
                return Err(ChunkedError::LineEnding);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(ChunkedError::TrailersTooLarge),
        Err(httparse::Error::NewLine) => return Err(ChunkedError::LineEnding),
        Err(_) => return Err(ChunkedError::Trailer),
    };
    if len > limits.max_head_bytes {
        return Err(ChunkedError::TrailersTooLarge);
    }
    // httparse accepts bare LF (as RFC 9112 §2.2 lets a head parser); chunked framing does not.
    if has_bare_lf(&buf[..len]) {
        return Err(ChunkedError::LineEnding);
    }
    let mut trailers = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name =
            HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| ChunkedError::Trailer)?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| ChunkedError::Trailer)?;
        trailers.append(name, value);
    }
    Ok(Some((trailers, len)))
}

/// Whether a LF in `bytes` is not preceded by CR.
fn has_bare_lf(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .any(|(i, b)| *b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
}

/// The CRLF that ends every chunk's data (write it after the data).
pub(crate) const CHUNK_END: &[u8] = b"\r\n";

/// Writes the size line of a chunk of `len` bytes (`{len:x}\r\n`); the data and
/// [`CHUNK_END`] follow. A zero `len` writes nothing: a chunk of size 0 is the last chunk,
/// so a caller skips empty data entirely (and writes [`encode_last_chunk`] at the end).
pub(crate) fn encode_chunk_header(len: u64, out: &mut Vec<u8>) {
    if len == 0 {
        return;
    }
    let digits = (64 - len.leading_zeros()).div_ceil(4);
    for shift in (0..digits).rev() {
        let nibble = ((len >> (shift * 4)) & 0xf) as u8;
        out.push(b"0123456789abcdef"[usize::from(nibble)]);
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes the last chunk, the trailer fields (names in lower case) and the final CRLF.
pub(crate) fn encode_last_chunk(trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
