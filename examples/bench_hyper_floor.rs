//! The floor of the stack: the smallest reverse proxy tokio + hyper allow — one current-thread
//! runtime, hyper's server connection (HTTP/1.1, or h2c with prior knowledge), hyper's client
//! connections (HTTP/1.1 in a keep-alive pool, one shared HTTP/2 connection), no header
//! rewriting, no tracing, no metrics, no limits.
//!
//! Not a product: it shows `scripts/bench/ab.py` how much of stitch's CPU per request is the
//! cost of the libraries it stands on, so stitch's own share can be told apart.
//!
//! Usage: `bench_hyper_floor LISTEN UPSTREAM` (both `127.0.0.1:PORT`). With
//! `FLOOR_HEADER_TIMEOUT` set, HTTP/1 arms hyper's header-read timeout as stitch does; with
//! `FLOOR_PRESERVE_CASE` set, HTTP/1 keeps header-name case on both sides as stitch does.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;

use http::Version;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Idle HTTP/1 connections and the shared HTTP/2 connection to the upstream.
#[derive(Default)]
struct Pool {
    h1: RefCell<Vec<http1::SendRequest<Incoming>>>,
    h2: RefCell<Option<http2::SendRequest<Incoming>>>,
}

/// Runs hyper's per-stream and per-connection futures on the thread's `LocalSet`.
#[derive(Clone, Copy)]
struct Local;

impl<F: Future + 'static> hyper::rt::Executor<F> for Local {
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

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

/// `FLOOR_PRESERVE_CASE` set: keep header-name case on both sides, as stitch does.
fn case() -> bool {
    std::env::var_os("FLOOR_PRESERVE_CASE").is_some()
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let pool = Rc::new(Pool::default());
    let mut builder = hyper_util::server::conn::auto::Builder::new(Local);
    builder.http2().max_concurrent_streams(1024);
    if std::env::var_os("FLOOR_HEADER_TIMEOUT").is_some() {
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(std::time::Duration::from_secs(10));
    }
    builder.http1().preserve_header_case(case());
    let builder = Rc::new(builder);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (pool, builder) = (pool.clone(), builder.clone());
        tokio::task::spawn_local(async move {
            let service =
                hyper::service::service_fn(move |req| forward(pool.clone(), upstream, req));
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    pool: Rc<Pool>,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Incoming>, Error> {
    if req.version() == Version::HTTP_2 {
        return forward_h2(&pool, upstream, req).await;
    }
    // A pooled connection whose previous response is done, else a new one.
    let ready = {
        let mut idle = pool.h1.borrow_mut();
        idle.retain(|s| !s.is_closed());
        idle.iter()
            .position(|s| s.is_ready())
            .map(|i| idle.swap_remove(i))
    };
    let mut sender = match ready {
        Some(s) => s,
        None => {
            let stream = tokio::net::TcpStream::connect(upstream).await?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = http1::Builder::new()
                .preserve_header_case(case())
                .handshake(TokioIo::new(stream))
                .await?;
            tokio::task::spawn_local(conn);
            sender
        }
    };
    let response = sender.send_request(req).await;
    pool.h1.borrow_mut().push(sender);
    Ok(response?)
}

async fn forward_h2(
    pool: &Pool,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Incoming>, Error> {
    let shared = pool.h2.borrow().clone().filter(|s| !s.is_closed());
    let mut sender = match shared {
        Some(s) => s,
        None => {
            let stream = tokio::net::TcpStream::connect(upstream).await?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) = http2::Builder::new(Local)
                .handshake(TokioIo::new(stream))
                .await?;
            tokio::task::spawn_local(conn);
            *pool.h2.borrow_mut() = Some(sender.clone());
            sender
        }
    };
    Ok(sender.send_request(req).await?)
}
