//! The long-lived kinds of the soak's mix: sessions that stay open and exchange messages
//! (gRPC bidirectional streams, WebSocket, opaque TCP), and large bodies both ways.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::load::{
    ANSWER_TIMEOUT, Body, connect, empty, exchange, grpc_request, pace, reuse, send_h1, traceparent,
};
use crate::raw_codec::{RawCodec, STREAM_PATH};
use crate::tally::Tally;

/// Size of each large body, both ways.
const LARGE_BODY: u64 = 8 * 1024 * 1024;

/// One session of a kind: to `addr`, a message every `every` until `end`, each counted.
pub(crate) type Session =
    fn(SocketAddr, Duration, Instant, Arc<Tally>) -> BoxFuture<'static, Result<(), String>>;

/// Opens one session after another (each lasting `length`, or to the end) until `until`.
pub(crate) async fn sessions(
    kind: &'static str,
    addr: SocketAddr,
    length: Duration,
    every: Duration,
    until: Instant,
    tally: Arc<Tally>,
    session: Session,
) {
    let session_kind = match kind {
        "grpc_stream" => "grpc_stream_session",
        "websocket" => "websocket_session",
        _ => "opaque_session",
    };
    while Instant::now() < until {
        let end = (Instant::now() + length).min(until);
        let result = session(addr, every, end, tally.clone()).await;
        if result.is_err() {
            // Not at once again: a refused connection would otherwise spin.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tally.record(session_kind, result);
    }
}

pub(crate) async fn grpc_stream(
    addr: SocketAddr,
    every: Duration,
    end: Instant,
    tally: Arc<Tally>,
) -> Result<(), String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = tonic::client::Grpc::new(channel);
    let (mut tx, rx) = futures::channel::mpsc::channel::<Bytes>(1);
    tx.try_send(Bytes::from_static(b"stream 0"))
        .map_err(|e| e.to_string())?;
    client.ready().await.map_err(|e| format!("channel: {e}"))?;
    let mut inbound = client
        .streaming::<_, Bytes, Bytes, _>(
            grpc_request(rx),
            STREAM_PATH.parse().expect("a path"),
            RawCodec,
        )
        .await
        .map_err(|e| format!("open: {e}"))?
        .into_inner();
    let mut ticks = pace(every);
    let mut sent = Bytes::from_static(b"stream 0");
    let mut n = 0u64;
    loop {
        let echoed = timeout(ANSWER_TIMEOUT, inbound.message()).await;
        match echoed {
            Ok(Ok(Some(msg))) if msg == sent => tally.ok("grpc_stream"),
            other => {
                tally.failed("grpc_stream", format!("{other:?}"));
                return Err("the stream broke".to_owned());
            }
        }
        if ticks.tick().await >= end {
            break;
        }
        n += 1;
        sent = Bytes::from(format!("stream {n}"));
        tx.send(sent.clone())
            .await
            .map_err(|e| format!("send: {e}"))?;
    }
    drop(tx);
    match timeout(ANSWER_TIMEOUT, inbound.message()).await {
        Ok(Ok(None)) => Ok(()),
        other => Err(format!("the stream did not end cleanly: {other:?}")),
    }
}

pub(crate) async fn websocket(
    addr: SocketAddr,
    every: Duration,
    end: Instant,
    tally: Arc<Tally>,
) -> Result<(), String> {
    let mut request = format!("ws://{addr}/ws")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    if let Ok(value) = traceparent().parse() {
        request.headers_mut().insert("traceparent", value);
    }
    let (mut ws, _) = timeout(
        ANSWER_TIMEOUT,
        tokio_tungstenite::client_async(request, connect(addr).await?),
    )
    .await
    .map_err(|_| "handshake timed out".to_owned())?
    .map_err(|e| format!("handshake: {e}"))?;
    let mut ticks = pace(every);
    let mut n = 0u64;
    while ticks.tick().await < end {
        n += 1;
        let text = format!("ws {n}");
        let result = async {
            ws.send(Message::text(text.clone()))
                .await
                .map_err(|e| format!("send: {e}"))?;
            match timeout(ANSWER_TIMEOUT, ws.next()).await {
                Ok(Some(Ok(Message::Text(got)))) if got.as_str() == text => Ok(()),
                other => Err(format!("echo: {other:?}")),
            }
        }
        .await;
        if let Err(why) = result {
            tally.failed("websocket", &why);
            return Err(why);
        }
        tally.ok("websocket");
    }
    ws.close(None).await.map_err(|e| format!("close: {e}"))?;
    while let Ok(Some(Ok(_))) = timeout(ANSWER_TIMEOUT, ws.next()).await {}
    Ok(())
}

pub(crate) async fn opaque(
    addr: SocketAddr,
    every: Duration,
    end: Instant,
    tally: Arc<Tally>,
) -> Result<(), String> {
    let mut tcp = connect(addr).await?;
    let mut ticks = pace(every);
    let mut n = 0u64;
    while ticks.tick().await < end {
        n += 1;
        // 0x00 first: never HTTP, so stitch relays the connection untouched.
        let message = format!("\0opaque {n}\n").into_bytes();
        let result = async {
            tcp.write_all(&message)
                .await
                .map_err(|e| format!("write: {e}"))?;
            let mut echoed = vec![0u8; message.len()];
            timeout(ANSWER_TIMEOUT, tcp.read_exact(&mut echoed))
                .await
                .map_err(|_| "no echo in time".to_owned())?
                .map_err(|e| format!("read: {e}"))?;
            if echoed == message {
                Ok(())
            } else {
                Err("echo changed".to_owned())
            }
        }
        .await;
        if let Err(why) = result {
            tally.failed("opaque", &why);
            return Err(why);
        }
        tally.ok("opaque");
    }
    tcp.shutdown()
        .await
        .map_err(|e| format!("half-close: {e}"))?;
    let mut rest = Vec::new();
    timeout(ANSWER_TIMEOUT, tcp.read_to_end(&mut rest))
        .await
        .map_err(|_| "no EOF after the half-close".to_owned())?
        .map_err(|e| format!("read to EOF: {e}"))?;
    Ok(())
}

/// Downloads and uploads [`LARGE_BODY`] bytes in turn on one keep-alive connection.
pub(crate) async fn large_bodies(
    addr: SocketAddr,
    every: Duration,
    until: Instant,
    tally: Arc<Tally>,
) {
    let mut ticks = pace(every);
    let mut conn = None;
    let mut up = false;
    while ticks.tick().await < until {
        up = !up;
        let kind = if up { "body_up" } else { "body_down" };
        let Some(send) = reuse(&mut conn, addr, kind, &tally).await else {
            continue;
        };
        let result = if up {
            upload(send, addr).await
        } else {
            download(send, addr).await
        };
        if result.is_err() {
            conn = None;
        }
        tally.record(kind, result);
    }
}

async fn download(send: &mut http1::SendRequest<Body>, addr: SocketAddr) -> Result<(), String> {
    let req = Request::get(format!("/bytes/{LARGE_BODY}"))
        .header("host", addr.to_string())
        .header("traceparent", traceparent())
        .body(empty())
        .expect("a valid request");
    let answer = async {
        let resp = send_h1(send, req).await?;
        if resp.status() != StatusCode::OK {
            return Err(format!("status {}", resp.status()));
        }
        let mut body = resp.into_body();
        let mut got = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body: {e}"))?;
            got += frame.data_ref().map_or(0, |d| d.len() as u64);
        }
        if got == LARGE_BODY {
            Ok(())
        } else {
            Err(format!("{got} bytes arrived"))
        }
    };
    timeout(ANSWER_TIMEOUT * 3, answer)
        .await
        .map_err(|_| "download too slow".to_owned())?
}

async fn upload(send: &mut http1::SendRequest<Body>, addr: SocketAddr) -> Result<(), String> {
    const CHUNK: usize = 64 * 1024;
    let chunk = Bytes::from(vec![7u8; CHUNK]);
    let chunks = (LARGE_BODY / CHUNK as u64) as usize;
    let frames = futures::stream::iter(
        (0..chunks).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
    );
    let req = Request::post("/upload")
        .header("host", addr.to_string())
        .header("traceparent", traceparent())
        .header("content-length", LARGE_BODY)
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .expect("a valid request");
    let want = LARGE_BODY.to_string();
    timeout(
        ANSWER_TIMEOUT * 3,
        exchange(send, req, Some(want.as_bytes())),
    )
    .await
    .map_err(|_| "upload too slow".to_owned())?
}
