//! Byte relays: opaque TCP, and the CONNECT and Upgrade tunnels. Bytes are copied both ways
//! untouched, half-close respected (one side's EOF becomes a write shutdown on the other while
//! the reverse direction keeps flowing), through fixed buffers so memory is bounded. A relay
//! has no end of its own a drain could wait for, so it also ends when the drain's deadline
//! passes (both sockets are dropped, which closes them).

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::io::ProxyIo;
use super::lease::ConnectionLease;
use super::selfloop::Tracked;
use crate::shutdown::ShutdownHandle;

/// Size of each direction's copy buffer.
const BUFFER_BYTES: usize = 16 * 1024;

/// Relays an opaque client connection (starting with the bytes read during detection) to
/// `upstream`; its bytes are counted in the client's `lease`, whose drain it belongs to.
pub(crate) async fn relay(
    client: TcpStream,
    prefix: BytesMut,
    lease: Arc<ConnectionLease>,
    mut upstream: Tracked,
) -> io::Result<()> {
    let mut client = ProxyIo::new(client)
        .replaying(prefix)
        .counted(lease.clone());
    splice(&mut client, &mut upstream, lease.shutdown()).await
}

/// Copies between `client` and `upstream` until both directions have ended, or until the
/// drain gives up (then an error of kind `TimedOut`).
pub(crate) async fn splice<C, U>(
    client: &mut C,
    upstream: &mut U,
    shutdown: &ShutdownHandle,
) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::select! {
        // The copy first: the deadline is checked only when the copy is not ready.
        biased;
        copied = tokio::io::copy_bidirectional_with_sizes(client, upstream, BUFFER_BYTES, BUFFER_BYTES) => {
            copied.map(|_| ())
        }
        _ = shutdown.deadline_passed() => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "closed at the drain deadline",
        )),
    }
}
