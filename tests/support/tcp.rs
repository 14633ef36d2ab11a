//! Non-HTTP upstreams: a client-first echo server, a server-first banner server, and a
//! WebSocket echo server.

use std::net::SocketAddr;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
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
