//! Message body length (RFC 9112 §6.1–§6.3) and connection persistence (§9.3): what a driver
//! needs to know after a head to read the body and to decide whether the connection can
//! carry another message.
//!
//! Requests are held to the strict reading, because a request whose length two parsers could
//! read differently is the request-smuggling vector: `Transfer-Encoding` with
//! `Content-Length`, `chunked` not last or twice, disagreeing or malformed `Content-Length`
//! are errors (answered `400`, connection closed). Responses follow §6.3 as a client must:
//! `Transfer-Encoding` overrides `Content-Length` (a forwarding driver must drop the
//! `Content-Length`), and a coding other than `chunked` last means the body runs to the
//! close. Hop-by-hop stripping itself stays in [`crate::proxy::http::headers`].

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Version};

use super::head::{RequestHead, ResponseHead};
use crate::proxy::http::validate::Rejection;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// No body: nothing to read (no framing field, `Content-Length: 0`, or a response that
    /// cannot have one: to HEAD, 1xx, 204, 304, 2xx to CONNECT).
    Empty,
    /// Exactly this many bytes (never 0: that is [`BodyFraming::Empty`]).
    Length(u64),
    /// Chunked transfer coding: read with [`super::chunked::ChunkedDecoder`].
    Chunked,
    /// Responses only: the body is everything until the upstream closes.
    CloseDelimited,
}

/// Why a message's body length cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FramingError {
    /// `Transfer-Encoding` in an HTTP/1.0 message (RFC 9112 §6.1: it predates transfer
    /// codings, so a 1.0 recipient would frame the body differently).
    #[error("Transfer-Encoding in an HTTP/1.0 message")]
    TransferEncodingInHttp10,
    /// A request with both `Transfer-Encoding` and `Content-Length` (§6.3 item 3).
    #[error("Transfer-Encoding with Content-Length")]
    TransferEncodingWithContentLength,
    /// A request whose final transfer coding is not `chunked` (§6.3 item 4): its length
    /// cannot be determined.
    #[error("final transfer coding is not chunked")]
    ChunkedNotFinal,
    /// `chunked` applied more than once (§6.1), over all `Transfer-Encoding` fields.
    #[error("chunked applied more than once")]
    ChunkedTwice,
    /// A `Content-Length` value that is not 1*DIGIT or does not fit in 64 bits (`+5`, `-1`,
    /// `0x10`, an empty value or list element).
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// `Content-Length` values (fields or list elements) that disagree (§6.3 item 5).
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
}

impl FramingError {
    /// The reason stitch counts a refused request under, when it is one of the rules stitch
    /// enforces itself (`stitch_requests_rejected_total{reason}`); `None` for what hyper
    /// refused before stitch saw the request (answered `400` but not counted today).
    pub(crate) fn rejection(self) -> Option<Rejection> {
        match self {
            FramingError::TransferEncodingWithContentLength
            | FramingError::ConflictingContentLength => Some(Rejection::AmbiguousFraming),
            FramingError::ChunkedTwice => Some(Rejection::ChunkedTwice),
            FramingError::TransferEncodingInHttp10
            | FramingError::ChunkedNotFinal
            | FramingError::InvalidContentLength => None,
        }
    }
}

/// The body framing of a request (§6.3 items 3–6).
pub(crate) fn request_body(head: &RequestHead) -> Result<BodyFraming, FramingError> {
    let headers = &head.headers;
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if head.version == Version::HTTP_10 {
            return Err(FramingError::TransferEncodingInHttp10);
        }
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(FramingError::TransferEncodingWithContentLength);
        }
        return match codings(headers)? {
            Codings::ChunkedLast => Ok(BodyFraming::Chunked),
            Codings::Other => Err(FramingError::ChunkedNotFinal),
        };
    }
    Ok(match content_length(headers)? {
        None | Some(0) => BodyFraming::Empty,
        Some(n) => BodyFraming::Length(n),
    })
}

/// The body framing of a response to a `request_method` request (§6.3 items 1–7).
pub(crate) fn response_body(
    request_method: &Method,
    head: &ResponseHead,
) -> Result<BodyFraming, FramingError> {
    let status = head.status.as_u16();
    let bodiless = head.status.is_informational()
        || status == 204
        || status == 304
        || *request_method == Method::HEAD
        || (*request_method == Method::CONNECT && head.status.is_success());
    if bodiless {
        return Ok(BodyFraming::Empty);
    }
    let headers = &head.headers;
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if head.version == Version::HTTP_10 {
            return Err(FramingError::TransferEncodingInHttp10);
        }
        return Ok(match codings(headers)? {
            Codings::ChunkedLast => BodyFraming::Chunked,
            Codings::Other => BodyFraming::CloseDelimited,
        });
    }
    Ok(match content_length(headers)? {
        Some(0) => BodyFraming::Empty,
        Some(n) => BodyFraming::Length(n),
        None => BodyFraming::CloseDelimited,
    })
}

/// What the transfer codings say about the length.
enum Codings {
    /// `chunked` is the final coding (and appears once).
    ChunkedLast,
    /// Some other coding is final (or the list is empty).
    Other,
}

/// Reads every `Transfer-Encoding` field as one list (RFC 9110 §5.3), empty elements ignored
/// (§5.6.1). A coding is compared as a whole element, so `chunked;x=1` is not `chunked`
/// (chunked has no parameters) — as hyper compared it.
fn codings(headers: &HeaderMap) -> Result<Codings, FramingError> {
    let mut chunked = 0usize;
    let mut last_is_chunked = false;
    for coding in list_elements(headers.get_all(header::TRANSFER_ENCODING)) {
        last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
        chunked += usize::from(last_is_chunked);
    }
    match (chunked, last_is_chunked) {
        (0, _) | (1, false) => Ok(Codings::Other),
        (1, true) => Ok(Codings::ChunkedLast),
        _ => Err(FramingError::ChunkedTwice),
    }
}

/// The message's `Content-Length`, if it has one: every value of every field must be
/// 1*DIGIT within `u64`, and all must be equal (`5, 5` and two fields of `5` are `5`, as RFC
/// 9110 §8.6 allows a recipient to read them).
pub(crate) fn content_length(headers: &HeaderMap) -> Result<Option<u64>, FramingError> {
    let mut length = None;
    for field in headers.get_all(header::CONTENT_LENGTH) {
        for element in field.as_bytes().split(|b| *b == b',') {
            let n = digits(element.trim_ascii()).ok_or(FramingError::InvalidContentLength)?;
            match length {
                Some(seen) if seen != n => return Err(FramingError::ConflictingContentLength),
                _ => length = Some(n),
            }
        }
    }
    Ok(length)
}

/// `1*DIGIT` as a `u64`; `None` for anything else or an overflow.
fn digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, b| {
        let digit = b.is_ascii_digit().then(|| u64::from(b - b'0'))?;
        n.checked_mul(10)?.checked_add(digit)
    })
}

/// The non-empty, OWS-trimmed elements of a comma-separated list spread over `fields`.
fn list_elements<'a>(
    fields: impl IntoIterator<Item = &'a HeaderValue>,
) -> impl Iterator<Item = &'a [u8]> {
    fields
        .into_iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
}

/// Whether `chunked` is the final transfer coding over all `Transfer-Encoding` fields (however
/// often it appears): what a writer checks before keeping a sender's `Transfer-Encoding`.
pub(crate) fn chunked_last(headers: &HeaderMap) -> bool {
    list_elements(headers.get_all(header::TRANSFER_ENCODING))
        .last()
        .is_some_and(|e| e.eq_ignore_ascii_case(b"chunked"))
}

/// The tokens of every `Connection` field, trimmed, in order: the options of this connection
/// (`close`, `keep-alive`, `upgrade`) and the names of the fields it makes hop-by-hop (RFC
/// 9110 §7.6.1). No allocation: each token is a slice of a field value.
pub(crate) fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    list_elements(headers.get_all(header::CONNECTION))
}

/// Whether the connection may carry another message after this one (RFC 9112 §9.3): not when
/// any `Connection` field says `close` (a later `keep-alive` cannot undo it); HTTP/1.1
/// persists by default, HTTP/1.0 only with `keep-alive`.
pub(crate) fn keep_alive(version: Version, headers: &HeaderMap) -> bool {
    let mut asked = false;
    for token in connection_tokens(headers) {
        if token.eq_ignore_ascii_case(b"close") {
            return false;
        }
        asked |= token.eq_ignore_ascii_case(b"keep-alive");
    }
    match version {
        Version::HTTP_11 => true,
        Version::HTTP_10 => asked,
        _ => false,
    }
}

/// Whether a request asks for `100 Continue` before it sends its body (RFC 9110 §10.1.1):
/// hyper's server answered `100 Continue` itself once the body was first read, and the
/// integration tests expect it.
pub(crate) fn expects_continue(head: &RequestHead) -> bool {
    head.version == Version::HTTP_11
        && head
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}
