//! The one I/O wrapper around the connections stitch holds. What each needs differs, the
//! delegation to the stream does not:
//!
//! - a client connection replays the bytes protocol detection read ([`ProxyIo::replaying`])
//!   before reading the socket again, so no byte is lost or reordered;
//! - a client connection counts the bytes read and written ([`ProxyIo::counted`]) into its
//!   [`ConnectionLease`]: hyper owns the I/O object while it serves (and hands it to a tunnel
//!   after an upgrade), so the lease lives behind an `Arc` and reports the bytes when the last
//!   holder drops it, i.e. when the socket closes;
//! - an upstream connection stays in the self-loop registry while it is open
//!   ([`super::selfloop::OwnConnections::track`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::lease::ConnectionLease;
use super::selfloop::Registration;

/// Bytes read from and written to one client connection (kept in its [`ConnectionLease`]).
#[derive(Debug, Default)]
pub(crate) struct ByteCounts {
    read: AtomicU64,
    written: AtomicU64,
}

impl ByteCounts {
    /// `(read from the client, written to the client)`.
    pub(crate) fn get(&self) -> (u64, u64) {
        (
            self.read.load(Ordering::Relaxed),
            self.written.load(Ordering::Relaxed),
        )
    }

    /// Bytes read from the client so far (tests: each byte is counted once).
    #[cfg(test)]
    pub(crate) fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Adds `n` bytes read from the client.
    #[inline]
    pub(crate) fn add_read(&self, n: usize) {
        self.read.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Adds `n` bytes written to the client.
    #[inline]
    pub(crate) fn add_written(&self, n: usize) {
        self.written.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// A stream with stitch's per-connection bookkeeping; reads and writes otherwise go straight
/// through.
#[derive(Debug)]
pub(crate) struct ProxyIo<I> {
    inner: I,
    /// Bytes already read from `inner` (during detection), handed out first.
    replay: BytesMut,
    /// The client connection's lease, whose counters count the bytes through this stream.
    counts: Option<Arc<ConnectionLease>>,
    /// The self-loop registry entry of an upstream connection; removed when this is dropped.
    _registration: Option<Registration>,
}

impl<I> ProxyIo<I> {
    /// Wraps `inner` with no bookkeeping yet.
    pub(crate) fn new(inner: I) -> Self {
        ProxyIo {
            inner,
            replay: BytesMut::new(),
            counts: None,
            _registration: None,
        }
    }

    /// Reads yield `prefix` (bytes read from `inner` before) before reading `inner` again.
    pub(crate) fn replaying(mut self, prefix: BytesMut) -> Self {
        self.replay = prefix;
        self
    }

    /// Counts every byte read (the replayed ones included) and written into the lease's
    /// counters, and holds the lease for as long as the stream lives.
    pub(crate) fn counted(mut self, lease: Arc<ConnectionLease>) -> Self {
        self.counts = Some(lease);
        self
    }

    /// The stream and the lease it counts into (a client connection parked while idle:
    /// nothing is left to replay then).
    pub(crate) fn into_counted_parts(self) -> (I, Option<Arc<ConnectionLease>>) {
        debug_assert!(self.replay.is_empty(), "bytes left to replay");
        (self.inner, self.counts)
    }

    /// Holds `registration` for as long as the stream lives.
    pub(crate) fn registered(mut self, registration: Registration) -> Self {
        self._registration = Some(registration);
        self
    }

    #[inline]
    fn count_written(&self, polled: &Poll<io::Result<usize>>) {
        if let (Some(lease), Poll::Ready(Ok(n))) = (&self.counts, polled) {
            lease.counts().add_written(*n);
        }
    }
}

// Every method is on the path of every read and write of every connection (a proxied HTTP/1
// request polls the reads of its client and upstream connections about ten times):
// `#[inline]`, and the common case — nothing left to replay — is a branch or two on top of the
// stream's own method. Measured with callgrind: out of line with the replay inside, ~250
// instructions per request more; the counter as a type parameter instead of an `Option`,
// ~150 more (LLVM then kept hyper-util's `TokioIo::poll_read` out of line instead).
impl<I: AsyncRead + Unpin> AsyncRead for ProxyIo<I> {
    #[inline]
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.replay.is_empty() {
            this.replay_into(buf);
            return Poll::Ready(Ok(()));
        }
        let Some(lease) = &this.counts else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        lease
            .counts()
            .add_read(buf.filled().len().saturating_sub(before));
        polled
    }
}

impl<I> ProxyIo<I> {
    /// Hands out what is left of the replayed prefix (counted as read).
    #[cold]
    fn replay_into(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.replay.len().min(buf.remaining());
        buf.put_slice(&self.replay[..n]);
        self.replay.advance(n);
        if let Some(lease) = &self.counts {
            lease.counts().add_read(n);
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ProxyIo<I> {
    #[inline]
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.count_written(&polled);
        polled
    }

    #[inline]
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.count_written(&polled);
        polled
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    #[inline]
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::direction::Direction;
    use crate::telemetry::Metrics;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn lease() -> Arc<ConnectionLease> {
        let permits = Arc::new(tokio::sync::Semaphore::new(1));
        let permit = permits.try_acquire_owned().expect("a free permit");
        Arc::new(ConnectionLease::new(
            permit,
            &Metrics::new(),
            Direction::Inbound,
            crate::shutdown::ShutdownHandle::default(),
        ))
    }

    #[tokio::test]
    async fn both_directions_are_counted() {
        let (a, mut b) = tokio::io::duplex(64);
        let lease = lease();
        let mut io = ProxyIo::new(a).counted(lease.clone());
        io.write_all(b"hello").await.unwrap();
        b.write_all(b"abc").await.unwrap();
        let mut got = [0u8; 3];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(lease.counts().get(), (3, 5));
    }

    #[tokio::test]
    async fn replayed_bytes_come_first_and_are_counted_once() {
        let (a, mut b) = tokio::io::duplex(64);
        let lease = lease();
        let mut io = ProxyIo::new(a)
            .replaying(BytesMut::from(&b"GET / HT"[..]))
            .counted(lease.clone());
        b.write_all(b"TP/1.1\r\n").await.unwrap();
        let mut got = [0u8; 16];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET / HTTP/1.1\r\n");
        assert_eq!(lease.counts().get(), (16, 0));
    }
}
