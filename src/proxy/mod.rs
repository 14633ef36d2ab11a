//! The data path: accept, learn the destination, detect the protocol, then serve HTTP through
//! the trace layer or copy opaque bytes.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::app::{Settings, ShutdownHandle};

/// Which side of the app a connection is on; the trace layer opens a SERVER span inbound and a
/// CLIENT span outbound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A peer calling the app.
    Inbound,
    /// The app calling a peer.
    Outbound,
}

impl Direction {
    /// The lower-case name used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The proxy's shared runtime state (settings, upstream pools, own addresses).
#[derive(Debug)]
pub struct Proxy {
    own_addrs: Vec<SocketAddr>,
}

impl Proxy {
    /// Builds the proxy from the settings; `own_addrs` are stitch's listeners (loop guard).
    pub fn new(_settings: &Settings, own_addrs: Vec<SocketAddr>) -> Self {
        Proxy { own_addrs }
    }

    /// Accepts connections on `listener` until shutdown.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        direction: Direction,
        shutdown: ShutdownHandle,
        _tracker: TaskTracker,
    ) {
        let _ = (&self.own_addrs, direction);
        loop {
            tokio::select! {
                _ = listener.accept() => {}
                _ = shutdown.triggered() => return,
            }
        }
    }
}
