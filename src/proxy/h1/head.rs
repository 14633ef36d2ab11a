//! Message heads (RFC 9112 §2–§5): parsing a request or response head out of received bytes,
//! and writing one back with each field name spelled as it was received.
//!
//! httparse tokenizes (request or status line, field lines, CRLF or bare LF) and refuses what
//! RFC 9112 does not allow: obs-fold, whitespace before the colon, bytes outside `tchar` in a
//! name, NUL / bare CR / other CTLs in a value, versions other than `HTTP/1.0` and `HTTP/1.1`.
//! This module adds what httparse leaves to its caller: the method, target and status as
//! `http` types, the request-target form allowed per method (§3.2), the limits, and one
//! copy of the head that every value, the target and the original name spellings slice.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};

/// The bounds a head must stay within; the server side takes them from `--max-header-bytes`
/// and `--max-headers` (the upstream side should allow responses more, as hyper's client did:
/// about 400 KiB and 100 fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadLimits {
    /// Largest head, in bytes, from the first byte through the blank line.
    pub max_head_bytes: usize,
    /// Most field lines in a head.
    pub max_headers: usize,
}

/// Longest request-target accepted (what `http::Uri` can hold, and what hyper answered
/// `414` beyond); with the default 64 KiB head limit the head limit usually bites first.
pub(crate) const MAX_TARGET_BYTES: usize = (u16::MAX - 1) as usize;

/// Field slots kept on the stack while parsing: a head (or a trailer section) with up to this
/// many fields (the default `--max-headers` is 100) parses with no allocation for httparse's
/// slots.
pub(super) const STACK_SLOTS: usize = 128;

/// Why a head was refused. A server-side driver answers [`HeadError::status`] and closes the
/// connection (the framing of whatever follows can no longer be trusted); an upstream-side
/// driver treats any of these as a broken upstream (`502`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeadError {
    /// More than `max_head_bytes` without a complete head, a complete head longer than that,
    /// or more than `max_headers` fields (`431`, RFC 6585 §5).
    #[error("message head too large")]
    TooLarge,
    /// A request-target longer than [`MAX_TARGET_BYTES`] (`414`, RFC 9110 §15.5.15).
    #[error("request-target too long")]
    UriTooLong,
    /// The method is not a token.
    #[error("invalid method")]
    Method,
    /// The request-target is not valid, or its form is not allowed for the method
    /// (RFC 9112 §3.2).
    #[error("invalid request-target")]
    Target,
    /// Not `HTTP/1.0` or `HTTP/1.1` (HTTP/2's preface is detected before this codec runs).
    #[error("unsupported HTTP version")]
    Version,
    /// The status line is malformed (responses).
    #[error("invalid status line")]
    Status,
    /// A field name with a byte outside `tchar`, whitespace before the colon, a missing
    /// colon, or a line starting with whitespace (obs-fold, RFC 9112 §5.2).
    #[error("invalid header field name")]
    HeaderName,
    /// A field value with a forbidden byte (NUL, bare CR, another CTL).
    #[error("invalid header field value")]
    HeaderValue,
    /// A CR not followed by LF.
    #[error("invalid line ending")]
    NewLine,
}

impl HeadError {
    /// The status a server answers a request head refused for this reason with, as hyper's
    /// server did: `431` for size, `414` for the target, `400` for everything else.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            HeadError::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HeadError::UriTooLong => StatusCode::URI_TOO_LONG,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A parsed request head. Everything byte-like (target, values, name spellings) is a slice of
/// one copy of the received head.
#[derive(Debug, Clone)]
pub(crate) struct RequestHead {
    /// The method, as received (extension methods included).
    pub method: Method,
    /// The request-target, byte for byte (`Uri` keeps the received bytes).
    pub uri: Uri,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: Version,
    /// The fields in received order per name.
    pub headers: HeaderMap,
    /// How each field name was spelled, to write the head back unchanged.
    pub case: HeaderCase,
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub(crate) struct ResponseHead {
    /// The status code (100–999).
    pub status: StatusCode,
    /// The reason phrase, kept only when it differs from the status's canonical one, so that
    /// it is forwarded unchanged and the common case costs nothing.
    pub reason: Option<Bytes>,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: Version,
    /// The fields in received order per name.
    pub headers: HeaderMap,
    /// How each field name was spelled.
    pub case: HeaderCase,
}

/// The original spelling of every field name of a head, in received order: the `i`-th field
/// named `n` (case-insensitively) was spelled `spellings(n).nth(i)`.
///
/// hyper keeps this as a second `HeaderMap` (one more hashed insertion per field). Here it is
/// the head's one shared copy plus a list of name positions in wire order: building it costs
/// a push per field, and a writer finds a name's spellings by a scan that compares lengths
/// first. A head whose names were all lower case (HTTP/2-style clients) needs no lookup at
/// all: the `HeaderName` already is the spelling.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeaderCase {
    /// The received head the spans point into.
    head: Bytes,
    /// Where each field name is in `head`, in wire order.
    names: Vec<NameSpan>,
    /// Whether some name had an upper-case letter (otherwise writing needs no lookup).
    mixed: bool,
}

/// A field name's place in the head.
#[derive(Debug, Clone, Copy)]
struct NameSpan {
    /// Offset of the first byte.
    start: usize,
    /// Length in bytes.
    len: usize,
}

impl HeaderCase {
    /// How many field names it records (tests inspect it).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether it records none (a head without fields, or a head built by stitch).
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether writing the head back needs it: some name had an upper-case letter. A head
    /// whose names were all lower case is written the same without it, so drivers attach it
    /// only when needed (an extension costs a map and a box per message).
    pub(crate) fn is_needed(&self) -> bool {
        self.mixed
    }

    /// The received spellings of `name`, in wire order.
    pub(crate) fn spellings<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> {
        let want = name.as_str().as_bytes();
        self.names
            .iter()
            .filter(move |span| span.len == want.len())
            .map(move |span| &self.head[span.start..span.start + span.len])
            .filter(move |spelled| spelled.eq_ignore_ascii_case(want))
    }
}

/// Parses a request head at the start of `buf`.
///
/// `Ok(None)`: the head is not complete yet, read more (unless `buf` already holds more than
/// `limits.max_head_bytes`: then [`HeadError::TooLarge`]). `Ok(Some((head, n)))`: the head
/// took the first `n` bytes (empty lines before the request line included, RFC 9112 §2.2);
/// the body, or the next request, starts at `n`. Each call parses from the start of `buf`.
pub(crate) fn parse_request(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut stack = [MaybeUninit::<httparse::Header<'_>>::uninit(); STACK_SLOTS];
    let mut heap = Vec::new();
    let slots = slots(
        &mut stack,
        &mut heap,
        limits.max_headers,
        MaybeUninit::uninit(),
    );
    let mut req = httparse::Request::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, buf, slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return incomplete(buf, limits),
        Err(httparse::Error::Token) if req.method.is_none() => return Err(HeadError::Method),
        Err(e) => return Err(from_httparse(e)),
    };
    if len > limits.max_head_bytes {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Target);
    };
    if target.len() > MAX_TARGET_BYTES {
        return Err(HeadError::UriTooLong);
    }
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| HeadError::Method)?;
    let version = version(minor)?;
    let raw = buf.get(..len).unwrap_or(buf);
    let head = Bytes::copy_from_slice(raw);
    let uri = target_uri(&method, head.slice(span_of(raw, target.as_bytes())))?;
    // Room for what the trace layer looks up and inserts (see `INSERT_ROOM`).
    let capacity = (req.headers.len() + INSERT_ROOM).max(MIN_FIELD_ROOM);
    let (headers, case) = fields(raw, &head, req.headers, capacity)?;
    let request = RequestHead {
        method,
        uri,
        version,
        headers,
        case,
    };
    Ok(Some((request, len)))
}

/// Parses a response head at the start of `buf`; `None` and the byte count as for
/// [`parse_request`]. Interim (1xx) responses are heads like any other: the caller parses
/// again after one.
pub(crate) fn parse_response(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let mut stack = [MaybeUninit::<httparse::Header<'_>>::uninit(); STACK_SLOTS];
    let mut heap = Vec::new();
    let slots = slots(
        &mut stack,
        &mut heap,
        limits.max_headers,
        MaybeUninit::uninit(),
    );
    let mut resp = httparse::Response::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return incomplete(buf, limits),
        Err(e) => return Err(from_httparse(e)),
    };
    if len > limits.max_head_bytes {
        return Err(HeadError::TooLarge);
    }
    let (Some(code), Some(minor)) = (resp.code, resp.version) else {
        return Err(HeadError::Status);
    };
    let status = StatusCode::from_u16(code).map_err(|_| HeadError::Status)?;
    let version = version(minor)?;
    let raw = buf.get(..len).unwrap_or(buf);
    let head = Bytes::copy_from_slice(raw);
    // httparse replaces a reason with obs-text by ""; the bytes on the wire are kept instead.
    let reason = reason_span(raw)
        .filter(|r| Some(&raw[r.clone()]) != status.canonical_reason().map(str::as_bytes))
        .map(|r| head.slice(r));
    // A response is forwarded with fields removed, never added.
    let (headers, case) = fields(raw, &head, resp.headers, resp.headers.len())?;
    let response = ResponseHead {
        status,
        reason,
        version,
        headers,
        case,
    };
    Ok(Some((response, len)))
}

/// httparse's field slots for `max_headers` fields: on the stack when they fit, else in
/// `heap` (a `--max-headers` above [`STACK_SLOTS`]), filled with `empty`. Heads use
/// uninitialised slots, trailer sections (`parse_headers`) initialised ones.
pub(super) fn slots<'s, T: Copy>(
    stack: &'s mut [T; STACK_SLOTS],
    heap: &'s mut Vec<T>,
    max_headers: usize,
    empty: T,
) -> &'s mut [T] {
    if max_headers <= STACK_SLOTS {
        &mut stack[..max_headers]
    } else {
        heap.resize(max_headers, empty);
        heap
    }
}

/// The answer for a head that is not complete yet: wait, unless it is already too long.
fn incomplete<T>(buf: &[u8], limits: &HeadLimits) -> Result<Option<T>, HeadError> {
    if buf.len() > limits.max_head_bytes {
        Err(HeadError::TooLarge)
    } else {
        Ok(None)
    }
}

/// httparse's error as a [`HeadError`] (a `Token` error with the method read is the target).
fn from_httparse(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::HeaderName => HeadError::HeaderName,
        httparse::Error::HeaderValue => HeadError::HeaderValue,
        httparse::Error::NewLine => HeadError::NewLine,
        httparse::Error::Status => HeadError::Status,
        httparse::Error::Token => HeadError::Target,
        httparse::Error::TooManyHeaders => HeadError::TooLarge,
        httparse::Error::Version => HeadError::Version,
    }
}

/// `HTTP/1.<minor>` as a [`Version`].
fn version(minor: u8) -> Result<Version, HeadError> {
    match minor {
        0 => Ok(Version::HTTP_10),
        1 => Ok(Version::HTTP_11),
        _ => Err(HeadError::Version),
    }
}

/// Where `part` (a slice httparse returned) lies in `buf`, the received head. Every such
/// slice lies inside it; `saturating_sub` and the clamps keep a broken assumption from
/// panicking (the result would be a wrong slice, which the round-trip tests would catch).
fn span_of(buf: &[u8], part: &[u8]) -> std::ops::Range<usize> {
    let start = (part.as_ptr() as usize)
        .saturating_sub(buf.as_ptr() as usize)
        .min(buf.len());
    start..(start + part.len()).min(buf.len())
}

/// The request-target as a [`Uri`] over the head's bytes, checked against the forms RFC 9112
/// §3.2 allows for `method`: origin-form (`/p?q`) for all but CONNECT, absolute-form
/// (`http://a/p`) for all but CONNECT, authority-form (`host:port`) for CONNECT only,
/// asterisk-form (`*`) for OPTIONS only. A `#` is refused: a fragment is never part of a
/// request-target, and `Uri` would silently cut it off (hyper forwarded the target without
/// it).
fn target_uri(method: &Method, target: Bytes) -> Result<Uri, HeadError> {
    if target.contains(&b'#') {
        return Err(HeadError::Target);
    }
    let connect = method == Method::CONNECT;
    let first = target.first().copied();
    let uri = Uri::from_maybe_shared(target).map_err(|_| HeadError::Target)?;
    let allowed = match first {
        Some(b'/') => !connect,
        Some(b'*') => method == Method::OPTIONS && uri.path() == "*",
        _ => match (uri.scheme(), uri.authority()) {
            (Some(_), Some(_)) => !connect,
            // authority-form is `uri-host ":" port` (§3.2.3): the port is not optional.
            (None, Some(authority)) => {
                connect
                    && uri.path().is_empty()
                    && uri.query().is_none()
                    && authority.port().is_some()
                    && !authority.as_str().contains('@')
            }
            _ => false,
        },
    };
    if allowed {
        Ok(uri)
    } else {
        Err(HeadError::Target)
    }
}

/// The reason phrase's place in a complete response head: after `HTTP/1.x NNN ` up to the
/// line's end. A status line without one (`HTTP/1.1 200\r\n`) has an empty reason, which is
/// kept (as hyper kept it) so the client is not shown a phrase the upstream did not send.
fn reason_span(head: &[u8]) -> Option<std::ops::Range<usize>> {
    // httparse skipped empty lines before the status line; so does this.
    let line = head.iter().position(|b| *b != b'\r' && *b != b'\n')?;
    // "HTTP/1.x" SP 3DIGIT SP: the reason starts 13 bytes into the line.
    let start = line + 13;
    match head.get(start - 1) {
        Some(b' ') => {}
        Some(_) => return Some(start - 1..start - 1),
        None => return None,
    }
    let len = head
        .get(start..)?
        .iter()
        .position(|b| *b == b'\r' || *b == b'\n')?;
    Some(start..start + len)
}

/// Fields a forwarded request head may gain: the trace layer inserts up to this many (W3C,
/// B3, Jaeger, a template), which must not regrow the table, and looks up a dozen names that
/// are mostly absent (a miss in a nearly full table probes far).
const INSERT_ROOM: usize = 8;

/// The smallest field table a parsed request head gets (see `INSERT_ROOM`).
const MIN_FIELD_ROOM: usize = 16;

/// The fields httparse found in `raw` (the received head) as a [`HeaderMap`] over `head`
/// (its copy), with room for `capacity` fields, and their spellings.
fn fields(
    raw: &[u8],
    head: &Bytes,
    parsed: &[httparse::Header<'_>],
    capacity: usize,
) -> Result<(HeaderMap, HeaderCase), HeadError> {
    let mut headers = super::spare::header_map(capacity);
    let mut case = HeaderCase {
        head: head.clone(),
        names: Vec::with_capacity(parsed.len()),
        mixed: false,
    };
    for field in parsed {
        let spelled = field.name.as_bytes();
        // Standard names resolve without allocating; others take one small allocation for
        // the lower-cased name (`HeaderName` cannot borrow the head).
        let name = HeaderName::from_bytes(spelled).map_err(|_| HeadError::HeaderName)?;
        let value = HeaderValue::from_maybe_shared(head.slice(span_of(raw, field.value)))
            .map_err(|_| HeadError::HeaderValue)?;
        let span = span_of(raw, spelled);
        case.mixed |= spelled.iter().any(u8::is_ascii_uppercase);
        case.names.push(NameSpan {
            start: span.start,
            len: span.len(),
        });
        headers.append(name, value);
    }
    Ok((headers, case))
}

/// Writes a request head: request line, fields, blank line. `uri` is written as its form
/// asks: origin-form and asterisk-form byte for byte, authority-form as `host:port`,
/// absolute-form as `scheme://authority/path?query`.
pub(crate) fn write_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
    case: Option<&HeaderCase>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    match (uri.scheme(), uri.authority(), uri.path_and_query()) {
        (Some(scheme), Some(authority), pq) => {
            out.extend_from_slice(scheme.as_str().as_bytes());
            out.extend_from_slice(b"://");
            out.extend_from_slice(authority.as_str().as_bytes());
            let pq = pq.map_or("/", |pq| pq.as_str());
            out.extend_from_slice(if pq.is_empty() { b"/" } else { pq.as_bytes() });
        }
        (None, Some(authority), None) => out.extend_from_slice(authority.as_str().as_bytes()),
        (_, _, Some(pq)) if !pq.as_str().is_empty() => {
            out.extend_from_slice(pq.as_str().as_bytes())
        }
        _ => out.push(b'/'),
    }
    out.push(b' ');
    out.extend_from_slice(version_bytes(version));
    out.extend_from_slice(b"\r\n");
    write_fields(out, headers, case);
}

/// Writes a response head: status line, fields, blank line. `reason` replaces the canonical
/// reason phrase (unless it holds a byte a reason phrase may not: then the canonical one is
/// written, so a caller's mistake cannot split the head).
pub(crate) fn write_response_head(
    out: &mut Vec<u8>,
    version: Version,
    status: StatusCode,
    reason: Option<&[u8]>,
    headers: &HeaderMap,
    case: Option<&HeaderCase>,
) {
    out.extend_from_slice(version_bytes(version));
    out.push(b' ');
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    match reason.filter(|r| r.iter().all(|b| is_reason_byte(*b))) {
        Some(reason) => out.extend_from_slice(reason),
        None => out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    write_fields(out, headers, case);
}

/// `reason-phrase = 1*( HTAB / SP / VCHAR / obs-text )` (RFC 9112 §4).
fn is_reason_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// The version as written on a start line; only HTTP/1.0 and 1.1 exist here (anything else
/// is written as HTTP/1.1, the version this codec speaks).
fn version_bytes(version: Version) -> &'static [u8] {
    if version == Version::HTTP_10 {
        b"HTTP/1.0"
    } else {
        b"HTTP/1.1"
    }
}

/// Writes every field then the blank line: per name, its `i`-th value with its `i`-th
/// received spelling, or the lower-case `HeaderName` when there is none. `HeaderMap::iter`
/// yields each name's values together, so one forward scan of the spellings serves a name.
fn write_fields(out: &mut Vec<u8>, headers: &HeaderMap, case: Option<&HeaderCase>) {
    let case = case.filter(|c| c.mixed);
    let mut current: Option<&HeaderName> = None;
    let mut spellings = None;
    for (name, value) in headers {
        if current != Some(name) {
            current = Some(name);
            spellings = case.map(|c| c.spellings(name));
        }
        let spelled = spellings
            .as_mut()
            .and_then(Iterator::next)
            .unwrap_or(name.as_str().as_bytes());
        out.extend_from_slice(spelled);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}
