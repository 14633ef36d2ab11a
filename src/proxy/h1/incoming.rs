//! A message body streamed from the connection's read side, and that read side itself.
//!
//! The driver reads a head, then moves the read side (the stream's read half and the bytes
//! read past the head) into an [`Incoming`]; the body reads from it directly, so a body
//! streams to the service in the pieces it arrives in, while the driver writes the response
//! on the write half (full duplex). When the body is finished — or dropped unfinished — the
//! read side goes back to the driver through a oneshot, with whatever was read past the body
//! (a pipelined next request), and says whether the body was read to its end: only then can
//! the connection carry another request.

use std::fmt;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::oneshot;

use super::chunked::{ChunkedDecoder, Decoded};
use super::error::Error;
use super::ext::BoxRead;
use super::head::{HeadError, HeadLimits};
use super::spare;

/// How much is read from the socket at once (and the read buffer's size when it is
/// (re)allocated): hyper's initial read size, and a page pair.
pub(crate) const READ_CHUNK: usize = 8 * 1024;

/// The read side of a client connection: the stream's read half, and bytes read from it but
/// not yet used (the rest of a head, a body's next bytes, a pipelined request).
///
/// The buffer is given up whenever a read finds nothing to read and nothing is buffered, so a
/// connection waiting for its client — between requests above all — holds no read buffer
/// (hyper kept 8 KiB per connection for its whole life; ARCHITECTURE.md issue 15).
pub(crate) struct ReadSide {
    /// The stream's read half.
    pub(crate) io: BoxRead,
    /// Read, not yet used.
    pub(crate) buf: BytesMut,
}

impl ReadSide {
    /// The read side of `io`, `buf` being bytes already read from it (protocol detection's).
    pub(crate) fn new(io: BoxRead, buf: BytesMut) -> Self {
        ReadSide { io, buf }
    }

    /// Reads once into the buffer (growing it by [`READ_CHUNK`] when it is full): the number
    /// of bytes read, `0` at the end of the stream. On `Pending` with nothing buffered the
    /// buffer is released (see the type's doc).
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() == 0 {
            return self.poll_fill_released(cx);
        }
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 8 {
            self.buf.reserve(READ_CHUNK);
        }
        let polled = tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf);
        if polled.is_pending() && self.buf.is_empty() {
            spare::give_back(std::mem::take(&mut self.buf));
        }
        polled
    }

    /// [`Self::poll_fill`] with no buffer (released while idle): reads onto the stack and
    /// takes a buffer only when bytes arrived, so a read that finds nothing — the idle wait's
    /// probe, the watch for a client leaving mid-exchange — allocates nothing (an 8 KiB
    /// allocation and free per probe were ~300 instructions each). The buffer is one this
    /// thread gave up before, when it has one ([`super::spare`]).
    fn poll_fill_released(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut read = ReadBuf::uninit(&mut stack);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
        let filled = read.filled();
        if !filled.is_empty() {
            self.buf = spare::take(filled.len());
            self.buf.extend_from_slice(filled);
        }
        Poll::Ready(Ok(filled.len()))
    }

    /// [`Self::poll_fill`] as a future.
    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Reads until `parse` (the codec's `parse_request` or `parse_response`) finds a complete
    /// head at the start of the buffer, and drops the head's bytes from it. `parse` runs only
    /// after a read brought a `\n` (and once on what is already buffered): a head trickled
    /// byte by byte costs linear time, not quadratic. Shared by both drivers.
    pub(crate) async fn read_head<T>(
        &mut self,
        limits: &HeadLimits,
        parse: impl Fn(&[u8], &HeadLimits) -> Result<Option<(T, usize)>, HeadError>,
    ) -> Result<T, HeadRead> {
        let mut scanned = 0;
        loop {
            if self.buf[scanned..].contains(&b'\n') {
                if let Some((head, len)) = parse(&self.buf, limits).map_err(HeadRead::Invalid)? {
                    self.buf.advance(len);
                    return Ok(head);
                }
            } else if self.buf.len() > limits.max_head_bytes {
                return Err(HeadRead::Invalid(HeadError::TooLarge));
            }
            scanned = self.buf.len();
            match self.fill().await {
                Ok(0) => return Err(HeadRead::Closed),
                Err(e) => return Err(HeadRead::Io(e)),
                Ok(_) => {}
            }
        }
    }
}

impl fmt::Debug for ReadSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadSide")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

/// Why [`ReadSide::read_head`] found no head.
#[derive(Debug)]
pub(crate) enum HeadRead {
    /// The peer closed the connection before a complete head (part of one may be buffered).
    Closed,
    /// The socket failed.
    Io(io::Error),
    /// The head is malformed or over the limits.
    Invalid(HeadError),
}

/// What an [`Incoming`] hands back to the driver when it is done with the read side.
#[derive(Debug)]
pub(crate) struct Returned {
    /// The read side, positioned right after the body.
    pub(crate) read: ReadSide,
    /// Whether the body was read to its end (otherwise the connection cannot be reused: where
    /// the next request starts is unknown).
    pub(crate) complete: bool,
    /// Whether the body ended because the peer closed the connection (or its socket failed)
    /// before the body's end: the peer is gone, as opposed to a body refused for its framing
    /// or one dropped unread.
    pub(crate) closed: bool,
}

/// How the body is delimited on the wire (the subset of
/// [`super::framing::BodyFraming`] that has bytes to read).
#[derive(Debug)]
pub(crate) enum Delimited {
    /// This many bytes left.
    Length(u64),
    /// Chunked; the decoder is bounded by the message's head limits.
    Chunked(ChunkedDecoder),
    /// Until the peer closes (responses only: the upstream side's later step).
    UntilClose,
}

/// A request body (and, in the next step, a response body) streaming from an HTTP/1
/// connection. Data frames are slices of the connection's read buffer (no copy); trailers of
/// a chunked body arrive as a trailers frame.
pub(crate) struct Incoming {
    /// `None` for a message without a body. Boxed: the request (with its body) is held by
    /// value in every in-flight request's future, and a body's reading state is several
    /// times the size of the rest of it.
    stream: Option<Box<Streaming>>,
}

/// The state of a body with bytes to read.
struct Streaming {
    /// The read side, until the body is done with it.
    read: Option<ReadSide>,
    delimited: Delimited,
    /// Where the read side goes when the body is done with it.
    done: Option<oneshot::Sender<Returned>>,
    /// Tells the driver to write `100 Continue` (on the first poll of a request that asked).
    continue_wanted: Option<oneshot::Sender<()>>,
}

impl Incoming {
    /// A body with nothing to read.
    pub(crate) fn empty() -> Self {
        Incoming { stream: None }
    }

    /// A body read from `read` as `delimited` says; the read side is sent to `done` when the
    /// body is finished or dropped. `continue_wanted` is signalled on the first poll (the
    /// driver then writes `100 Continue`).
    pub(crate) fn new(
        read: ReadSide,
        delimited: Delimited,
        done: oneshot::Sender<Returned>,
        continue_wanted: Option<oneshot::Sender<()>>,
    ) -> Self {
        Incoming {
            stream: Some(Box::new(Streaming {
                read: Some(read),
                delimited,
                done: Some(done),
                continue_wanted,
            })),
        }
    }
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Incoming");
        if let Some(s) = &self.stream {
            d.field("delimited", &s.delimited)
                .field("reading", &s.read.is_some());
        }
        d.finish()
    }
}

impl Streaming {
    /// Hands the read side back; `complete` says whether the body was read to its end,
    /// `closed` whether the peer went away before it.
    fn finish(&mut self, complete: bool, closed: bool) {
        if let (Some(read), Some(done)) = (self.read.take(), self.done.take()) {
            let _ = done.send(Returned {
                read,
                complete,
                closed,
            });
        }
    }

    /// Ends the body with `error` (the read side goes back marked incomplete, and closed when
    /// the error is the peer's close or its socket's failure).
    fn fail(&mut self, error: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let closed = matches!(error, Error::Io(_) | Error::IncompleteBody);
        self.finish(false, closed);
        Poll::Ready(Some(Err(error)))
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if let Some(wanted) = self.continue_wanted.take() {
            let _ = wanted.send(());
        }
        let Some(read) = self.read.as_mut() else {
            return Poll::Ready(None);
        };
        match &mut self.delimited {
            Delimited::Length(left) => {
                if read.buf.is_empty() {
                    match ready!(read.poll_fill(cx)) {
                        Err(e) => return self.fail(Error::Io(e)),
                        Ok(0) => return self.fail(Error::IncompleteBody),
                        Ok(_) => {}
                    }
                }
                let take = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(read.buf.len());
                let data = read.buf.split_to(take).freeze();
                *left -= take as u64;
                if *left == 0 {
                    self.finish(true, false);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Delimited::Chunked(decoder) => loop {
                match decoder.decode(&mut read.buf) {
                    Err(e) => return self.fail(Error::Chunked(e)),
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(trailers)) => {
                        if decoder.is_done() {
                            self.finish(true, false);
                        }
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Decoded::End) => {
                        self.finish(true, false);
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => match ready!(read.poll_fill(cx)) {
                        Err(e) => return self.fail(Error::Io(e)),
                        Ok(0) => return self.fail(Error::IncompleteBody),
                        Ok(_) => {}
                    },
                }
            },
            Delimited::UntilClose => {
                if read.buf.is_empty() {
                    match ready!(read.poll_fill(cx)) {
                        Err(e) => return self.fail(Error::Io(e)),
                        Ok(0) => {
                            // The end of the stream is the end of the body; nothing can follow
                            // (and the close was no failure).
                            self.finish(false, false);
                            return Poll::Ready(None);
                        }
                        Ok(_) => {}
                    }
                }
                let data = read.buf.split().freeze();
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
        }
    }

    /// At drop: whether the rest of the body is already buffered (a small body the service
    /// did not read); then it is skipped and the connection stays usable.
    fn skip_buffered(&mut self) -> bool {
        let Some(read) = self.read.as_mut() else {
            return false;
        };
        match &mut self.delimited {
            Delimited::Length(left) => {
                let buffered = read.buf.len() as u64;
                if buffered < *left {
                    return false;
                }
                read.buf
                    .advance(usize::try_from(*left).unwrap_or(usize::MAX));
                *left = 0;
                true
            }
            Delimited::Chunked(decoder) => loop {
                match decoder.decode(&mut read.buf) {
                    Ok(Decoded::End) => return true,
                    Ok(Decoded::Data(_) | Decoded::Trailers(_)) => {}
                    Ok(Decoded::NeedMore) | Err(_) => return false,
                }
            },
            Delimited::UntilClose => false,
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.as_mut()
            && stream.read.is_some()
        {
            let complete = stream.skip_buffered();
            stream.finish(complete, false);
        }
    }
}

impl Body for Incoming {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match self.stream.as_mut() {
            None => Poll::Ready(None),
            Some(stream) => stream.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.as_ref().is_none_or(|s| s.read.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.stream {
            None => SizeHint::with_exact(0),
            Some(s) if s.read.is_none() => SizeHint::with_exact(0),
            Some(s) => match s.delimited {
                Delimited::Length(left) => SizeHint::with_exact(left),
                _ => SizeHint::default(),
            },
        }
    }
}
