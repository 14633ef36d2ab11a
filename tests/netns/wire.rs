//! Tiny blocking TCP/HTTP clients and servers (std::net) for the netns test: servers run on
//! threads moved into a namespace, clients either there or in a helper process whose UID the
//! redirect rules look at.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Every socket operation gives up after this, so a broken redirect fails instead of hanging.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One request a recording HTTP server answered.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The TCP peer of the connection (stitch, or the real client when it was bypassed).
    pub peer: SocketAddr,
    /// Request path.
    pub path: String,
    /// Header fields, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a recording server saw, shared with the test.
pub type Log = Arc<Mutex<Vec<Seen>>>;

/// The server behaviours the scenarios need.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// HTTP/1.1: records the request, answers `200` with body `name`.
    Http(&'static str),
    /// Copies bytes back until the client half-closes (client speaks first).
    Echo,
    /// Speaks first with a banner line, then echoes (SMTP/MySQL style).
    Banner,
    /// Writes the connection's peer address and closes.
    WhoAmI,
}

/// The banner line `Behaviour::Banner` writes.
pub const BANNER: &str = "220 stitch-netns banner\r\n";

/// Accepts on `listener` forever, one thread per connection. Returns the request log.
pub fn serve(listener: TcpListener, behaviour: Behaviour) -> Log {
    let log: Log = Arc::default();
    let shared = log.clone();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let log = shared.clone();
            thread::spawn(move || {
                let _ = handle(stream, behaviour, &log);
            });
        }
    });
    log
}

fn handle(mut stream: TcpStream, behaviour: Behaviour, log: &Log) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let peer = canonical(stream.peer_addr()?);
    match behaviour {
        Behaviour::Http(name) => {
            let head = read_head(&mut BufReader::new(stream.try_clone()?))?;
            let seen = parse_request(peer, &head);
            if let Ok(mut log) = log.lock() {
                log.push(seen);
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
                name.len()
            );
            stream.write_all(response.as_bytes())?;
        }
        Behaviour::Echo => echo(&mut stream)?,
        Behaviour::Banner => {
            stream.write_all(BANNER.as_bytes())?;
            echo(&mut stream)?;
        }
        Behaviour::WhoAmI => stream.write_all(peer.to_string().as_bytes())?,
    }
    stream.shutdown(Shutdown::Write)
}

fn echo(stream: &mut TcpStream) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

/// IPv4 clients of a dual-stack listener show up as `::ffff:a.b.c.d`; compare them as IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn read_head(reader: &mut impl BufRead) -> io::Result<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            return Ok(head);
        }
        head.push_str(&line);
    }
}

fn parse_request(peer: SocketAddr, head: &str) -> Seen {
    let mut lines = head.lines();
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Seen {
        peer,
        path,
        headers,
    }
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// `GET path` with the given extra header lines; returns the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str, headers: &[String]) -> io::Result<(u16, String)> {
    http_request(addr, "GET", path, headers, b"")
}

/// `METHOD path` with the given extra header lines and body (sent with its length); returns
/// the status code and the body.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[String],
    body: &[u8],
) -> io::Result<(u16, String)> {
    let mut stream = connect(addr)?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    if !body.is_empty() {
        request.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader)?;
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no HTTP status line in {head:?}")))?;
    let length = head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<u64>().ok())?
    });
    let mut body = Vec::new();
    match length {
        Some(n) => reader.take(n).read_to_end(&mut body)?,
        None => reader.read_to_end(&mut body)?,
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Sends `bytes`, half-closes, and returns everything the server sent back.
pub fn exchange(addr: SocketAddr, bytes: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = connect(addr)?;
    stream.write_all(bytes)?;
    stream.shutdown(Shutdown::Write)?;
    let mut back = Vec::new();
    stream.read_to_end(&mut back)?;
    Ok(back)
}

/// Waits for the server's first line before sending `bytes`; returns everything received.
pub fn banner_exchange(addr: SocketAddr, bytes: &[u8]) -> io::Result<Vec<u8>> {
    let stream = connect(addr)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut first = Vec::new();
    reader.read_until(b'\n', &mut first)?;
    let mut writer = stream;
    writer.write_all(bytes)?;
    writer.shutdown(Shutdown::Write)?;
    reader.read_to_end(&mut first)?;
    Ok(first)
}

/// The first flight of an HTTPS client: a real TLS ClientHello, as rustls writes it.
pub fn client_hello() -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("peer.example").expect("a DNS name");
    let mut conn =
        rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("a TLS client");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("the ClientHello");
    hello
}

/// Sends `bytes` and waits, connection open, for as many bytes back (as a TLS client waits
/// for the ServerHello); returns them and how long they took.
pub fn first_flight(addr: SocketAddr, bytes: &[u8]) -> io::Result<(Vec<u8>, Duration)> {
    let mut stream = connect(addr)?;
    let started = std::time::Instant::now();
    stream.write_all(bytes)?;
    let mut back = vec![0u8; bytes.len()];
    stream.read_exact(&mut back)?;
    Ok((back, started.elapsed()))
}
