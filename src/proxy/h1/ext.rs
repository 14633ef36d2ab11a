//! What travels in request and response extensions between the driver and the service: what
//! `http`'s types cannot carry themselves (a reason phrase as received, how field names were
//! spelled), and the hand-over of the socket after a protocol switch or a `CONNECT`.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

use super::error::Error;

/// A response extension: the reason phrase to write instead of the status's canonical one.
/// The upstream side puts the received one here ([`super::head::ResponseHead::reason`]) so the
/// client sees it unchanged (hyper lost a reason with obs-text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReasonPhrase(pub Bytes);

/// The read half of a client connection, type-erased so that [`super::incoming::Incoming`]
/// and [`Upgraded`] need no type parameter (the service is written once for any stream).
pub(crate) type BoxRead = Box<dyn ReadHalfDyn>;

/// What a [`BoxRead`] is: a read half that can also be had back as its own type (`Any`), so
/// that a driver parking an idle connection can reunite it with its write half.
pub(crate) trait ReadHalfDyn: AsyncRead + Send + Unpin + Any {}

impl<T: AsyncRead + Send + Unpin + Any> ReadHalfDyn for T {}

/// The write half of a client connection, type-erased as [`BoxRead`] (boxed only when a
/// connection is handed over, so once per tunnel).
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// A request extension on a request that may switch protocols (`Upgrade`) or open a tunnel
/// (`CONNECT`): resolves to the connection once the driver has written a `101` (or a 2xx to
/// the `CONNECT`), or to [`Error::Gone`] when the response was another one. Cloneable because
/// request extensions must be; the first clone polled to completion gets the connection.
#[derive(Clone)]
pub(crate) struct OnUpgrade {
    /// Shared by the clones; taken by whichever completes first.
    rx: Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>,
}

impl OnUpgrade {
    /// The receiving end of a hand-over, and the driver's sending end.
    pub(crate) fn pair() -> (oneshot::Sender<Upgraded>, Self) {
        let (tx, rx) = oneshot::channel();
        let on = OnUpgrade {
            rx: Arc::new(Mutex::new(Some(rx))),
        };
        (tx, on)
    }
}

impl fmt::Debug for OnUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnUpgrade").finish_non_exhaustive()
    }
}

impl Future for OnUpgrade {
    type Output = Result<Upgraded, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rx) = slot.as_mut() else {
            return Poll::Ready(Err(Error::Gone));
        };
        let polled = Pin::new(rx).poll(cx);
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                *slot = None;
                Poll::Ready(result.map_err(|_| Error::Gone))
            }
        }
    }
}

/// A client connection after a protocol switch or a `CONNECT`: the bytes the driver had
/// already read past the head (a tunnel's first bytes, sent right behind the request) come
/// first, then the socket. Those bytes were counted when the driver read them (the lease's
/// counters sit below, in the stream), so they are replayed without being counted again.
pub(crate) struct Upgraded {
    /// Read past the head, not yet handed out.
    leftover: Bytes,
    read: BoxRead,
    write: BoxWrite,
}

impl Upgraded {
    /// The connection from its halves and the bytes read ahead.
    pub(crate) fn new(read: BoxRead, write: BoxWrite, leftover: Bytes) -> Self {
        Upgraded {
            leftover,
            read,
            write,
        }
    }
}

impl fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgraded")
            .field("leftover", &self.leftover.len())
            .finish_non_exhaustive()
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.leftover.is_empty() {
            let n = self.leftover.len().min(buf.remaining());
            buf.put_slice(&self.leftover[..n]);
            self.leftover.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.write.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }
}
