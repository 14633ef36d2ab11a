//! The benchmark backend: one port that every proxy under test forwards to, speaking HTTP/1.1,
//! h2c (prior knowledge) and gRPC, so direct, nginx, haproxy and stitch all reach the very same
//! server.
//!
//! Routes:
//! - `GET /anything` → 200 with a small fixed body (the request/response workloads);
//! - `GET /bytes/N` → N zero bytes streamed in 64 KiB chunks (the 1 GiB download);
//! - `POST`/`PUT` with a body → the body is drained and its length returned (the 1 GiB upload);
//! - gRPC (`content-type: application/grpc*`) → `/bench.Echo/Unary` and `/bench.Echo/Stream`
//!   echo raw messages back.
//!
//! It is built to cost as little CPU as it can, so the figures show the proxy, not the backend.
//!
//! Usage: `bench_backend 127.0.0.1:PORT [worker_threads]` (threads default to the CPUs it may
//! run on, so `taskset -c 1` gives one worker).

#[path = "bench_common/grpc_echo.rs"]
mod grpc_echo;
#[path = "bench_common/raw_codec.rs"]
mod raw_codec;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::body::Body;

/// About the size of a small JSON API answer.
const SMALL_BODY: &[u8] =
    b"{\"status\":\"ok\",\"service\":\"bench-backend\",\"items\":[1,2,3,4,5,6,7,8]}\n";
const CHUNK_BYTES: usize = 64 * 1024;
static ZEROS: [u8; CHUNK_BYTES] = [0; CHUNK_BYTES];

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:18080".to_owned())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.next().and_then(|t| t.parse::<usize>().ok()) {
        runtime.worker_threads(threads);
    }
    runtime.enable_all().build()?.block_on(serve(listen))
}

async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("bench_backend listening on {}", listener.local_addr()?);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(1024);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(handle);
            // Connections end with errors routinely when a load generator stops mid-request.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let is_grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if is_grpc {
        return Ok(grpc_echo::grpc_echo(req).await);
    }
    if let Some(len) = req.uri().path().strip_prefix("/bytes/") {
        return Ok(match len.parse::<u64>() {
            Ok(len) => stream_zeros(len),
            Err(_) => status(StatusCode::BAD_REQUEST),
        });
    }
    if req.method() == Method::POST || req.method() == Method::PUT {
        let received = drain(req.into_body()).await;
        return Ok(Response::new(Body::new(Full::new(Bytes::from(format!(
            "{received}\n"
        ))))));
    }
    let mut resp = Response::new(Body::new(Full::new(Bytes::from_static(SMALL_BODY))));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Streams `len` zero bytes without ever holding more than one shared static chunk.
fn stream_zeros(len: u64) -> Response<Body> {
    let chunks = futures::stream::unfold(len, |left| async move {
        if left == 0 {
            return None;
        }
        let n = left.min(CHUNK_BYTES as u64) as usize;
        let frame = Frame::data(Bytes::from_static(&ZEROS[..n]));
        Some((Ok::<_, Infallible>(frame), left - n as u64))
    });
    let mut resp = Response::new(Body::new(StreamBody::new(chunks)));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

async fn drain(mut body: Incoming) -> u64 {
    let mut received = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            received += data.len() as u64;
        }
    }
    received
}

fn status(code: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = code;
    resp
}
