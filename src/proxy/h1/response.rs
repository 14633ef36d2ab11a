//! Writing a response to the client: the head through the codec's case-preserving writer, then
//! the body framed as the client can read it.
//!
//! The framing follows what hyper's server did, which the integration tests pin: a response
//! that cannot have a body (to HEAD, 1xx, 204, 304, a 2xx to CONNECT) is written without one
//! and keeps its fields (HEAD keeps the GET's `Content-Length`); a `Content-Length` is kept and
//! honoured; a body of known size without one gets one (hyper did, for stitch's own short
//! answers); a body of unknown length goes chunked to an HTTP/1.1 client and close-delimited
//! to an HTTP/1.0 one. No other field is added (no `Date`, no `Via`) but `Connection: close`
//! when the connection ends after a response the client expected to keep it open, and
//! `Connection: keep-alive` to an HTTP/1.0 client whose connection stays open.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Buf;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::chunked::{CHUNK_END, encode_chunk_header, encode_last_chunk};
use super::error::{BoxError, Error};
use super::ext::ReasonPhrase;
use super::framing::{chunked_last, connection_tokens, keep_alive};
use super::head::{HeaderCase, write_response_head};

/// Data frames up to this size are copied behind the head or a chunk's size line, so that a
/// small response goes out in one write; larger ones are written from their own buffer.
const COPY_MAX: usize = 8 * 1024;

/// The pending output is written once it reaches this much.
const WRITE_AT: usize = 16 * 1024;

/// What the driver knows about the request a response answers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answering {
    /// The request was `HEAD`: no body, whatever the fields say.
    pub(crate) head: bool,
    /// The request was `CONNECT`: a 2xx has no body (it opens a tunnel).
    pub(crate) connect: bool,
    /// The request's version: an HTTP/1.0 client cannot read chunked.
    pub(crate) version: Version,
    /// Whether the request let the connection persist ([`keep_alive`]): `Connection: close` is
    /// added only when the client expected otherwise.
    pub(crate) client_keep_alive: bool,
}

/// How the body goes on the wire towards the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// No body bytes at all.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding (an HTTP/1.1 client).
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, or a coding other than chunked).
    Close,
}

/// Decides the body's framing and fixes the framing fields of `headers` to match it; `keep`
/// is cleared when the connection must close after this response.
pub(crate) fn plan(
    answering: &Answering,
    status: StatusCode,
    headers: &mut HeaderMap,
    exact_size: Option<u64>,
    keep: &mut bool,
) -> Outgoing {
    let code = status.as_u16();
    if answering.head
        || status.is_informational()
        || code == 204
        || code == 304
        || (answering.connect && status.is_success())
    {
        return Outgoing::None;
    }
    let http11 = answering.version == Version::HTTP_11;
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
        if http11 && chunked_last(headers) {
            return Outgoing::Chunked;
        }
        if !http11 {
            headers.remove(header::TRANSFER_ENCODING);
        }
        *keep = false;
        return Outgoing::Close;
    }
    if headers.contains_key(header::CONTENT_LENGTH) {
        if let Some(n) = single_length(headers) {
            return Outgoing::Length(n);
        }
        // A length the service got wrong (several, or not a number): written as unknown.
        headers.remove(header::CONTENT_LENGTH);
    } else if let Some(n) = exact_size {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        return Outgoing::Length(n);
    }
    if http11 {
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        Outgoing::Chunked
    } else {
        *keep = false;
        Outgoing::Close
    }
}

/// The one `Content-Length` value of `headers` as a number, if there is exactly one valid one.
fn single_length(headers: &HeaderMap) -> Option<u64> {
    let mut all = headers.get_all(header::CONTENT_LENGTH).iter();
    let (Some(value), None) = (all.next(), all.next()) else {
        return None;
    };
    let text = value.to_str().ok()?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Adds the `Connection` field that tells the client what happens to the connection: `close`
/// when it ends though the client expected it to stay (shutdown, a close-delimited body, an
/// unusable request body), `keep-alive` for an HTTP/1.0 client whose connection stays.
fn connection_field(answering: &Answering, headers: &mut HeaderMap, keep: bool) {
    let says_close = connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(b"close"));
    if !keep && answering.client_keep_alive && !says_close {
        headers.append(header::CONNECTION, HeaderValue::from_static("close"));
    } else if keep
        && answering.version == Version::HTTP_10
        && !connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(b"keep-alive"))
    {
        headers.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    }
}

/// Writes one response on the connection's write half.
#[derive(Debug)]
pub(crate) struct ResponseWriter<'a, W> {
    out: &'a mut W,
    answering: Answering,
}

impl<'a, W: AsyncWrite + Unpin> ResponseWriter<'a, W> {
    /// A writer of the response to the request `answering` describes.
    pub(crate) fn new(out: &'a mut W, answering: Answering) -> Self {
        ResponseWriter { out, answering }
    }

    /// Starts writing `response`: frames its head and returns the body's writer (head, then
    /// body, when awaited) with whether the connection may carry another request after it.
    /// `keep` says whether it may as far as the driver knows; it may not after a
    /// close-delimited body, nor when the response itself says `Connection: close`. The head
    /// goes out with the first body bytes when they are ready at once, else by itself. The
    /// response's head is dropped here: only the body is held while it is written.
    pub(crate) fn start<B>(self, response: Response<B>, keep: bool) -> (WriteBody<'a, W, B>, bool)
    where
        B: Body<Data = bytes::Bytes>,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = response.into_parts();
        let mut keep = keep && keep_alive(Version::HTTP_11, &parts.headers);
        let exact = body.size_hint().exact();
        let outgoing = plan(
            &self.answering,
            parts.status,
            &mut parts.headers,
            exact,
            &mut keep,
        );
        connection_field(&self.answering, &mut parts.headers, keep);
        let mut pending = Vec::with_capacity(256);
        let reason = parts.extensions.get::<ReasonPhrase>().map(|r| &r.0[..]);
        let case = parts.extensions.get::<HeaderCase>();
        write_response_head(
            &mut pending,
            parts.version,
            parts.status,
            reason,
            &parts.headers,
            case,
        );
        super::spare::give_back_header_map(parts.headers);
        (WriteBody::new(self.out, pending, body, outgoing), keep)
    }
}

pin_project! {
    /// Writes `pending` (bytes already framed: a head) then `body` framed as `outgoing` says,
    /// and flushes. Shared by the response writer and the upstream driver's request writer.
    /// Frames up to [`COPY_MAX`] are copied behind what is pending, so a head and a small body
    /// ready at once go out in one write; larger ones are written from their own buffer (never
    /// copied). Pending bytes are written out before the body is polled again whenever it has
    /// nothing ready, and once they reach [`WRITE_AT`]. A body error is [`Error::Body`] (the
    /// body's own error, boxed), a socket error [`Error::Io`]. Chunked trailers frames become
    /// the chunked trailer section.
    ///
    /// A future of its own rather than an `async fn`: it is part of every connection's state
    /// (a connection task is as large as the largest thing it awaits), and an `async fn`
    /// holds its body twice (argument and pinned local) and each nested one's state beside
    /// it — 1,424 bytes for a response; this holds the body once.
    pub(crate) struct WriteBody<'a, W, B> {
        out: &'a mut W,
        pending: Vec<u8>,
        // How much of `pending` is written.
        sent: usize,
        // A data frame larger than `COPY_MAX`, written from its own buffer after `pending`.
        large: Option<bytes::Bytes>,
        outgoing: Outgoing,
        // Body bytes still owed to a `Content-Length`.
        left: Option<u64>,
        trailers: Option<HeaderMap>,
        step: Step,
        // The error to fail with once what is pending went out.
        failure: Option<Error>,
        #[pin]
        body: B,
    }
}

/// Where a [`WriteBody`] is.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Polling the body for its next frame.
    Reading,
    /// Writing out what is pending (and a large frame), then taking the given step.
    Draining(After),
    /// Flushing after the last bytes.
    Flushing,
}

/// What a [`WriteBody`] does once what is pending went out.
#[derive(Debug, Clone, Copy)]
enum After {
    /// Reads the next frame.
    Reading,
    /// Flushes: the body is done.
    Flushing,
    /// Fails with the writer's `failure`.
    Failing,
}

impl<'a, W, B> WriteBody<'a, W, B> {
    /// Writes `pending`, then `body` as `outgoing` says (no body bytes at all for
    /// [`Outgoing::None`]), on `out`.
    pub(crate) fn new(out: &'a mut W, pending: Vec<u8>, body: B, outgoing: Outgoing) -> Self {
        let step = match outgoing {
            Outgoing::None => Step::Draining(After::Flushing),
            _ => Step::Reading,
        };
        WriteBody {
            out,
            pending,
            sent: 0,
            large: None,
            outgoing,
            left: match outgoing {
                Outgoing::Length(n) => Some(n),
                _ => None,
            },
            trailers: None,
            step,
            failure: None,
            body,
        }
    }
}

impl<W, B> Future for WriteBody<'_, W, B>
where
    W: AsyncWrite + Unpin,
    B: Body<Data = bytes::Bytes>,
    B::Error: Into<BoxError>,
{
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.step {
                Step::Reading => {
                    let frame = match poll_boxed(this.body.as_mut(), cx) {
                        Poll::Pending if this.pending.is_empty() => return Poll::Pending,
                        Poll::Pending => {
                            // Nothing more is ready: what is pending goes out meanwhile.
                            *this.step = Step::Draining(After::Reading);
                            continue;
                        }
                        Poll::Ready(None) => {
                            *this.step = Step::Draining(finish(
                                *this.outgoing,
                                *this.left,
                                this.trailers,
                                this.pending,
                                this.failure,
                            ));
                            continue;
                        }
                        Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(Error::Body(e))),
                        Poll::Ready(Some(Ok(frame))) => frame,
                    };
                    match frame.into_data() {
                        Ok(data) => {
                            if let Some(after) = put_data(
                                data,
                                *this.outgoing,
                                this.left,
                                this.pending,
                                this.large,
                                this.failure,
                            ) {
                                *this.step = Step::Draining(after);
                            }
                        }
                        Err(frame) => *this.trailers = Frame::into_trailers(frame).ok(),
                    }
                }
                Step::Draining(after) => {
                    let after = *after;
                    ready!(drain(
                        this.out,
                        this.pending,
                        this.sent,
                        this.large,
                        *this.outgoing,
                        cx
                    ))?;
                    *this.step = match after {
                        After::Reading => Step::Reading,
                        After::Flushing => Step::Flushing,
                        After::Failing => {
                            let error = this.failure.take();
                            return Poll::Ready(Err(error.unwrap_or_else(|| {
                                Error::Body("the body writer was polled after it failed".into())
                            })));
                        }
                    };
                }
                Step::Flushing => {
                    return Pin::new(&mut **this.out).poll_flush(cx).map_err(Error::Io);
                }
            }
        }
    }
}

/// Frames `data` into `pending`, or queues it as `large` (behind its chunk size line) to be
/// written from its own buffer; `Some` when output must go out before the next frame (a
/// large frame, `pending` at [`WRITE_AT`], or a body longer than its length: the bytes up to
/// the length go, then the error put in `failure`).
fn put_data(
    mut data: bytes::Bytes,
    outgoing: Outgoing,
    left: &mut Option<u64>,
    pending: &mut Vec<u8>,
    large: &mut Option<bytes::Bytes>,
    failure: &mut Option<Error>,
) -> Option<After> {
    if data.is_empty() {
        return None;
    }
    let mut overflow = false;
    if let Some(left) = left {
        if data.len() as u64 > *left {
            data.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
            overflow = true;
        }
        *left -= data.len() as u64;
    }
    if outgoing == Outgoing::Chunked {
        encode_chunk_header(data.len() as u64, pending);
    }
    let big = data.len() > COPY_MAX;
    if big {
        // The chunk's end is added once the frame went out (see `drain`).
        *large = Some(data);
    } else {
        pending.extend_from_slice(&data);
        if outgoing == Outgoing::Chunked {
            pending.extend_from_slice(CHUNK_END);
        }
    }
    if overflow {
        *failure = Some(Error::Body("body longer than its Content-Length".into()));
        return Some(After::Failing);
    }
    (big || pending.len() >= WRITE_AT).then_some(After::Reading)
}

/// What follows the body's end once what is pending went out: the last chunk (with
/// trailers) is queued and the output flushed; a body short of its `Content-Length` fails
/// (the peer would wait for the rest).
fn finish(
    outgoing: Outgoing,
    left: Option<u64>,
    trailers: &Option<HeaderMap>,
    pending: &mut Vec<u8>,
    failure: &mut Option<Error>,
) -> After {
    match (outgoing, left) {
        (Outgoing::Chunked, _) => encode_last_chunk(trailers.as_ref(), pending),
        (Outgoing::Length(_), Some(left)) if left > 0 => {
            *failure = Some(Error::Body("body shorter than its Content-Length".into()));
            return After::Failing;
        }
        _ => {}
    }
    After::Flushing
}

/// Writes out what is pending, then a large frame (then queues its chunk end); ready when
/// both are out.
fn drain<W: AsyncWrite + Unpin>(
    out: &mut W,
    pending: &mut Vec<u8>,
    sent: &mut usize,
    large: &mut Option<bytes::Bytes>,
    outgoing: Outgoing,
    cx: &mut Context<'_>,
) -> Poll<Result<(), Error>> {
    while *sent < pending.len() {
        let n = ready!(Pin::new(&mut *out).poll_write(cx, &pending[*sent..]))?;
        if n == 0 {
            return Poll::Ready(Err(Error::Io(std::io::ErrorKind::WriteZero.into())));
        }
        *sent += n;
    }
    pending.clear();
    *sent = 0;
    if let Some(data) = large {
        while data.has_remaining() {
            let n = ready!(Pin::new(&mut *out).poll_write(cx, data))?;
            if n == 0 {
                return Poll::Ready(Err(Error::Io(std::io::ErrorKind::WriteZero.into())));
            }
            data.advance(n);
        }
        *large = None;
        if outgoing == Outgoing::Chunked {
            pending.extend_from_slice(CHUNK_END);
        }
    }
    Poll::Ready(Ok(()))
}

/// Polls `body` for a frame, its error boxed.
fn poll_boxed<B>(
    body: Pin<&mut B>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<bytes::Bytes>, BoxError>>>
where
    B: Body<Data = bytes::Bytes>,
    B::Error: Into<BoxError>,
{
    body.poll_frame(cx)
        .map(|frame| frame.map(|r| r.map_err(Into::into)))
}

/// Writes the answer to a request refused before the service saw it (`400`, `414`, `431`):
/// the status line, `content-length: 0` and `connection: close` — what hyper wrote, readable
/// by the simplest client — then closes the write side.
pub(crate) async fn write_refusal<W: AsyncWrite + Unpin>(
    out: &mut W,
    status: StatusCode,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(96);
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    write_response_head(&mut head, Version::HTTP_11, status, None, &headers, None);
    out.write_all(&head).await?;
    out.flush().await?;
    out.shutdown().await
}

/// The interim response to `Expect: 100-continue`.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
