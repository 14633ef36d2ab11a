//! The upstream-facing HTTP/1 connection driver: sends one request on a connection and hands
//! back the response head with its body streaming from the socket, then — once that body was
//! read to its end — the connection itself, when it may carry another request.
//!
//! It mirrors what hyper's client did, which the integration tests rely on (see the module
//! doc of [`super`]): the head is written with the codec's case-preserving writer and no field
//! is added but the body's framing, chosen as hyper chose it ([`plan`]); interim responses
//! other than `101` are skipped; a `101` (or a 2xx to `CONNECT`) hands the socket over as an
//! [`Upgraded`]. The response carries its [`HeaderCase`] and [`ReasonPhrase`] so that the
//! server side writes it back as received.
//!
//! Full duplex: the response head is read while the request body is written (an upstream may
//! answer early — `413` — and stop reading). When the head arrives first, the rest of the body
//! is written by a task of its own, and the connection is not reused (an upstream that
//! answered without draining the body would read its rest as the next request).
//!
//! Buffers: an idle [`Connection`] is its two stream halves and nothing else. A read buffer
//! exists during an exchange only ([`ReadSide`] releases it whenever a read finds nothing),
//! and the head is written from a `Vec` that lives for the request's write.

use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::chunked::ChunkedDecoder;
use super::error::{BoxError, Error};
use super::ext::{BoxRead, BoxWrite, ReasonPhrase, Upgraded};
use super::framing::{
    BodyFraming, FramingError, chunked_last, content_length, keep_alive, response_body,
};
use super::head::{HeadError, HeadLimits, HeaderCase, ResponseHead, parse_response};
use super::incoming::{Delimited, HeadRead, Incoming, ReadSide, Returned};
use super::response::{Outgoing, WriteBody};
use super::spare;

/// Room reserved for a request head (most fit; a larger one grows the `Vec` once or twice).
const HEAD_CAPACITY: usize = 512;

/// The driver's settings, shared by every upstream connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientSettings {
    /// Bounds of a response head (and of a chunked response body's trailers). hyper's client
    /// allowed about 400 KiB and 100 fields.
    pub(crate) limits: HeadLimits,
}

impl Default for ClientSettings {
    /// What hyper's client allowed a response head, which the pool used (its default
    /// `max_buf_size`, 8 KiB + 100 × 4 KiB, and 100 fields): the wiring keeps upstream
    /// behaviour unchanged with these.
    fn default() -> Self {
        ClientSettings {
            limits: HeadLimits {
                max_head_bytes: 8192 + 4096 * 100,
                max_headers: 100,
            },
        }
    }
}

/// One upstream HTTP/1 connection. Idle, it holds its two halves and no buffer (hyper kept
/// 8 KiB read + 8 KiB write buffers and a request channel per pooled connection).
pub(crate) struct Connection {
    /// The stream's read half (a response's read buffer exists only during an exchange).
    read: BoxRead,
    /// The stream's write half (a request's head is framed in a `Vec` of the exchange).
    write: BoxWrite,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

/// The outcome of a successful [`Connection::send`].
#[derive(Debug)]
pub(crate) struct Exchange {
    /// The response, its body reading from the upstream (empty after a protocol switch). It
    /// carries the received [`HeaderCase`], and a [`ReasonPhrase`] when the reason was not
    /// the canonical one.
    pub(crate) response: Response<Incoming>,
    /// Gives the connection back once the response body was read to its end. Keep it for as
    /// long as the response body streams: dropped earlier, a request body still being written
    /// is left to finish on its own.
    pub(crate) reuse: Reuse,
    /// After a `101`, or a 2xx to `CONNECT`: the socket, with the bytes read past the head.
    pub(crate) upgraded: Option<Upgraded>,
}

/// Why an exchange failed. Only [`SendError::Unsent`] may be retried on another connection:
/// every other variant may have reached the upstream.
pub(crate) enum SendError<B> {
    /// Not one byte of the request was written (the socket had failed): the request, whole.
    /// A request whose body had started to be read (one with body bytes to send) is never
    /// given back: it is reported as [`SendError::Io`].
    Unsent {
        /// The request, as it was given (framing fields may have been adjusted); boxed, as it
        /// is rare and large.
        request: Box<Request<B>>,
        /// Why the first write failed.
        error: io::Error,
    },
    /// The upstream's socket failed before a complete response head.
    Io(io::Error),
    /// The upstream closed the connection before a complete response head.
    Closed,
    /// The response head is malformed or over the limits.
    Head(HeadError),
    /// The response's body framing cannot be trusted.
    Framing(FramingError),
    /// The request body failed (the client's body: say, a malformed chunked body); its own
    /// error is the [`std::error::Error::source`], so the caller can answer `400`, not `502`.
    Body(BoxError),
}

impl<B> fmt::Debug for SendError<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Unsent { error, .. } => f.debug_tuple("Unsent").field(error).finish(),
            SendError::Io(e) => f.debug_tuple("Io").field(e).finish(),
            SendError::Closed => f.write_str("Closed"),
            SendError::Head(e) => f.debug_tuple("Head").field(e).finish(),
            SendError::Framing(e) => f.debug_tuple("Framing").field(e).finish(),
            SendError::Body(e) => f.debug_tuple("Body").field(e).finish(),
        }
    }
}

impl<B> fmt::Display for SendError<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Unsent { error, .. } => {
                write!(f, "upstream connection failed before the request: {error}")
            }
            SendError::Io(e) => write!(f, "upstream connection failed: {e}"),
            SendError::Closed => {
                f.write_str("upstream closed the connection before a complete response head")
            }
            SendError::Head(e) => write!(f, "upstream response head refused: {e}"),
            SendError::Framing(e) => write!(f, "upstream response framing refused: {e}"),
            SendError::Body(e) => write!(f, "request body failed: {e}"),
        }
    }
}

impl<B> std::error::Error for SendError<B> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Unsent { error, .. } | SendError::Io(error) => Some(error),
            SendError::Closed => None,
            SendError::Head(e) => Some(e),
            SendError::Framing(e) => Some(e),
            SendError::Body(e) => Some(&**e),
        }
    }
}

/// The request body being written while the response head is awaited.
type Writing = Pin<Box<dyn Future<Output = (BoxWrite, Result<(), Error>)> + Send>>;

/// Where the write half is during an exchange.
enum WriteSide {
    /// The request is written; the half is free.
    Done(BoxWrite),
    /// The body is still being written.
    Writing(Writing),
    /// Writing failed on the socket: the connection cannot be reused.
    Failed,
}

impl Connection {
    /// A connection from a stream already split (the pool splits a `TcpStream` with
    /// `into_split`, which takes no lock).
    pub(crate) fn new(read: BoxRead, write: BoxWrite) -> Self {
        Connection { read, write }
    }

    /// Whether an idle pooled connection may be used: one non-blocking read (no waker kept)
    /// must find nothing. The end of the stream, an error or unexpected bytes mean the
    /// upstream closed it or broke it: drop it. Costs nothing while idle.
    pub(crate) fn is_reusable(&mut self) -> bool {
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        // Unconstrained: a task out of tokio's coop budget would see `Pending` from a closed
        // socket too, and reuse it.
        let probe = tokio::task::unconstrained(poll_fn(|cx| {
            Pin::new(&mut self.read).poll_read(cx, &mut buf)
        }));
        pin!(probe).poll(&mut cx).is_pending()
    }

    /// Sends `req` and returns the response head with its body streaming from the connection.
    /// The request's method, target and version are written as given (the caller sets
    /// origin-form and HTTP/1.1), its fields with their [`HeaderCase`] spellings when the
    /// request carries one; only the body's framing fields are adjusted ([`plan`]).
    ///
    /// Dropping the future at any point leaves nothing running.
    pub(crate) fn send<B>(
        self,
        req: Request<B>,
        settings: &ClientSettings,
    ) -> impl Future<Output = Result<Exchange, SendError<B>>> + Send + use<B>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // The head is framed before the future exists: the future then holds the request's
        // parts and body once (as its captures), not twice (captures and locals).
        let limits = settings.limits;
        let Connection { read, mut write } = self;
        let (mut parts, body) = req.into_parts();
        let method = parts.method.clone();
        let request_keep =
            parts.version == Version::HTTP_11 && keep_alive(parts.version, &parts.headers);
        let outgoing = plan(
            &parts.method,
            parts.version,
            &mut parts.headers,
            body.is_end_stream(),
            body.size_hint().exact(),
        );
        let mut pending = Vec::with_capacity(HEAD_CAPACITY);
        super::head::write_request_head(
            &mut pending,
            &parts.method,
            &parts.uri,
            parts.version,
            &parts.headers,
            parts.extensions.get::<HeaderCase>(),
        );
        async move {
            let mut write_side = if outgoing == Outgoing::None {
                match write_head(&mut write, &pending).await {
                    Ok(()) => {
                        // Nothing of the request is kept while the response is awaited (a
                        // body at its end, or one hyper would not send either, is dropped).
                        spare::give_back_header_map(std::mem::take(&mut parts.headers));
                        drop((pending, parts, body));
                        WriteSide::Done(write)
                    }
                    Err((error, false)) => {
                        let request = Box::new(Request::from_parts(parts, body));
                        return Err(SendError::Unsent { request, error });
                    }
                    Err((error, true)) => return Err(SendError::Io(error)),
                }
            } else {
                spare::give_back_header_map(std::mem::take(&mut parts.headers));
                drop(parts);
                WriteSide::Writing(Box::pin(async move {
                    let written = WriteBody::new(&mut write, pending, body, outgoing).await;
                    if written.is_err() {
                        // The upstream must not wait for the rest of a request that will
                        // never come (the task's output keeps the half until reclaimed).
                        let _ = write.shutdown().await;
                    }
                    (write, written)
                }))
            };
            let mut read = ReadSide::new(read, BytesMut::new());
            let head = await_head(&mut read, &limits, &mut write_side).await?;
            finish(head, read, write_side, &method, request_keep, limits).await
        }
    }
}

/// Chooses how the request body goes on the wire, and fixes the framing fields to match, as
/// hyper's client did:
///
/// - a body already at its end (`is_end_stream`) is sent as none: no field added, any
///   `Transfer-Encoding` removed (so an empty `POST` goes without `Content-Length`, as
///   hyper sent it);
/// - HTTP/1.0: the `Content-Length` given, else the exact size (added), else no body at all;
/// - a `Transfer-Encoding` given is kept (with `chunked` added when not last), the
///   `Content-Length` removed;
/// - a valid `Content-Length` given is honoured;
/// - else an exact size hint adds `content-length`; an unknown length is sent chunked,
///   except for `GET`, `HEAD` and `CONNECT`, which hyper sent without a body.
pub(crate) fn plan(
    method: &Method,
    version: Version,
    headers: &mut HeaderMap,
    end_stream: bool,
    exact: Option<u64>,
) -> Outgoing {
    if end_stream {
        headers.remove(header::TRANSFER_ENCODING);
        return Outgoing::None;
    }
    let given = content_length(headers).unwrap_or_else(|_| {
        // Several disagreeing or malformed lengths: replaced below, never forwarded.
        headers.remove(header::CONTENT_LENGTH);
        None
    });
    if version != Version::HTTP_11 {
        headers.remove(header::TRANSFER_ENCODING);
        return match (given, exact) {
            (Some(n), _) => Outgoing::Length(n),
            (None, Some(n)) => set_length(headers, n),
            (None, None) => Outgoing::None,
        };
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
        if !chunked_last(headers) {
            headers.append(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
        }
        return Outgoing::Chunked;
    }
    match (given, exact) {
        (Some(n), _) => Outgoing::Length(n),
        (None, Some(n)) => set_length(headers, n),
        (None, None) if matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) => {
            Outgoing::None
        }
        (None, None) => {
            headers.insert(
                header::TRANSFER_ENCODING,
                HeaderValue::from_static("chunked"),
            );
            Outgoing::Chunked
        }
    }
}

/// Adds `content-length: n` and frames the body with it.
fn set_length(headers: &mut HeaderMap, n: u64) -> Outgoing {
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    Outgoing::Length(n)
}

/// Writes a head that has no body behind it; the error says whether any byte went out (when
/// none did, the request may be sent elsewhere).
async fn write_head(out: &mut BoxWrite, head: &[u8]) -> Result<(), (io::Error, bool)> {
    let n = match out.write(head).await {
        Ok(0) => return Err((io::ErrorKind::WriteZero.into(), false)),
        Ok(n) => n,
        Err(e) => return Err((e, false)),
    };
    out.write_all(&head[n..]).await.map_err(|e| (e, true))?;
    out.flush().await.map_err(|e| (e, true))
}

/// What finished first while waiting for the response head.
enum Step {
    /// The request body's writer, with the write half.
    Written((BoxWrite, Result<(), Error>)),
    /// The response head (or why there is none).
    Read(Result<ResponseHead, HeadRead>),
}

/// Reads the final response head while the request body is written (full duplex). A body
/// that fails ends the exchange with its error; a socket that fails on the write side does
/// not: the upstream may have answered and closed (the head is still read).
async fn await_head<B>(
    read: &mut ReadSide,
    limits: &HeadLimits,
    write: &mut WriteSide,
) -> Result<ResponseHead, SendError<B>> {
    let mut reading = pin!(final_head(read, limits));
    loop {
        let step = poll_fn(|cx| {
            if let WriteSide::Writing(writing) = write
                && let Poll::Ready(done) = writing.as_mut().poll(cx)
            {
                return Poll::Ready(Step::Written(done));
            }
            reading.as_mut().poll(cx).map(Step::Read)
        })
        .await;
        match step {
            Step::Written((out, Ok(()))) => *write = WriteSide::Done(out),
            Step::Written((_, Err(Error::Body(e)))) => return Err(SendError::Body(e)),
            Step::Written((_, Err(e))) => {
                tracing::debug!(error = %e, "upstream write failed; reading its response anyway");
                *write = WriteSide::Failed;
            }
            Step::Read(Ok(head)) => return Ok(head),
            Step::Read(Err(HeadRead::Closed)) => return Err(SendError::Closed),
            Step::Read(Err(HeadRead::Io(e))) => return Err(SendError::Io(e)),
            Step::Read(Err(HeadRead::Invalid(e))) => return Err(SendError::Head(e)),
        }
    }
}

/// Reads response heads until one is final: interim responses (`100`, `102`, `103`) are
/// skipped, as hyper's client skipped them; a `101` is final (a protocol switch).
async fn final_head(read: &mut ReadSide, limits: &HeadLimits) -> Result<ResponseHead, HeadRead> {
    loop {
        let head = read.read_head(limits, parse_response).await?;
        if !head.status.is_informational() || head.status == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(head);
        }
    }
}

/// Builds the exchange from the final head: a protocol switch hands the socket over; else the
/// body is framed as [`response_body`] says and the connection's return prepared.
async fn finish<B>(
    head: ResponseHead,
    read: ReadSide,
    write: WriteSide,
    method: &Method,
    request_keep: bool,
    limits: HeadLimits,
) -> Result<Exchange, SendError<B>> {
    let framing = response_body(method, &head).map_err(SendError::Framing)?;
    let switched = head.status == StatusCode::SWITCHING_PROTOCOLS
        || (*method == Method::CONNECT && head.status.is_success());
    if switched {
        let write = match write {
            WriteSide::Done(out) => out,
            // The request of a protocol switch seldom has a body; the tunnel waits for it.
            WriteSide::Writing(writing) => match writing.await {
                (out, Ok(())) => out,
                (_, Err(Error::Body(e))) => return Err(SendError::Body(e)),
                (_, Err(e)) => return Err(SendError::Io(io::Error::other(e))),
            },
            WriteSide::Failed => {
                return Err(SendError::Io(io::Error::other(
                    "upstream write failed before a protocol switch",
                )));
            }
        };
        let ReadSide { io, buf } = read;
        let upgraded = Upgraded::new(io, write, buf.freeze());
        return Ok(Exchange {
            response: response(head, Incoming::empty()),
            reuse: Reuse::gone(),
            upgraded: Some(upgraded),
        });
    }
    // An answer that came before the request body was written is never followed by another
    // request on this connection: an upstream that answers early without draining the body
    // (and without `Connection: close`) would read the rest of it as the next request,
    // someone else's (smuggling). The body is still finished for this exchange.
    let answered_early = matches!(write, WriteSide::Writing(_));
    let keep = request_keep
        && !answered_early
        && keep_alive(head.version, &head.headers)
        && framing != BodyFraming::CloseDelimited;
    let write = match write {
        WriteSide::Done(out) => WriteBack::Here(out),
        WriteSide::Writing(writing) => WriteBack::Task(tokio::spawn(writing)),
        WriteSide::Failed => WriteBack::Gone,
    };
    let delimited = match framing {
        BodyFraming::Empty => None,
        BodyFraming::Length(n) => Some(Delimited::Length(n)),
        BodyFraming::Chunked => Some(Delimited::Chunked(ChunkedDecoder::new(limits))),
        BodyFraming::CloseDelimited => Some(Delimited::UntilClose),
    };
    let (body, read) = match delimited {
        None => (Incoming::empty(), ReadBack::Here(read)),
        Some(delimited) => {
            let (done, back) = oneshot::channel();
            (
                Incoming::new(read, delimited, done, None),
                ReadBack::Body(back),
            )
        }
    };
    Ok(Exchange {
        response: response(head, body),
        reuse: Reuse { keep, read, write },
        upgraded: None,
    })
}

/// The response from its head, with the extensions that let the server side write it back
/// as received.
fn response(head: ResponseHead, body: Incoming) -> Response<Incoming> {
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    if head.case.is_needed() {
        response.extensions_mut().insert(head.case);
    }
    if let Some(reason) = head.reason {
        response.extensions_mut().insert(ReasonPhrase(reason));
    }
    response
}

/// Where the read half is after the head.
enum ReadBack {
    /// No body: the driver kept it.
    Here(ReadSide),
    /// The response body has it; it comes back when the body is finished or dropped.
    Body(oneshot::Receiver<Returned>),
    /// Taken.
    Gone,
}

/// Where the write half is after the head.
enum WriteBack {
    /// The request was written.
    Here(BoxWrite),
    /// The rest of the request body is being written by a task of its own.
    Task(JoinHandle<(BoxWrite, Result<(), Error>)>),
    /// Failed or taken.
    Gone,
}

/// Gives an exchange's connection back when it may carry another request. Holds the response
/// body's return channel and, when the response came before the request was written, the
/// request body's writer task.
pub(crate) struct Reuse {
    /// Whether both sides let the connection persist and the body is not close-delimited.
    keep: bool,
    /// The read half, or where it comes back from.
    read: ReadBack,
    /// The write half, or the task that still has it.
    write: WriteBack,
}

impl fmt::Debug for Reuse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reuse")
            .field("keep", &self.keep)
            .finish_non_exhaustive()
    }
}

impl Reuse {
    /// Nothing to give back (after a protocol switch).
    fn gone() -> Self {
        Reuse {
            keep: false,
            read: ReadBack::Gone,
            write: WriteBack::Gone,
        }
    }

    /// The connection, if it may carry another request; non-blocking. Call it once the
    /// response body was read to its end and dropped. `None` unless: the request was fully
    /// written before the answer came, the response body was read to its
    /// end with nothing after it, and both the request (HTTP/1.1, no `Connection: close`) and
    /// the response ([`keep_alive`]) let the connection persist, the body not close-delimited.
    pub(crate) fn reclaim(mut self) -> Option<Connection> {
        if !self.keep {
            return None;
        }
        let read = match std::mem::replace(&mut self.read, ReadBack::Gone) {
            ReadBack::Here(read) => read,
            ReadBack::Body(mut back) => match back.try_recv() {
                Ok(Returned {
                    read,
                    complete: true,
                    ..
                }) => read,
                _ => return None,
            },
            ReadBack::Gone => return None,
        };
        let ReadSide { io, buf } = read;
        if !buf.is_empty() {
            // Bytes the upstream sent past the response: it is broken.
            return None;
        }
        // The idle connection holds no buffer; the next read on this thread reuses it.
        spare::give_back(buf);
        let write = match std::mem::replace(&mut self.write, WriteBack::Gone) {
            WriteBack::Here(out) => out,
            // A writer task means the answer came before the request was written, which is
            // never kept (`keep` is false, so this is not reached); `Drop` stops the task.
            WriteBack::Task(_) | WriteBack::Gone => return None,
        };
        Some(Connection { read: io, write })
    }
}

impl Drop for Reuse {
    /// A request body writer still running is stopped once the response is over (its body
    /// done or dropped): the connection will not be reused, so there is no point finishing
    /// the request. While the response body still streams, the writer is left to end with
    /// its body or its socket (full-duplex exchanges keep going).
    fn drop(&mut self) {
        let WriteBack::Task(task) = &self.write else {
            return;
        };
        let streaming = match &mut self.read {
            ReadBack::Body(back) => {
                matches!(back.try_recv(), Err(oneshot::error::TryRecvError::Empty))
            }
            _ => false,
        };
        if !streaming {
            task.abort();
        }
    }
}
