//! The soak's traffic mix. Each kind runs in its own tasks at a steady pace (scaled by
//! `RATE_SCALE`) until the end, and checks every answer; anything else is a failure with its
//! reason. At scale 1 the mix is about 400 requests a second:
//!
//! | kind | what |
//! | --- | --- |
//! | `h1_keepalive` | 4 keep-alive HTTP/1.1 connections, 40 req/s each |
//! | `h1_new_conn` | a new connection per request, 15 req/s |
//! | `h1_malformed` | broken or unusual trace headers (invalid `traceparent`, upper-case hex, 64-bit ids, bad B3 and Jaeger, 40 `tracestate` members, oversized `baggage`), 30 req/s |
//! | `h1_outbound` | absolute-form requests through the outbound listener (stitch as `HTTP_PROXY`), 20 req/s |
//! | `h2c` | one HTTP/2 connection, 100 req/s, concurrent streams |
//! | `grpc_unary` | tonic over h2c, 40 calls/s |
//! | `grpc_stream` | 2 bidirectional streams of 30 s, 10 messages/s each, then reopened |
//! | `websocket` | 2 WebSocket sessions of 20 s, 10 messages/s each, then reopened |
//! | `opaque` | 2 opaque TCP sessions of 10 s, 10 messages/s each, then reopened |
//! | `body_down`, `body_up` | 8 MiB downloaded and 8 MiB uploaded every 3 s |
//!
//! Sessions (`*_session`) count separately from their messages: a session fails when it
//! cannot open or does not close cleanly.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use http::{Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior, interval, timeout};

use crate::raw_codec::{RawCodec, UNARY_PATH};
use crate::sessions::{Session, grpc_stream, large_bodies, opaque, sessions, websocket};
use crate::tally::Tally;

/// Longest wait for any one answer.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// Where the traffic goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Targets {
    /// stitch's inbound listener (explicit mode, to the backend).
    pub(crate) inbound: SocketAddr,
    /// stitch's outbound listener (a plain HTTP proxy).
    pub(crate) outbound: SocketAddr,
    /// The backend itself (named in absolute-form requests).
    pub(crate) backend: SocketAddr,
}

/// Runs the mix for `length`, printing cumulative counts every `report_every`.
pub(crate) async fn run(targets: Targets, length: Duration, scale: f64, report_every: Duration) {
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let until = started + length;
    let every = |per_second: f64| Duration::from_secs_f64(1.0 / (per_second * scale).max(0.01));
    let mut tasks = Vec::new();
    let mut spawn = |task: BoxFuture<'static, ()>| tasks.push(tokio::spawn(task));
    let t = tally.clone();
    for _ in 0..4 {
        spawn(
            h1_paced(
                targets.inbound,
                None,
                "h1_keepalive",
                every(40.0),
                until,
                t.clone(),
            )
            .boxed(),
        );
    }
    spawn(
        h1_paced(
            targets.outbound,
            Some(targets.backend),
            "h1_outbound",
            every(20.0),
            until,
            t.clone(),
        )
        .boxed(),
    );
    spawn(malformed(targets.inbound, every(30.0), until, t.clone()).boxed());
    spawn(new_connections(targets.inbound, every(15.0), until, t.clone()).boxed());
    spawn(h2c(targets.inbound, every(100.0), until, t.clone()).boxed());
    spawn(grpc_unary(targets.inbound, every(40.0), until, t.clone()).boxed());
    // Each kind of session twice: (kind, how long one session lasts, the session).
    let kinds: [(&'static str, u64, Session); 3] = [
        ("grpc_stream", 30, |a, p, e, t| {
            grpc_stream(a, p, e, t).boxed()
        }),
        ("websocket", 20, |a, p, e, t| websocket(a, p, e, t).boxed()),
        ("opaque", 10, |a, p, e, t| opaque(a, p, e, t).boxed()),
    ];
    for (kind, seconds, session) in kinds.into_iter().chain(kinds) {
        let length = Duration::from_secs(seconds);
        let task = sessions(
            kind,
            targets.inbound,
            length,
            every(10.0),
            until,
            t.clone(),
            session,
        );
        spawn(task.boxed());
    }
    spawn(large_bodies(targets.inbound, every(1.0 / 3.0), until, t).boxed());

    let mut report = interval(report_every);
    report.tick().await;
    while Instant::now() < until {
        report.tick().await;
        println!("{}", tally.json(started.elapsed().as_secs_f64(), false));
    }
    for task in tasks {
        let _ = task.await;
    }
    println!("{}", tally.json(started.elapsed().as_secs_f64(), true));
}

/// A pace: one tick per `every`, late ticks delayed rather than bunched.
pub(crate) fn pace(every: Duration) -> tokio::time::Interval {
    let mut ticks = interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks
}

/// A sampled W3C parent with a fresh trace id and the client's fixed span id.
pub(crate) fn traceparent() -> String {
    format!(
        "00-{:032x}-{}-01",
        rand::random::<u128>(),
        crate::CLIENT_SPAN_ID
    )
}

pub(crate) async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let tcp = timeout(ANSWER_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect to {addr} timed out"))?
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

pub(crate) async fn h1_connect(addr: SocketAddr) -> Result<http1::SendRequest<Body>, String> {
    let io = TokioIo::new(connect(addr).await?);
    let (send, conn) = http1::handshake(io)
        .await
        .map_err(|e| format!("h1 handshake: {e}"))?;
    tokio::spawn(conn.with_upgrades());
    Ok(send)
}

pub(crate) fn empty() -> Body {
    Full::new(Bytes::new()).boxed()
}

/// Sends `req` on `send` once the connection is ready; the answer's head.
pub(crate) async fn send_h1(
    send: &mut http1::SendRequest<Body>,
    req: Request<Body>,
) -> Result<http::Response<hyper::body::Incoming>, String> {
    send.ready().await.map_err(|e| format!("connection: {e}"))?;
    send.send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))
}

/// Sends `req` on `send` and reads the whole answer; fails unless 200 (and `want`, if given).
pub(crate) async fn exchange(
    send: &mut http1::SendRequest<Body>,
    req: Request<Body>,
    want: Option<&[u8]>,
) -> Result<(), String> {
    let answer = async { read_answer(send_h1(send, req).await?, want).await };
    timeout(ANSWER_TIMEOUT, answer)
        .await
        .map_err(|_| "no answer in time".to_owned())?
}

/// Reads a whole answer and checks it.
async fn read_answer(
    resp: http::Response<hyper::body::Incoming>,
    want: Option<&[u8]>,
) -> Result<(), String> {
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    check(status, &body.to_bytes(), want)
}

/// Fails unless 200 (and `want` as the body, if given).
fn check(status: StatusCode, body: &[u8], want: Option<&[u8]>) -> Result<(), String> {
    if status != StatusCode::OK {
        return Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(body)
        ));
    }
    match want {
        Some(want) if body != want => Err(format!("body {:?}", String::from_utf8_lossy(body))),
        _ => Ok(()),
    }
}

/// The keep-alive connection in `conn`, opened first when there is none (or the last one
/// failed); `None`, with the failure counted, when it cannot be opened.
pub(crate) async fn reuse<'a>(
    conn: &'a mut Option<http1::SendRequest<Body>>,
    addr: SocketAddr,
    kind: &'static str,
    tally: &Tally,
) -> Option<&'a mut http1::SendRequest<Body>> {
    if conn.is_none() {
        match h1_connect(addr).await {
            Ok(send) => *conn = Some(send),
            Err(why) => {
                tally.failed(kind, why);
                return None;
            }
        }
    }
    conn.as_mut()
}

/// Keep-alive HTTP/1.1 at a steady pace: `request(n)` is the n-th request, answered
/// [`crate::OK_BODY`]. A connection that failed is replaced.
async fn keep_alive(
    addr: SocketAddr,
    kind: &'static str,
    every: Duration,
    until: Instant,
    tally: Arc<Tally>,
    mut request: impl FnMut(u64) -> Request<Body>,
) {
    let mut ticks = pace(every);
    let mut conn = None;
    let mut n = 0u64;
    while ticks.tick().await < until {
        n += 1;
        let Some(send) = reuse(&mut conn, addr, kind, &tally).await else {
            continue;
        };
        let result = exchange(send, request(n), Some(crate::OK_BODY)).await;
        if result.is_err() {
            conn = None;
        }
        tally.record(kind, result);
    }
}

/// Plain requests with a sampled parent; `proxy_to` sends absolute-form requests for that
/// backend (through the outbound listener).
async fn h1_paced(
    addr: SocketAddr,
    proxy_to: Option<SocketAddr>,
    kind: &'static str,
    every: Duration,
    until: Instant,
    tally: Arc<Tally>,
) {
    let host = proxy_to.unwrap_or(addr).to_string();
    keep_alive(addr, kind, every, until, tally, |n| {
        let uri = match proxy_to {
            Some(backend) => format!("http://{backend}/out/{n}"),
            None => format!("/api/{n}?q=soak"),
        };
        Request::get(uri)
            .header("host", &host)
            .header("traceparent", traceparent())
            .body(empty())
            .expect("a valid request")
    })
    .await;
}

/// Trace headers stitch must survive: each invalid one is treated as absent (a new trace).
const MALFORMED: &[&[(&str, &str)]] = &[
    &[("traceparent", "00-zzzz-00f067aa0ba902b7-01")],
    &[(
        "traceparent",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
    )],
    &[(
        "traceparent",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    )],
    &[("traceparent", "00-a3ce929d0e0e4736-00f067aa0ba902b7-01")],
    &[(
        "traceparent",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )],
    &[("b3", "not-a-b3-header")],
    &[("x-b3-traceid", "xyz"), ("x-b3-spanid", "1")],
    &[("uber-trace-id", "::::")],
    &[(
        "uber-trace-id",
        "4bf92f3577b34da6a3ce929d0e0e4736%3A00f067aa0ba902b7%3A0%3A1",
    )],
];

async fn malformed(addr: SocketAddr, every: Duration, until: Instant, tally: Arc<Tally>) {
    let many_members: String = (0..40)
        .map(|i| format!("k{i}=v{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let huge_baggage = format!("k={}", "v".repeat(9000));
    keep_alive(addr, "h1_malformed", every, until, tally, |n| {
        let mut req = Request::get(format!("/malformed/{n}")).header("host", addr.to_string());
        let which = usize::try_from(n).unwrap_or(0) % (MALFORMED.len() + 2);
        if let Some(headers) = MALFORMED.get(which) {
            for (name, value) in *headers {
                req = req.header(*name, *value);
            }
        } else if which == MALFORMED.len() {
            req = req
                .header("traceparent", traceparent())
                .header("tracestate", &many_members);
        } else {
            req = req
                .header("traceparent", traceparent())
                .header("baggage", &huge_baggage);
        }
        req.body(empty()).expect("a valid request")
    })
    .await;
}

/// One request per connection, `Connection: close`.
async fn new_connections(addr: SocketAddr, every: Duration, until: Instant, tally: Arc<Tally>) {
    let mut ticks = pace(every);
    while ticks.tick().await < until {
        let result = async {
            let mut send = h1_connect(addr).await?;
            let req = Request::get("/new")
                .header("host", addr.to_string())
                .header("connection", "close")
                .header("traceparent", traceparent())
                .body(empty())
                .expect("a valid request");
            exchange(&mut send, req, Some(crate::OK_BODY)).await
        }
        .await;
        tally.record("h1_new_conn", result);
    }
}

async fn h2c(addr: SocketAddr, every: Duration, until: Instant, tally: Arc<Tally>) {
    let kind = "h2c";
    let mut ticks = pace(every);
    let mut conn: Option<http2::SendRequest<Body>> = None;
    while ticks.tick().await < until {
        if conn.as_ref().is_none_or(|c| c.is_closed()) {
            let opened = async {
                let io = TokioIo::new(connect(addr).await?);
                let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("h2 handshake: {e}"))?;
                tokio::spawn(conn);
                Ok::<_, String>(send)
            };
            match opened.await {
                Ok(send) => conn = Some(send),
                Err(why) => {
                    tally.failed(kind, why);
                    continue;
                }
            }
        }
        let Some(mut send) = conn.clone() else {
            continue;
        };
        let tally = tally.clone();
        tokio::spawn(async move {
            let req = Request::get(format!("http://{addr}/h2"))
                .header("traceparent", traceparent())
                .body(empty())
                .expect("a valid request");
            let answer = async {
                send.ready().await.map_err(|e| format!("connection: {e}"))?;
                let resp = send
                    .send_request(req)
                    .await
                    .map_err(|e| format!("request: {e}"))?;
                read_answer(resp, Some(crate::OK_BODY)).await
            };
            let result = timeout(ANSWER_TIMEOUT, answer)
                .await
                .unwrap_or_else(|_| Err("no answer in time".to_owned()));
            tally.record(kind, result);
        });
    }
}

pub(crate) fn grpc_request<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if let Ok(value) = traceparent().parse() {
        req.metadata_mut().insert("traceparent", value);
    }
    req
}

async fn grpc_unary(addr: SocketAddr, every: Duration, until: Instant, tally: Arc<Tally>) {
    let channel = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
        Ok(endpoint) => endpoint.timeout(ANSWER_TIMEOUT).connect_lazy(),
        Err(e) => return tally.failed("grpc_unary", e),
    };
    let mut ticks = pace(every);
    let mut n = 0u64;
    while ticks.tick().await < until {
        n += 1;
        let (channel, tally) = (channel.clone(), tally.clone());
        tokio::spawn(async move {
            let mut client = tonic::client::Grpc::new(channel);
            let payload = Bytes::from(format!("unary {n}"));
            let call = async {
                client.ready().await.map_err(|e| format!("channel: {e}"))?;
                let resp = client
                    .unary::<Bytes, Bytes, _>(
                        grpc_request(payload.clone()),
                        UNARY_PATH.parse().expect("a path"),
                        RawCodec,
                    )
                    .await
                    .map_err(|e| format!("status: {e}"))?;
                if resp.into_inner() == payload {
                    Ok(())
                } else {
                    Err("wrong echo".to_owned())
                }
            };
            tally.record("grpc_unary", call.await);
        });
    }
}
