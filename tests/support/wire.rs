//! Raw HTTP/1 on a socket: a buffered reader that understands message framing, a client that
//! writes exact bytes, and an upstream that records requests exactly as they arrived (header
//! name case, repeated fields, raw target bytes).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::within;

/// A header field as it was on the wire.
pub type RawHeader = (Vec<u8>, Vec<u8>);

/// A socket plus the bytes read from it but not consumed yet.
pub struct Wire {
    /// The socket.
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    /// Wraps a connected socket.
    pub fn new(stream: TcpStream) -> Self {
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Self {
        Wire::new(super::connect(addr).await)
    }

    /// Writes all of `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) {
        within("socket write", self.stream.write_all(bytes))
            .await
            .expect("socket write");
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads one message head through the blank line; `None` on a clean EOF before any byte.
    pub async fn read_head(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..pos + 4).collect();
                return Ok(Some(head));
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(std::io::ErrorKind::UnexpectedEof.into())
                };
            }
        }
    }

    /// Reads exactly `n` bytes.
    pub async fn read_n(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Reads and discards exactly `n` bytes without keeping them (large bodies).
    pub async fn discard_n(&mut self, mut n: u64) -> std::io::Result<()> {
        let buffered = (self.buf.len() as u64).min(n);
        self.buf.drain(..buffered as usize);
        n -= buffered;
        let mut chunk = vec![0u8; 256 * 1024];
        while n > 0 {
            let want = (chunk.len() as u64).min(n) as usize;
            let got = self.stream.read(&mut chunk[..want]).await?;
            if got == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            n -= got as u64;
        }
        Ok(())
    }

    async fn read_line(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n") {
                let mut line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                line.truncate(pos);
                return Ok(line);
            }
            if self.fill().await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads a chunked body; returns the decoded bytes, the chunk sizes as sent and the
    /// trailer fields.
    pub async fn read_chunked(&mut self) -> std::io::Result<(Vec<u8>, Vec<usize>, Vec<RawHeader>)> {
        let mut body = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let line = self.read_line().await?;
            let size_hex = line.split(|b| *b == b';').next().unwrap_or_default();
            let size =
                usize::from_str_radix(std::str::from_utf8(size_hex).unwrap_or("x").trim(), 16)
                    .map_err(|_| std::io::Error::other("bad chunk size line"))?;
            if size == 0 {
                break;
            }
            sizes.push(size);
            body.extend(self.read_n(size).await?);
            if self.read_n(2).await? != b"\r\n" {
                return Err(std::io::Error::other("chunk not followed by CRLF"));
            }
        }
        let mut trailers = Vec::new();
        loop {
            let line = self.read_line().await?;
            if line.is_empty() {
                break;
            }
            if let Some(colon) = line.iter().position(|b| *b == b':') {
                trailers.push((line[..colon].to_vec(), trim(&line[colon + 1..]).to_vec()));
            }
        }
        Ok((body, sizes, trailers))
    }

    /// Reads until the peer closes; returns what was read.
    pub async fn read_to_close(&mut self) -> std::io::Result<Vec<u8>> {
        while self.fill().await? != 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// Reads one response. `request_was_head` suppresses the body as RFC 9112 §6.3 says.
    pub async fn read_response(&mut self, request_was_head: bool) -> RawResponse {
        within("a response", self.try_read_response(request_was_head))
            .await
            .expect("a well-formed response")
    }

    /// Like [`Wire::read_response`] but returns framing errors and EOF to the caller.
    pub async fn try_read_response(
        &mut self,
        request_was_head: bool,
    ) -> std::io::Result<RawResponse> {
        let head = self
            .read_head()
            .await?
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        let mut fields = [httparse::EMPTY_HEADER; 256];
        let mut parsed = httparse::Response::new(&mut fields);
        match parsed.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {}
            other => {
                return Err(std::io::Error::other(format!(
                    "unparsable response head {other:?}: {:?}",
                    String::from_utf8_lossy(&head)
                )));
            }
        }
        let status = parsed.code.unwrap_or_default();
        let headers: Vec<RawHeader> = parsed
            .headers
            .iter()
            .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
            .collect();
        let mut resp = RawResponse {
            status,
            headers,
            body: Vec::new(),
            chunked: false,
            trailers: Vec::new(),
            head,
        };
        if request_was_head || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(resp);
        }
        if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().ends_with("chunked"))
        {
            let (body, _, trailers) = self.read_chunked().await?;
            resp.body = body;
            resp.chunked = true;
            resp.trailers = trailers;
        } else if let Some(len) = resp.header("content-length") {
            let len: usize = len
                .trim()
                .parse()
                .map_err(|_| std::io::Error::other("bad content-length"))?;
            resp.body = self.read_n(len).await?;
        } else {
            resp.body = self.read_to_close().await?;
        }
        Ok(resp)
    }

    /// Waits until the peer closes the connection (EOF or reset), discarding anything sent
    /// before; fails the test if that takes longer than `limit`.
    pub async fn expect_closed_within(&mut self, limit: std::time::Duration, what: &str) {
        let closed = tokio::time::timeout(limit, async {
            loop {
                match self.fill().await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "connection not closed within {limit:?}: {what}"
        );
    }
}

/// A response as read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Header fields in wire order and case.
    pub headers: Vec<RawHeader>,
    /// Decoded body.
    pub body: Vec<u8>,
    /// Whether the body came chunked.
    pub chunked: bool,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<RawHeader>,
    /// The raw head bytes.
    pub head: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<String> {
        header_value(&self.headers, name)
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The first value of `name` among `headers`, case-insensitively, as text.
pub fn header_value(headers: &[RawHeader], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// A request exactly as an upstream received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRequest {
    /// Method token.
    pub method: String,
    /// Request target, byte for byte.
    pub target: Vec<u8>,
    /// Minor HTTP version.
    pub version: u8,
    /// Header fields in wire order and case.
    pub headers: Vec<RawHeader>,
    /// Decoded body.
    pub body: Vec<u8>,
    /// Which accepted connection carried it (0-based).
    pub conn: usize,
}

impl RawRequest {
    /// The first value of header `name` (case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<String> {
        header_value(&self.headers, name)
    }
}

/// An upstream that records raw requests and answers each with a fixed response.
#[derive(Clone)]
pub struct RawUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Every complete request received, in arrival order.
    pub requests: Arc<Mutex<Vec<RawRequest>>>,
    /// Number of accepted connections.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
}

/// The fixed response of [`RawUpstream`]: odd header case and a repeated field, so response
/// transparency can be checked too.
pub const RAW_UPSTREAM_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Resp-MiXeD: Case\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\nX-Empty:\r\n\r\nraw-resp";

impl RawUpstream {
    /// Starts the upstream on a loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let up = RawUpstream {
            addr: listener
                .local_addr()
                .expect("bound listener has an address"),
            requests: Arc::default(),
            connections: Arc::default(),
        };
        let this = up.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let conn = this
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let requests = this.requests.clone();
                tokio::spawn(async move {
                    let mut wire = Wire::new(stream);
                    while let Ok(Some(req)) = read_request(&mut wire, conn).await {
                        requests.lock().expect("recorder lock").push(req);
                        if wire.stream.write_all(RAW_UPSTREAM_RESPONSE).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        up
    }

    /// A copy of the recorded requests.
    pub fn recorded(&self) -> Vec<RawRequest> {
        self.requests.lock().expect("recorder lock").clone()
    }

    /// Waits for the next recorded request and removes it from the record.
    pub async fn take_next(&self) -> RawRequest {
        self.wait_for(1).await;
        self.requests.lock().expect("recorder lock").remove(0)
    }

    /// Waits until `n` requests were recorded and returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<RawRequest> {
        super::eventually(&format!("{n} request(s) at the raw upstream"), async || {
            self.requests.lock().expect("recorder lock").len() >= n
        })
        .await;
        self.recorded()
    }
}

/// Reads one request (head and body) off `wire`; `Ok(None)` on EOF between requests.
pub async fn read_request(wire: &mut Wire, conn: usize) -> std::io::Result<Option<RawRequest>> {
    let Some(head) = wire.read_head().await? else {
        return Ok(None);
    };
    let mut fields = [httparse::EMPTY_HEADER; 512];
    let mut parsed = httparse::Request::new(&mut fields);
    if !matches!(parsed.parse(&head), Ok(httparse::Status::Complete(_))) {
        return Err(std::io::Error::other("unparsable request head"));
    }
    // httparse hands the target out as &str; take the raw bytes from the head itself so
    // nothing (not even UTF-8 validation) stands between the wire and the assertion.
    let line_end = find(&head, b"\r\n").unwrap_or(head.len());
    let line = &head[..line_end];
    let first_sp = line.iter().position(|b| *b == b' ').unwrap_or(0);
    let last_sp = line.iter().rposition(|b| *b == b' ').unwrap_or(line.len());
    let mut req = RawRequest {
        method: parsed.method.unwrap_or_default().to_owned(),
        target: line[first_sp + 1..last_sp].to_vec(),
        version: parsed.version.unwrap_or_default(),
        headers: parsed
            .headers
            .iter()
            .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
            .collect(),
        body: Vec::new(),
        conn,
    };
    if req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        req.body = wire.read_chunked().await?.0;
    } else if let Some(len) = req.header("content-length") {
        let len: usize = len
            .trim()
            .parse()
            .map_err(|_| std::io::Error::other("bad content-length"))?;
        req.body = wire.read_n(len).await?;
    }
    Ok(Some(req))
}

/// Sends `request` on a fresh connection to `addr` and reads the response (closing after).
pub async fn roundtrip(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut wire = Wire::connect(addr).await;
    wire.send(request).await;
    let is_head = request.starts_with(b"HEAD ");
    wire.read_response(is_head).await
}
