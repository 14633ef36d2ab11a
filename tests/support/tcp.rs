//! Non-HTTP upstreams: a client-first echo server, a server-first banner server, and a
//! WebSocket echo server.

use std::net::SocketAddr;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the echo server writes after it saw the client's EOF, before closing: proof that the
/// client's half-close reached it while its own direction was still open.
pub const EOF_MARKER: &[u8] = b"<saw your EOF>";
/// What the banner server writes on accept, before the client says anything.
pub const BANNER: &[u8] = b"220 banner.test ESMTP ready\r\n";

/// Starts an echo server; each connection echoes until EOF, writes [`EOF_MARKER`], closes.
pub async fn echo_server() -> SocketAddr {
    serve(|stream| echo(stream, None)).await
}

/// Starts a server that writes [`BANNER`] first, then behaves like [`echo_server`].
pub async fn banner_server() -> SocketAddr {
    serve(|stream| echo(stream, Some(BANNER))).await
}

async fn serve<F, Fut>(per_conn: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (listener, addr) = super::listener().await;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(per_conn(stream));
        }
    });
    addr
}

async fn echo(mut stream: TcpStream, banner: Option<&'static [u8]>) {
    if let Some(b) = banner
        && stream.write_all(b).await.is_err()
    {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
    let _ = stream.write_all(EOF_MARKER).await;
    let _ = stream.shutdown().await;
}

/// Starts a WebSocket server that echoes every text and binary message.
pub async fn websocket_echo_server() -> SocketAddr {
    serve(|stream| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                if ws.send(msg).await.is_err() {
                    return;
                }
            } else if msg.is_close() {
                let _ = ws.close(None).await;
                return;
            }
        }
    })
    .await
}

/// Starts a server that reads whatever arrives first and then closes without answering: an
/// upstream that fails after the request was sent.
pub async fn hang_up_server() -> SocketAddr {
    serve(|mut stream| async move {
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf).await;
        drop(stream);
    })
    .await
}

/// A listening port whose accept queue is full, so new connection attempts get no SYN-ACK
/// and hang (Linux drops SYNs to a full queue): an unresponsive upstream for connect timeouts.
/// Returns the address plus the listener and queued connections that must stay alive.
pub async fn unresponsive_port() -> (SocketAddr, Vec<Box<dyn std::any::Any + Send>>) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    socket.bind(&any.into()).expect("bind");
    socket.listen(0).expect("listen");
    let addr = socket
        .local_addr()
        .expect("bound")
        .as_socket()
        .expect("an inet address");
    let mut keep: Vec<Box<dyn std::any::Any + Send>> = vec![Box::new(socket)];
    // Fill the queue; once full, further connects stop completing.
    for _ in 0..8 {
        match tokio::time::timeout(
            std::time::Duration::from_millis(300),
            TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => keep.push(Box::new(s)),
            _ => break,
        }
    }
    (addr, keep)
}
