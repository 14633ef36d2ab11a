//! Guard against stitch's own upstream connections coming back to it.
//!
//! The iptables rules exempt stitch's UID from redirection. If stitch runs under another UID
//! (a wrong `--proxy-uid`, or the app running as stitch's UID), every upstream connection it
//! opens is redirected to its own outbound listener, whose original destination is the real
//! peer again — an address check cannot see the loop, and stitch would connect to itself until
//! it runs out of file descriptors. So stitch remembers the `(local, remote)` pair of every
//! upstream connection it holds open; an accepted connection whose `(client, original
//! destination)` is one of them is its own, and is refused with a log line naming the cause.
//!
//! The whole pair matters: Linux hands the same ephemeral port to connections towards
//! different destinations, so a client of stitch may share a local port with one of stitch's
//! upstream sockets; only the full 4-tuple is unique.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpStream;

use super::io::ProxyIo;
use super::orig_dst::normalize;

/// The `(local, remote)` address pairs of stitch's open upstream connections.
#[derive(Debug, Clone, Default)]
pub(crate) struct OwnConnections(Arc<Mutex<HashSet<(SocketAddr, SocketAddr)>>>);

impl OwnConnections {
    /// Whether a connection from `client` that was headed for `destination` (its original
    /// destination, or the listener itself when not redirected) is one stitch opened.
    pub(crate) fn is_own(&self, client: SocketAddr, destination: SocketAddr) -> bool {
        let key = (normalize(client), normalize(destination));
        self.lock().contains(&key)
    }

    /// Registers `stream` for as long as the returned wrapper lives.
    pub(crate) fn track(&self, stream: TcpStream) -> Tracked {
        let key = match (stream.local_addr(), stream.peer_addr()) {
            (Ok(local), Ok(remote)) => Some((normalize(local), normalize(remote))),
            _ => None,
        };
        if let Some(key) = key {
            self.lock().insert(key);
        }
        ProxyIo::new(stream).registered(Registration {
            key,
            registry: self.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(SocketAddr, SocketAddr)>> {
        // The set stays consistent whatever panicked while holding it.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An upstream TCP stream that stays in the [`OwnConnections`] registry until dropped.
pub(crate) type Tracked = ProxyIo<TcpStream>;

/// One upstream connection's entry in the [`OwnConnections`] registry, removed when dropped
/// (with the stream that holds it).
#[derive(Debug)]
pub(crate) struct Registration {
    key: Option<(SocketAddr, SocketAddr)>,
    registry: OwnConnections,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.registry.lock().remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn own_connections_are_recognized_by_the_full_pair_until_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dst = listener.local_addr().unwrap();
        let own = OwnConnections::default();
        let stream = TcpStream::connect(dst).await.unwrap();
        let (_accepted, peer) = listener.accept().await.unwrap();
        let tracked = own.track(stream);
        assert!(
            own.is_own(peer, dst),
            "the accepting side sees stitch's own connection"
        );
        // The same client port towards another destination is another connection: Linux
        // reuses ephemeral ports across destinations.
        let elsewhere: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(!own.is_own(peer, elsewhere));
        drop(tracked);
        assert!(!own.is_own(peer, dst), "forgotten once closed");
    }
}
