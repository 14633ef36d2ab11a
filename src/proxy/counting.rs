//! Byte accounting for HTTP connections: hyper owns the I/O object while it serves, so the
//! counters live behind an `Arc` and are read once the connection has ended.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from and written to one client connection.
#[derive(Debug, Default)]
pub struct ByteCounts {
    read: AtomicU64,
    written: AtomicU64,
}

impl ByteCounts {
    /// `(read from the client, written to the client)`.
    pub fn get(&self) -> (u64, u64) {
        (
            self.read.load(Ordering::Relaxed),
            self.written.load(Ordering::Relaxed),
        )
    }
}

/// Wraps an I/O object and counts the bytes through it.
#[derive(Debug)]
pub struct CountingIo<I> {
    inner: I,
    counts: Arc<ByteCounts>,
}

impl<I> CountingIo<I> {
    /// Counts into `counts`.
    pub fn new(inner: I, counts: Arc<ByteCounts>) -> Self {
        CountingIo { inner, counts }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for CountingIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before) as u64;
        self.counts.read.fetch_add(n, Ordering::Relaxed);
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for CountingIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.counts.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.counts.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn both_directions_are_counted() {
        let (a, mut b) = tokio::io::duplex(64);
        let counts = Arc::new(ByteCounts::default());
        let mut io = CountingIo::new(a, counts.clone());
        io.write_all(b"hello").await.unwrap();
        b.write_all(b"abc").await.unwrap();
        let mut got = [0u8; 3];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(counts.get(), (3, 5));
    }
}
