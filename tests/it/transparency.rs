//! Transparency: a table of odd but valid requests must reach the upstream through stitch
//! exactly as they reach it directly, and the upstream's response must reach the client
//! exactly as it would directly. "Exactly" means method, target bytes, version, body, and
//! every header field with its name's case and, per name, the order of its values (RFC 9110
//! §5.3 makes the relative order of different names insignificant).
//!
//! Trace-context headers are left out of the comparison: rewriting them is stitch's job
//! (the propagation issue), and everything else must be untouched.

use std::collections::BTreeMap;
use std::net::SocketAddr;

// Headers stitch is allowed to write: the trace dialects it repairs.
use stitch::propagation::TRACE_HEADERS;

use crate::support::Loopback;
use crate::support::wire::{RawHeader, RawRequest, RawResponse, RawUpstream, roundtrip};

/// Per lower-cased name: the (name as sent, value) pairs in order.
type FieldView = BTreeMap<String, Vec<(String, Vec<u8>)>>;

fn field_view(headers: &[RawHeader]) -> FieldView {
    let mut view = FieldView::new();
    for (name, value) in headers {
        let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
        if TRACE_HEADERS.contains(&lower.as_str()) {
            continue;
        }
        view.entry(lower)
            .or_default()
            .push((String::from_utf8_lossy(name).into_owned(), value.clone()));
    }
    view
}

/// What must be identical about a request.
#[derive(Debug, PartialEq)]
struct RequestView {
    method: String,
    target: String,
    version: u8,
    fields: FieldView,
    body: Vec<u8>,
}

fn request_view(r: &RawRequest) -> RequestView {
    RequestView {
        method: r.method.clone(),
        target: String::from_utf8_lossy(&r.target).into_owned(),
        version: r.version,
        fields: field_view(&r.headers),
        body: r.body.clone(),
    }
}

/// What must be identical about a response.
#[derive(Debug, PartialEq)]
struct ResponseView {
    status: u16,
    fields: FieldView,
    body: Vec<u8>,
}

fn response_view(r: &RawResponse) -> ResponseView {
    ResponseView {
        status: r.status,
        fields: field_view(&r.headers),
        body: r.body.clone(),
    }
}

/// The table: (name, request with `{host}` standing for the Host value).
fn cases() -> Vec<(&'static str, Vec<u8>)> {
    let big = "b".repeat(16 * 1024);
    let mut many = String::new();
    for i in 0..60 {
        many.push_str(&format!("X-Many-{i}: value-{i}\r\n"));
    }
    let raw: Vec<(&'static str, String)> = vec![
        ("plain GET", "GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".into()),
        ("mixed header name case", "GET /case HTTP/1.1\r\nHost: {host}\r\nX-MiXeD-CaSe: Value\r\ncontent-TYPE: text/plain\r\nACCEPT: */*\r\n\r\n".into()),
        ("repeated fields keep their order", "GET /rep HTTP/1.1\r\nHost: {host}\r\nX-Rep: 1\r\nX-Other: a\r\nX-Rep: 2\r\nCookie: a=1\r\nCookie: b=2\r\nX-Rep: 3\r\n\r\n".into()),
        ("comma lists and odd values", "GET /vals HTTP/1.1\r\nHost: {host}\r\nAccept: text/html, application/json;q=0.9 , */*;q=0.1\r\nX-Quoted: \"a, b\"; c=\"d\"\r\nX-Empty:\r\nX-Spaces: a   b\r\n\r\n".into()),
        ("obs-text value bytes", "GET /latin HTTP/1.1\r\nHost: {host}\r\nX-Latin: caf\u{e9}\r\n\r\n".into()),
        ("large header", format!("GET /big HTTP/1.1\r\nHost: {{host}}\r\nX-Big: {big}\r\n\r\n")),
        ("many headers", format!("GET /many HTTP/1.1\r\nHost: {{host}}\r\n{many}\r\n")),
        ("PURGE method", "PURGE /cache/item HTTP/1.1\r\nHost: {host}\r\n\r\n".into()),
        ("PROPFIND with body", "PROPFIND /dav/ HTTP/1.1\r\nHost: {host}\r\nDepth: 1\r\nContent-Type: application/xml\r\nContent-Length: 26\r\n\r\n<propfind xmlns=\"DAV:\"/>\r\n".into()),
        ("custom method token", "M-SEARCH_X.1 /x HTTP/1.1\r\nHost: {host}\r\n\r\n".into()),
        ("OPTIONS asterisk", "OPTIONS * HTTP/1.1\r\nHost: {host}\r\n\r\n".into()),
        ("DELETE with body", "DELETE /things/1 HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nwhy?!".into()),
        ("POST empty body", "POST /empty HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n".into()),
        ("PUT binary body", "PUT /bin HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\nContent-Length: 4\r\n\r\n\0\r\n\u{7f}".into()),
        ("unusual target", "GET /a/%2e%2E/b;x=1//c/./d?q=%20+%2B&&k&=v&x=%zz HTTP/1.1\r\nHost: {host}\r\n\r\n".into()),
        ("percent-encoded unicode target", "GET /%E2%82%AC/%F0%9F%98%80?q=%C3%A9 HTTP/1.1\r\nHost: {host}\r\n\r\n".into()),
        ("Host with odd case value", "GET /h HTTP/1.1\r\nhOsT: {host}\r\nUser-Agent: curl/8.0 (x86_64) libcurl\r\n\r\n".into()),
        ("baggage passes untouched", "GET /bag HTTP/1.1\r\nHost: {host}\r\nbaggage: userId=alice,serverNode=DF%2028\r\n\r\n".into()),
    ];
    raw.into_iter()
        .map(|(name, req)| {
            // Build bytes by hand so the obs-text case stays one byte (0xE9), not UTF-8.
            let bytes = req
                .chars()
                .map(|c| u8::try_from(u32::from(c)).expect("cases use single-byte characters"))
                .collect();
            (name, bytes)
        })
        .collect()
}

fn with_host(req: &[u8], host: SocketAddr) -> Vec<u8> {
    let text: String = req.iter().map(|b| char::from(*b)).collect();
    text.replace("{host}", &host.to_string())
        .chars()
        .map(|c| u8::try_from(u32::from(c)).expect("single-byte characters"))
        .collect()
}

#[tokio::test]
async fn requests_and_responses_arrive_as_they_would_directly() {
    let direct = RawUpstream::start().await;
    let proxied = RawUpstream::start().await;
    let stitch = Loopback::to(proxied.addr).start().await;
    let mut failures = Vec::new();
    for (name, template) in cases() {
        // The Host value names the upstream each request is meant for; both sides get the
        // same text so the comparison is like for like.
        let req = with_host(&template, direct.addr);
        let direct_resp = roundtrip(direct.addr, &req).await;
        let proxied_resp = roundtrip(stitch.inbound, &req).await;
        let want = request_view(&direct.take_next().await);
        let got = request_view(&proxied.take_next().await);
        if want != got {
            failures.push(format!(
                "request {name:?}:\n  direct:  {want:?}\n  stitch:  {got:?}"
            ));
        }
        let (want, got) = (response_view(&direct_resp), response_view(&proxied_resp));
        if want != got {
            failures.push(format!(
                "response to {name:?}:\n  direct:  {want:?}\n  stitch:  {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} difference(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Field names a generated request must not use: framing, connection management and the
/// target itself are covered by dedicated tests, and trace headers are stitch's to rewrite.
const RESERVED: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "content-length",
    "upgrade",
    "proxy-connection",
    "expect",
];

fn generated_request() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let method = prop_oneof![
        Just("GET".to_owned()),
        Just("POST".to_owned()),
        Just("PUT".to_owned()),
        "[A-Z][A-Z_.-]{0,11}",
    ];
    let target = (
        proptest::collection::vec("[a-zA-Z0-9._~!$&'()*+,;=:@-]{0,10}", 1..5),
        proptest::option::of("[a-zA-Z0-9=&+._~/?-]{0,24}"),
    )
        .prop_map(|(segments, query)| {
            let mut t = format!("/{}", segments.join("/"));
            if let Some(q) = query {
                t.push('?');
                t.push_str(&q);
            }
            t
        });
    let name = "[A-Za-z][A-Za-z0-9-]{0,15}".prop_filter("reserved field name", |n| {
        let lower = n.to_ascii_lowercase();
        !RESERVED.contains(&lower.as_str()) && !TRACE_HEADERS.contains(&lower.as_str())
    });
    let headers = proptest::collection::vec((name, "[!-~]([ -~]{0,40}[!-~])?"), 0..12);
    let body = proptest::collection::vec(any::<u8>(), 0..2048);
    (method, target, headers, body).prop_map(|(method, target, headers, body)| {
        let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {{host}}\r\n").into_bytes();
        for (n, v) in headers {
            req.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
        if !body.is_empty() {
            req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(&body);
        req
    })
}

#[test]
fn generated_requests_arrive_as_they_would_directly() {
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let (direct, proxied, stitch) = rt.block_on(async {
        let direct = RawUpstream::start().await;
        let proxied = RawUpstream::start().await;
        let stitch = Loopback::to(proxied.addr).start().await;
        (direct, proxied, stitch)
    });
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&generated_request(), |template| {
        let req = with_host(&template, direct.addr);
        let (want_req, got_req, want_resp, got_resp) = rt.block_on(async {
            let direct_resp = roundtrip(direct.addr, &req).await;
            let proxied_resp = roundtrip(stitch.inbound, &req).await;
            (
                request_view(&direct.take_next().await),
                request_view(&proxied.take_next().await),
                response_view(&direct_resp),
                response_view(&proxied_resp),
            )
        });
        if want_req != got_req || want_resp != got_resp {
            return Err(TestCaseError::fail(format!(
                "request {:?}\n  direct:  {want_req:?} {want_resp:?}\n  stitch:  {got_req:?} {got_resp:?}",
                String::from_utf8_lossy(&req)
            )));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
