//! The floor of the stack: the smallest HTTP/1.1 reverse proxy tokio + hyper allow — one
//! current-thread runtime, hyper's server connection, hyper's client connections in a keep-alive
//! pool, no header rewriting, no tracing, no metrics, no limits.
//!
//! Not a product: it shows `scripts/bench/ab.py` how much of stitch's CPU per request is the
//! cost of the libraries it stands on, so stitch's own share can be told apart.
//!
//! Usage: `bench_hyper_floor LISTEN UPSTREAM` (both `127.0.0.1:PORT`), e.g. as the `floor=`
//! build of `ab.py --floor`.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

type Pool = Rc<RefCell<Vec<SendRequest<Incoming>>>>;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let parse = |a: Option<String>| -> std::io::Result<SocketAddr> {
        a.unwrap_or_default()
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (listen, upstream) = (parse(args.next())?, parse(args.next())?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio::task::LocalSet::new().block_on(&runtime, serve(listen, upstream))
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let pool: Pool = Rc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        tokio::task::spawn_local(async move {
            let service = hyper::service::service_fn(move |req| forward(pool.clone(), upstream, req));
            let mut builder = hyper::server::conn::http1::Builder::new();
            if std::env::var_os("FLOOR_HEADER_TIMEOUT").is_some() {
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10));
            }
            if case() {
                builder.preserve_header_case(true);
            }
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `FLOOR_PRESERVE_CASE` set: keep header-name case on both sides, as stitch does.
fn case() -> bool {
    std::env::var_os("FLOOR_PRESERVE_CASE").is_some()
}

async fn forward(
    pool: Pool,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    // A pooled connection whose previous response is done, else a new one.
    let ready = {
        let mut idle = pool.borrow_mut();
        idle.retain(|s| !s.is_closed());
        idle.iter().position(|s| s.is_ready()).map(|i| idle.swap_remove(i))
    };
    let mut sender = match ready {
        Some(s) => s,
        None => {
            let stream = tokio::net::TcpStream::connect(upstream).await?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::Builder::new()
                .preserve_header_case(case())
                .handshake(TokioIo::new(stream))
                .await?;
            tokio::task::spawn_local(conn);
            sender
        }
    };
    let response = sender.send_request(req).await;
    pool.borrow_mut().push(sender);
    Ok(response?)
}
