//! For the trace tests: an app behind stitch's inbound listener that calls out through its
//! outbound listener (copying headers the way a test tells it), a recording upstream, a raw
//! HTTP/1 client that writes header lines byte for byte, and readers of the admin server's
//! traces and rules.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use stitch::telemetry::TelemetryConfig;

use super::{DEADLINE, Loopback, StitchUnderTest, listener};

/// Telemetry that keeps spans in the ring and moves them along quickly.
pub fn ring_only(service: &str) -> TelemetryConfig {
    TelemetryConfig {
        service_name: service.to_owned(),
        batch_delay: Duration::from_millis(20),
        ..TelemetryConfig::default()
    }
}

/// One request as a server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
}

impl Seen {
    /// Every value of `name`, in order, as text.
    pub fn all(&self, name: &str) -> Vec<String> {
        values(&self.headers, name)
    }

    /// The only value of `name`; panics (with the headers) when absent or repeated.
    pub fn one(&self, name: &str) -> String {
        let v = self.all(name);
        assert_eq!(
            v.len(),
            1,
            "exactly one {name} expected in {:?}",
            self.headers
        );
        v.into_iter().next().expect("one value")
    }

    /// The value of `name` if present exactly once.
    pub fn get(&self, name: &str) -> Option<String> {
        let v = self.all(name);
        assert!(v.len() <= 1, "{name} repeated in {:?}", self.headers);
        v.into_iter().next()
    }

    /// The `traceparent` parsed.
    pub fn tp(&self) -> Tp {
        Tp::parse(&self.one("traceparent"))
    }
}

/// Every value of `name` in `headers`, in order.
pub fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

/// The requests a server saw, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    pub fn push(&self, seen: Seen) {
        self.0.lock().expect("log lock").push(seen);
    }

    pub fn all(&self) -> Vec<Seen> {
        self.0.lock().expect("log lock").clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().expect("log lock").len()
    }

    pub fn last(&self) -> Seen {
        self.all().pop().expect("at least one request seen")
    }
}

/// A parsed `traceparent` (lower-case hex fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tp {
    pub version: String,
    pub trace_id: String,
    pub parent_id: String,
    pub flags: u8,
}

impl Tp {
    /// Parses a version-00 value stitch wrote; panics with the value when it is not one.
    pub fn parse(value: &str) -> Tp {
        let parts: Vec<&str> = value.split('-').collect();
        assert_eq!(parts.len(), 4, "traceparent {value:?} has four fields");
        assert_eq!(value.len(), 55, "traceparent {value:?} is 55 characters");
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        assert!(hex(parts[0], 2) && hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2));
        assert_ne!(
            parts[1],
            "0".repeat(32),
            "trace id not all zero in {value:?}"
        );
        assert_ne!(
            parts[2],
            "0".repeat(16),
            "parent id not all zero in {value:?}"
        );
        Tp {
            version: parts[0].to_owned(),
            trace_id: parts[1].to_owned(),
            parent_id: parts[2].to_owned(),
            flags: u8::from_str_radix(parts[3], 16).expect("hex flags"),
        }
    }

    pub fn sampled(&self) -> bool {
        self.flags & 0x01 != 0
    }

    pub fn random(&self) -> bool {
        self.flags & 0x02 != 0
    }
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What an app does with one inbound request (its headers): the status it answers.
pub type Handler = Arc<dyn Fn(HeaderMap) -> BoxFut<StatusCode> + Send + Sync>;

/// Serves `handler` on `listener` (HTTP/1 and h2c), recording every inbound request.
pub fn serve_app(listener: TcpListener, handler: Handler) -> Log {
    let log = Log::default();
    let seen = log.clone();
    super::serve_http(listener, move |req: Request<Incoming>| {
        let (seen, handler) = (seen.clone(), handler.clone());
        async move {
            let (parts, body) = req.into_parts();
            let _ = body.collect().await;
            seen.push(Seen {
                path: parts.uri.path().to_owned(),
                headers: parts.headers.clone(),
            });
            let status = handler(parts.headers).await;
            let mut resp = Response::new(Full::new(Bytes::from_static(b"done\n")));
            *resp.status_mut() = status;
            resp
        }
    });
    log
}

/// A recording upstream answering 200 to everything.
pub async fn upstream() -> (SocketAddr, Log) {
    let (l, addr) = listener().await;
    let log = serve_app(l, Arc::new(|_| Box::pin(async { StatusCode::OK })));
    (addr, log)
}

/// Which headers the app puts on its outbound calls, from the headers it received.
pub type Pick = Arc<dyn Fn(&HeaderMap, usize) -> Vec<(HeaderName, HeaderValue)> + Send + Sync>;

/// Copies every value of the named headers verbatim, in order.
pub fn copy(names: &'static [&'static str]) -> Pick {
    Arc::new(move |h: &HeaderMap, _| {
        names
            .iter()
            .flat_map(|n| {
                h.get_all(*n)
                    .iter()
                    .map(|v| (HeaderName::from_static(n), v.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    })
}

/// The app that "only copies headers": `traceparent` and `tracestate`.
pub fn copy_w3c() -> Pick {
    copy(&["traceparent", "tracestate"])
}

/// Sends no trace context at all (a goroutine without `ctx`).
pub fn drop_all() -> Pick {
    Arc::new(|_, _| Vec::new())
}

/// The headers the test asked the app to send: every `x-out-NAME` it received becomes
/// `NAME` on the outbound call (so a test can make the app send invalid values).
pub fn replay_out() -> Pick {
    Arc::new(|h: &HeaderMap, _| {
        h.iter()
            .filter_map(|(n, v)| {
                let name = n.as_str().strip_prefix("x-out-")?;
                Some((HeaderName::from_bytes(name.as_bytes()).ok()?, v.clone()))
            })
            .collect()
    })
}

/// An app that, for each inbound request, makes `calls` GETs (absolute-form, `/call/{i}`)
/// through `proxy` (stitch's outbound listener) to `upstream`, with the headers `pick`
/// chooses; answers 200 when all of them got 200, else 502.
pub fn copying_app(proxy: SocketAddr, upstream: SocketAddr, calls: usize, pick: Pick) -> Handler {
    Arc::new(move |headers: HeaderMap| {
        let pick = pick.clone();
        Box::pin(async move {
            let mut ok = true;
            for i in 0..calls {
                let out = pick(&headers, i);
                let uri = format!("http://{upstream}/call/{i}");
                match proxy_get(proxy, &uri, &out).await {
                    Ok(StatusCode::OK) => {}
                    _ => ok = false,
                }
            }
            if ok {
                StatusCode::OK
            } else {
                StatusCode::BAD_GATEWAY
            }
        })
    })
}

/// One HTTP/1.1 GET sent to `proxy` with an absolute-form target.
pub async fn proxy_get(
    proxy: SocketAddr,
    uri: &str,
    headers: &[(HeaderName, HeaderValue)],
) -> Result<StatusCode, String> {
    let stream = TcpStream::connect(proxy)
        .await
        .map_err(|e| format!("connect {proxy}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let parsed: http::Uri = uri.parse().map_err(|e| format!("uri {uri}: {e}"))?;
    let mut req = Request::get(uri);
    if let Some(a) = parsed.authority() {
        req = req.header(http::header::HOST, a.as_str());
    }
    let mut req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("request: {e}"))?;
    for (n, v) in headers {
        req.headers_mut().append(n.clone(), v.clone());
    }
    let resp = tokio::time::timeout(DEADLINE, sender.send_request(req))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    Ok(status)
}

/// Sends `GET path` to `addr` over a fresh connection, writing each header line exactly as
/// `name:value` (no space added), and returns the response status.
pub async fn raw_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}:{v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(head.as_bytes()).await.expect("write request");
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.expect("read response");
        buf
    };
    let buf = tokio::time::timeout(DEADLINE, exchange)
        .await
        .expect("response within the deadline");
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// `/config` as JSON.
pub async fn config_json(admin: SocketAddr) -> Value {
    super::fetch_json(admin, "/config").await
}

/// Polls `/traces/{trace_id}` until it holds at least `spans` spans; the JSON, or `None`.
pub async fn trace_with(admin: SocketAddr, trace_id: &str, spans: usize) -> Option<Value> {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (status, _, body) = super::fetch(admin, &format!("/traces/{trace_id}")).await;
        if status == StatusCode::OK {
            let v: Value = serde_json::from_slice(&body).expect("trace JSON");
            if v["spans"].as_array().map_or(0, Vec::len) >= spans {
                return Some(v);
            }
        }
        if tokio::time::Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The spans of a trace JSON with the given kind (`server`/`client`).
pub fn spans_of_kind<'a>(trace: &'a Value, kind: &str) -> Vec<&'a Value> {
    trace["spans"]
        .as_array()
        .map(|a| a.iter().filter(|s| s["kind"] == kind).collect())
        .unwrap_or_default()
}

/// A copying app, its stitch and its upstream, wired together.
pub struct Setup {
    pub stitch: StitchUnderTest,
    pub app: Log,
    pub upstream: Log,
}

/// Starts upstream, stitch (with `config`) and an app making `calls` calls with `pick`.
pub async fn setup(config: Option<PathBuf>, calls: usize, pick: Pick) -> Setup {
    let (upstream_addr, upstream_log) = upstream().await;
    let (app_listener, app_addr) = listener().await;
    let stitch = Loopback::to(app_addr)
        .rules(config)
        .telemetry(ring_only("copy-app"))
        .start()
        .await;
    let app = serve_app(
        app_listener,
        copying_app(stitch.outbound, upstream_addr, calls, pick),
    );
    Setup {
        stitch,
        app,
        upstream: upstream_log,
    }
}

/// Writes `text` as a rules file in a fresh temp dir (kept alive by the returned guard).
pub fn rules_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stitch.yaml");
    std::fs::write(&path, text).expect("write rules");
    (dir, path)
}

impl Setup {
    /// Sends `GET path` with `headers` through stitch inbound and asserts it succeeded end to
    /// end; returns what the app saw and the upstream requests the app's calls produced.
    pub async fn send(&self, path: &str, headers: &[(&str, &str)]) -> (Seen, Vec<Seen>) {
        let before = self.upstream.len();
        let apps_before = self.app.len();
        let status = raw_get(self.stitch.inbound, path, headers).await;
        assert_eq!(
            status, 200,
            "GET {path} with {headers:?} succeeded end to end"
        );
        assert_eq!(self.app.len(), apps_before + 1, "the app saw the request");
        (self.app.last(), self.upstream.all()[before..].to_vec())
    }
}
