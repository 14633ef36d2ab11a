//! Opaque TCP: bytes copied both ways untouched, half-close respected (one side's EOF becomes
//! a write shutdown on the other while the reverse direction keeps flowing).

use bytes::BytesMut;
use tokio::net::TcpStream;

use super::io::ProxyIo;
use super::selfloop::Tracked;

/// Copies between the client (starting with the bytes read during detection) and upstream
/// until both directions have ended. Buffers are fixed-size, so memory is bounded.
pub(crate) async fn relay(
    client: TcpStream,
    prefix: BytesMut,
    mut upstream: Tracked,
) -> std::io::Result<(u64, u64)> {
    let mut client = ProxyIo::new(client).replaying(prefix);
    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, 16 * 1024, 16 * 1024).await
}
