//! Guard against stitch's own upstream connections coming back to it.
//!
//! The iptables rules exempt stitch's UID from redirection. If stitch runs under another UID
//! (a wrong `--proxy-uid`, or the app running as stitch's UID), every upstream connection it
//! opens is redirected to its own outbound listener, whose original destination is the real
//! peer again — an address check cannot see the loop, and stitch would connect to itself until
//! it runs out of file descriptors. So stitch remembers the local address of every upstream
//! connection it holds open; an accepted connection coming *from* one of them is its own, and
//! is refused with a log line naming the likely cause.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::orig_dst::normalize;

/// The local addresses of stitch's open upstream connections.
#[derive(Debug, Clone, Default)]
pub struct OwnConnections(Arc<Mutex<HashSet<SocketAddr>>>);

impl OwnConnections {
    /// Whether a connection from `peer` is one stitch opened itself.
    pub fn is_own(&self, peer: SocketAddr) -> bool {
        self.0
            .lock()
            .expect("registry lock poisoned")
            .contains(&normalize(peer))
    }

    /// Registers `stream` for as long as the returned wrapper lives.
    pub fn track(&self, stream: TcpStream) -> Tracked {
        let local = stream.local_addr().ok().map(normalize);
        if let Some(addr) = local {
            self.0.lock().expect("registry lock poisoned").insert(addr);
        }
        Tracked {
            stream,
            local,
            registry: self.clone(),
        }
    }
}

/// An upstream TCP stream that stays in the [`OwnConnections`] registry until dropped.
#[derive(Debug)]
pub struct Tracked {
    stream: TcpStream,
    local: Option<SocketAddr>,
    registry: OwnConnections,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(addr) = self.local {
            self.registry
                .0
                .lock()
                .expect("registry lock poisoned")
                .remove(&addr);
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn own_connections_are_recognized_until_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let own = OwnConnections::default();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, peer) = listener.accept().await.unwrap();
        let tracked = own.track(stream);
        assert!(
            own.is_own(peer),
            "the accepting side sees stitch's own connection"
        );
        assert!(!own.is_own(accepted.local_addr().unwrap()));
        drop(tracked);
        assert!(!own.is_own(peer), "forgotten once closed");
    }
}
