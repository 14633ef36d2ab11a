//! Property tests of the client driver (run by `make test`): whatever bytes an upstream sends,
//! split however, an exchange ends in an error or a response whose body ends — never a panic
//! or a hang; and a well-formed response split anywhere arrives whole and gives the
//! connection back.

use std::time::Duration;

use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Request};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use proptest::collection::vec;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::chunked::{CHUNK_END, encode_chunk_header, encode_last_chunk};
use super::client::{ClientSettings, Connection};
use super::head::HeadLimits;
use super::props::http_ish;
use super::server_test_support::{echo, settings as server_settings, spawn_serve};
use crate::shutdown::ShutdownHandle;

/// Generous bound on one whole exchange over an in-memory pipe: a hang guard only.
const GUARD: Duration = Duration::from_secs(5);

/// Starts that get past the status line and into each framing often.
const STARTS: &[&str] = &[
    "",
    "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
    "HTTP/1.0 200 OK\r\n\r\n",
    "HTTP/1.1 101 Switching Protocols\r\n\r\n",
    "HTTP/1.1 204 No Content\r\n",
    "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n",
];

/// A client connection over an in-memory pipe, and the upstream's end.
fn pipe() -> (Connection, DuplexStream) {
    let (client, upstream) = tokio::io::duplex(1024);
    let (read, write) = tokio::io::split(client);
    (Connection::new(Box::new(read), Box::new(write)), upstream)
}

/// Plays the upstream: writes `bytes` cut at `splits` (cyclically, yielding between pieces),
/// closes its write side, and reads whatever the client sends until the client closes.
async fn play(upstream: DuplexStream, bytes: Vec<u8>, splits: Vec<usize>) {
    let (mut read, mut write) = tokio::io::split(upstream);
    let drain = tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = read.read_to_end(&mut sink).await;
    });
    let mut at = 0;
    for size in splits.iter().copied().cycle() {
        if at >= bytes.len() {
            break;
        }
        let end = (at + size.max(1)).min(bytes.len());
        if write.write_all(&bytes[at..end]).await.is_err() {
            break;
        }
        at = end;
        tokio::task::yield_now().await;
    }
    let _ = write.shutdown().await;
    drop(write);
    let _ = drain.await;
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn settings(max_head_bytes: usize, max_headers: usize) -> ClientSettings {
    ClientSettings {
        limits: HeadLimits {
            max_head_bytes,
            max_headers,
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_upstream_bytes_end_in_an_error_or_a_response(
        bytes in prop_oneof![vec(any::<u8>(), 0..600), http_ish(STARTS)],
        splits in vec(1usize..64, 1..8),
        method in proptest::sample::select(vec![Method::GET, Method::HEAD, Method::POST, Method::CONNECT]),
        max_head_bytes in 0usize..700,
        max_headers in 0usize..12,
    ) {
        let finished = runtime().block_on(async move {
            let (conn, upstream) = pipe();
            tokio::spawn(play(upstream, bytes, splits));
            let mut req = Request::new(Full::new(Bytes::from_static(b"body")));
            *req.method_mut() = method;
            let settings = settings(max_head_bytes, max_headers);
            tokio::time::timeout(GUARD, async {
                let Ok(exchange) = conn.send(req, &settings).await else {
                    return;
                };
                let mut body = exchange.response.into_body();
                while let Some(frame) = body.frame().await {
                    if frame.is_err() {
                        break;
                    }
                }
                drop(body);
                drop(exchange.upgraded);
                let _ = exchange.reuse.reclaim();
            })
            .await
            .is_ok()
        });
        prop_assert!(finished, "the exchange hung");
    }

    #[test]
    fn a_well_formed_response_split_anywhere_arrives_whole(
        data in vec(any::<u8>(), 0..2000),
        chunked in any::<bool>(),
        chunk_sizes in vec(1usize..300, 1..6),
        splits in vec(1usize..100, 1..10),
    ) {
        let mut wire = b"HTTP/1.1 200 OK\r\n".to_vec();
        if chunked {
            wire.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut at = 0;
            for size in chunk_sizes.iter().cycle() {
                if at >= data.len() {
                    break;
                }
                let end = (at + size).min(data.len());
                encode_chunk_header((end - at) as u64, &mut wire);
                wire.extend_from_slice(&data[at..end]);
                wire.extend_from_slice(CHUNK_END);
                at = end;
            }
            encode_last_chunk(None, &mut wire);
        } else {
            wire.extend_from_slice(format!("Content-Length: {}\r\n\r\n", data.len()).as_bytes());
            wire.extend_from_slice(&data);
        }
        let (got, reclaimed) = runtime().block_on(async move {
            let (conn, upstream) = pipe();
            // The upstream keeps its end open (a keep-alive connection) until the test ends.
            let (mut up_read, mut up_write) = tokio::io::split(upstream);
            tokio::spawn(async move {
                let mut sink = vec![0u8; 1024];
                while up_read.read(&mut sink).await.is_ok_and(|n| n > 0) {}
            });
            tokio::spawn(async move {
                let mut at = 0;
                for size in splits.iter().copied().cycle() {
                    if at >= wire.len() {
                        break;
                    }
                    let end = (at + size).min(wire.len());
                    if up_write.write_all(&wire[at..end]).await.is_err() {
                        return;
                    }
                    at = end;
                    tokio::task::yield_now().await;
                }
                std::future::pending::<()>().await;
            });
            let req = Request::new(Empty::<Bytes>::new());
            let settings = settings(8192, 32);
            tokio::time::timeout(GUARD, async {
                let exchange = conn.send(req, &settings).await.expect("a response");
                let collected = exchange.response.into_body().collect().await.expect("a body");
                (collected.to_bytes().to_vec(), exchange.reuse.reclaim().is_some())
            })
            .await
            .expect("no hang")
        });
        prop_assert_eq!(got, data);
        prop_assert!(reclaimed, "a complete keep-alive exchange gives the connection back");
    }
}

/// How a generated request body declares its length.
#[derive(Debug, Clone, Copy)]
enum Declared {
    /// An exact size hint (one data frame, no trailers): `content-length` is added.
    Exact,
    /// Unknown: sent chunked, trailers included.
    Unknown,
    /// Unknown, but the caller gave `Content-Length`.
    Given,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_request_body_of_any_shape_reaches_the_server_driver_intact(
        frames in vec(vec(any::<u8>(), 0..12_000), 0..5),
        trailers in vec(("x-[a-z]{1,6}", "[a-z0-9]{1,6}"), 0..3),
        declared in prop_oneof![Just(Declared::Exact), Just(Declared::Unknown), Just(Declared::Given)],
    ) {
        let data: Vec<u8> = frames.concat();
        let sent = data.clone();
        let mut trailer_map = http::HeaderMap::new();
        for (n, v) in &trailers {
            trailer_map.append(
                http::header::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                http::HeaderValue::from_str(v).expect("value"),
            );
        }
        // A stream body is never "at its end" before it is polled: Unknown always goes
        // chunked, and only chunked carries trailers. The echo lists them in map order.
        let expected_trailers: String = match declared {
            Declared::Unknown => trailer_map
                .iter()
                .map(|(n, v)| format!("{n}={};", v.to_str().unwrap_or("?")))
                .collect(),
            Declared::Exact | Declared::Given => String::new(),
        };
        let (text, trailers_seen, second) = runtime().block_on(async move {
            let (client, server) = tokio::io::duplex(16 * 1024);
            let _serving = spawn_serve(
                server,
                tower::service_fn(echo),
                server_settings(),
                ShutdownHandle::default(),
                None,
            );
            let (read, write) = tokio::io::split(client);
            let conn = Connection::new(Box::new(read), Box::new(write));
            let settings = ClientSettings::default();
            tokio::time::timeout(GUARD, async move {
                let exchange = match declared {
                    Declared::Exact => {
                        let req = post(Full::new(Bytes::from(data.clone())));
                        conn.send(req, &settings).await.expect("a response")
                    }
                    Declared::Unknown | Declared::Given => {
                        let mut items: Vec<Result<Frame<Bytes>, Infallible>> =
                            frames.into_iter().map(|f| Ok(Frame::data(Bytes::from(f)))).collect();
                        if matches!(declared, Declared::Unknown) && !trailer_map.is_empty() {
                            items.push(Ok(Frame::trailers(trailer_map)));
                        }
                        let mut req = post(StreamBody::new(futures::stream::iter(items)));
                        if matches!(declared, Declared::Given) {
                            req.headers_mut().insert(
                                http::header::CONTENT_LENGTH,
                                http::HeaderValue::from(data.len()),
                            );
                        }
                        conn.send(req, &settings).await.expect("a response")
                    }
                };
                let trailers_seen = exchange.response.headers()["x-trailers"]
                    .to_str()
                    .unwrap_or("?")
                    .to_owned();
                let body = exchange.response.into_body().collect().await.expect("body");
                let text = body.to_bytes();
                let conn = exchange.reuse.reclaim().expect("kept alive");
                let again = conn
                    .send(Request::get("/again").body(Empty::<Bytes>::new()).expect("request"), &settings)
                    .await
                    .expect("a second response");
                let second = again.response.into_body().collect().await.expect("body").to_bytes();
                (text, trailers_seen, second)
            })
            .await
            .expect("no hang")
        });
        // The echo answers text (lossy), so the data is compared as the echo writes it.
        let expected = format!("POST / {}", String::from_utf8_lossy(&sent));
        prop_assert!(text[..] == *expected.as_bytes(), "the echo differs");
        prop_assert_eq!(trailers_seen, expected_trailers);
        prop_assert_eq!(&second[..], b"GET /again ");
    }
}

/// A `POST /` with `body`.
fn post<B>(body: B) -> Request<B> {
    let mut req = Request::new(body);
    *req.method_mut() = Method::POST;
    *req.uri_mut() = http::Uri::from_static("/");
    req
}
