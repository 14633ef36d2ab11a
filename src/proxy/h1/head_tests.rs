//! Unit tests of [`super::head`]: exact round trips, the strictness table, limits, and the
//! case-preserving writer.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use super::head::{
    HeadError, HeadLimits, MAX_TARGET_BYTES, RequestHead, ResponseHead, parse_request,
    parse_response, write_request_head, write_response_head,
};

/// The server side's defaults (`--max-header-bytes`, `--max-headers`).
const LIMITS: HeadLimits = HeadLimits {
    max_head_bytes: 65536,
    max_headers: 100,
};

fn request(bytes: &[u8]) -> (RequestHead, usize) {
    match parse_request(bytes, &LIMITS) {
        Ok(Some(done)) => done,
        other => panic!(
            "{:?} did not parse: {other:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

fn request_error(bytes: &[u8], limits: &HeadLimits) -> HeadError {
    match parse_request(bytes, limits) {
        Err(e) => e,
        other => panic!(
            "{:?} was not refused: {other:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

fn response(bytes: &[u8]) -> (ResponseHead, usize) {
    match parse_response(bytes, &LIMITS) {
        Ok(Some(done)) => done,
        other => panic!(
            "{:?} did not parse: {other:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

fn response_error(bytes: &[u8]) -> HeadError {
    match parse_response(bytes, &LIMITS) {
        Err(e) => e,
        other => panic!(
            "{:?} was not refused: {other:?}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

fn write_request(head: &RequestHead) -> Vec<u8> {
    let mut out = Vec::new();
    write_request_head(
        &mut out,
        &head.method,
        &head.uri,
        head.version,
        &head.headers,
        Some(&head.case),
    );
    out
}

fn write_response(head: &ResponseHead) -> Vec<u8> {
    let mut out = Vec::new();
    write_response_head(
        &mut out,
        head.version,
        head.status,
        head.reason.as_deref(),
        &head.headers,
        Some(&head.case),
    );
    out
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Requests written the way the writer writes (CRLF, `Name: value`, a name's fields
/// together) come back byte for byte: case, order, target and values untouched.
#[test]
fn requests_round_trip_byte_for_byte() {
    let cases: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /case HTTP/1.1\r\nHost: a\r\nX-MiXeD-CaSe: Value\r\ncontent-TYPE: text/plain\r\nACCEPT: */*\r\n\r\n",
        b"GET /rep HTTP/1.1\r\nhost: a\r\nx-rep: 1\r\nX-REP: 2\r\nX-Rep: 3\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
        b"GET /vals HTTP/1.1\r\nHost: a\r\nAccept: text/html, application/json;q=0.9 , */*;q=0.1\r\nX-Quoted: \"a, b\"; c=\"d\"\r\nX-Empty: \r\nX-Spaces: a   b\r\n\r\n",
        b"GET /latin HTTP/1.1\r\nHost: a\r\nX-Latin: caf\xe9\r\n\r\n",
        b"GET /a/%2F..%2fb/./c//d?x=1&y=%20&z=a+b&&=; HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET //double//slashes// HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /p%2Fq/../r?b=%41%zz&c=&d+e=%2B HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /%E2%82%AC/caf%C3%A9?q=%00%ff HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /matrix;p=1;q=2/x? HTTP/1.1\r\nHost: a\r\n\r\n",
        b"M-SEARCH_X.1 /x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
        b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n",
        b"GET http://a.example:8080/via/proxy?q=1 HTTP/1.1\r\nHost: a.example:8080\r\n\r\n",
        b"GET /old HTTP/1.0\r\n\r\n",
        b"PUT /bin HTTP/1.1\r\nhost: a\r\ncontent-type: application/octet-stream\r\ncontent-length: 4\r\n\r\n",
    ];
    for &wire in cases {
        let (head, len) = request(wire);
        assert_eq!(len, wire.len(), "{}", lossy(wire));
        assert_eq!(lossy(&write_request(&head)), lossy(wire));
    }
}

#[test]
fn responses_round_trip_byte_for_byte() {
    let cases: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Resp-MiXeD: Case\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\nX-Empty: \r\n\r\n",
        b"HTTP/1.1 200 Fine Thanks\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 ok\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\n\r\n",
        b"HTTP/1.0 302 Found\r\nLocation: /x\r\n\r\n",
        b"HTTP/1.1 599 Custom Thing\r\n\r\n",
        b"HTTP/1.1 200 caf\xe9\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 204 \r\n\r\n",
    ];
    for &wire in cases {
        let (head, len) = response(wire);
        assert_eq!(len, wire.len(), "{}", lossy(wire));
        assert_eq!(lossy(&write_response(&head)), lossy(wire));
    }
}

#[test]
fn reason_is_kept_only_when_it_is_not_the_canonical_one() {
    assert_eq!(response(b"HTTP/1.1 200 OK\r\n\r\n").0.reason, None);
    assert_eq!(
        response(b"HTTP/1.1 200 ok\r\n\r\n").0.reason.as_deref(),
        Some(&b"ok"[..])
    );
    assert_eq!(
        response(b"HTTP/1.1 200 caf\xe9\r\n\r\n")
            .0
            .reason
            .as_deref(),
        Some(&b"caf\xe9"[..]),
        "obs-text kept (httparse alone would give an empty reason)"
    );
    // No reason on the wire: the client is not shown one either.
    let (bare, _) = response(b"HTTP/1.1 200\r\n\r\n");
    assert_eq!(bare.reason.as_deref(), Some(&b""[..]));
    assert_eq!(lossy(&write_response(&bare)), "HTTP/1.1 200 \r\n\r\n");
    let (lf, _) = response(b"\r\nHTTP/1.1 201\n\n");
    assert_eq!(lf.status, StatusCode::CREATED);
    assert_eq!(lf.reason.as_deref(), Some(&b""[..]));
}

#[test]
fn parsed_fields_are_http_types_over_the_received_bytes() {
    let wire = b"POST /p?q=1 HTTP/1.1\r\nHost: a:80\r\nX-Rep: 1\r\nx-rep: 2\r\nContent-Length: 3\r\n\r\nabc";
    let (head, len) = request(wire);
    assert_eq!(len, wire.len() - 3, "the body is not part of the head");
    assert_eq!(head.method, Method::POST);
    assert_eq!(head.uri.path(), "/p");
    assert_eq!(head.uri.query(), Some("q=1"));
    assert_eq!(head.version, Version::HTTP_11);
    assert_eq!(head.headers["host"], "a:80");
    let reps: Vec<_> = head.headers.get_all("x-rep").iter().collect();
    assert_eq!(reps, ["1", "2"]);
    let name = HeaderName::from_static("x-rep");
    let spelled: Vec<_> = head.case.spellings(&name).collect();
    assert_eq!(spelled, [&b"X-Rep"[..], &b"x-rep"[..]]);
    assert_eq!(head.case.len(), 4);
    assert!(!head.case.is_empty());
}

#[test]
fn leading_empty_lines_and_bare_lf_are_accepted_and_written_as_crlf() {
    let wire = b"\r\n\nGET /lf HTTP/1.1\nHost: a\nX-Bare: lf\n\n";
    let (head, len) = request(wire);
    assert_eq!(
        len,
        wire.len(),
        "the empty lines before the request line are consumed"
    );
    assert_eq!(
        lossy(&write_request(&head)),
        "GET /lf HTTP/1.1\r\nHost: a\r\nX-Bare: lf\r\n\r\n"
    );
}

#[test]
fn an_incomplete_head_asks_for_more() {
    let wire = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    for end in 0..wire.len() {
        assert!(
            matches!(parse_request(&wire[..end], &LIMITS), Ok(None)),
            "prefix {}",
            lossy(&wire[..end])
        );
    }
}

/// The strictness table: every malformed request head and the error a driver answers.
#[test]
fn malformed_requests_are_refused_with_the_right_error() {
    use HeadError::*;
    let cases: &[(&[u8], HeadError)] = &[
        // the field lines of tests/it/limits.rs `malformed_request_head_gets_400`
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nNo colon here\r\n\r\n",
            HeaderName,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: v\r\n\r\n",
            HeaderName,
        ),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", HeaderName),
        (b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", HeaderName),
        (b"GET / HTTP/1.1\r\n: a\r\n\r\n", HeaderName),
        (b"GET / HTTP/1.1\r\nX(y): a\r\n\r\n", HeaderName),
        // obs-fold (RFC 9112 §5.2), also before the first field
        (b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", HeaderName),
        (b"GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", HeaderName),
        (b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", HeaderName),
        // forbidden value bytes
        (b"GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", HeaderValue),
        (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", HeaderValue),
        (b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n", HeaderValue),
        (b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", HeaderValue),
        // line endings
        (b"GET / HTTP/1.1\rHost: a\r\n\r\n", NewLine),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\rx", NewLine),
        // versions
        (b"GET / HTTP/1.2\r\n\r\n", Version),
        (b"GET / HTTP/2.0\r\n\r\n", Version),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Version),
        (b"GET / http/1.1\r\n\r\n", Version),
        (b"GET / HTTP/1.1 \r\n\r\n", NewLine),
        (b"GET /\r\n\r\n", Target),
        // methods
        (b"G(T / HTTP/1.1\r\n\r\n", Method),
        (b" GET / HTTP/1.1\r\n\r\n", Method),
        (b"GET\t/ HTTP/1.1\r\n\r\n", Method),
        // targets
        (b"GET  / HTTP/1.1\r\n\r\n", Target),
        (b"GET /a b HTTP/1.1\r\n\r\n", Version),
        (b"GET /a\x7f HTTP/1.1\r\n\r\n", Target),
        (b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", Target),
        (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", Target),
        (b"OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n", Target),
        (b"GET a.example:80 HTTP/1.1\r\nHost: a\r\n\r\n", Target),
        (b"GET a.example HTTP/1.1\r\nHost: a\r\n\r\n", Target),
        (b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", Target),
        (b"CONNECT a.example HTTP/1.1\r\nHost: a\r\n\r\n", Target),
        (
            b"CONNECT http://a.example:80/ HTTP/1.1\r\nHost: a\r\n\r\n",
            Target,
        ),
        (
            b"CONNECT u@a.example:80 HTTP/1.1\r\nHost: a\r\n\r\n",
            Target,
        ),
        (b"CONNECT * HTTP/1.1\r\nHost: a\r\n\r\n", Target),
        (b"GET http://a b HTTP/1.1\r\n\r\n", Version),
        (b"GET http:// HTTP/1.1\r\n\r\n", Target),
    ];
    let mut wrong = Vec::new();
    for (wire, want) in cases {
        match parse_request(wire, &LIMITS) {
            Err(got) if got == *want => {}
            other => wrong.push(format!("{:?}: want {want:?}, got {other:?}", lossy(wire))),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn malformed_responses_are_refused() {
    use HeadError::*;
    assert_eq!(response_error(b"HTTP/1.1 20 OK\r\n\r\n"), Status);
    assert_eq!(response_error(b"HTTP/1.1 2000 OK\r\n\r\n"), Status);
    assert_eq!(response_error(b"HTTP/1.1 099 Low\r\n\r\n"), Status);
    assert_eq!(response_error(b"HTTP/1.1 200 O\x01K\r\n\r\n"), Status);
    assert_eq!(response_error(b"HTTP/2 200 OK\r\n\r\n"), Version);
    assert_eq!(
        response_error(b"HTTP/1.1 200 OK\r\nX : y\r\n\r\n"),
        HeaderName
    );
    assert_eq!(
        response_error(b"HTTP/1.1 200 OK\r\nX: y\r\n folded\r\n\r\n"),
        HeaderName
    );
    assert_eq!(
        response_error(b"HTTP/1.1 200 OK\r\nX: \0\r\n\r\n"),
        HeaderValue
    );
}

#[test]
fn field_count_limit_is_exact() {
    let limits = HeadLimits {
        max_head_bytes: 65536,
        max_headers: 2,
    };
    let two = b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n";
    assert!(matches!(parse_request(two, &limits), Ok(Some(_))));
    let three = b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nY: 2\r\n\r\n";
    assert_eq!(request_error(three, &limits), HeadError::TooLarge);
    // Known as soon as the third field is read, before the head is complete.
    assert_eq!(
        request_error(b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nY: 2\r\n", &limits),
        HeadError::TooLarge
    );
    let none = HeadLimits {
        max_head_bytes: 65536,
        max_headers: 0,
    };
    assert!(matches!(
        parse_request(b"GET / HTTP/1.0\r\n\r\n", &none),
        Ok(Some(_))
    ));
}

#[test]
fn more_fields_than_the_stack_slots_still_parse() {
    let limits = HeadLimits {
        max_head_bytes: 1 << 20,
        max_headers: 300,
    };
    let mut wire = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..250 {
        wire.extend_from_slice(format!("X-Many-{i}: v{i}\r\n").as_bytes());
    }
    wire.extend_from_slice(b"\r\n");
    let Ok(Some((head, len))) = parse_request(&wire, &limits) else {
        panic!("250 fields under a 300 limit must parse");
    };
    assert_eq!(len, wire.len());
    assert_eq!(head.headers.len(), 251);
    assert_eq!(write_request(&head), wire);
}

#[test]
fn head_size_limit_is_exact() {
    let wire = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let at = |max_head_bytes| HeadLimits {
        max_head_bytes,
        max_headers: 100,
    };
    assert!(matches!(parse_request(wire, &at(wire.len())), Ok(Some(_))));
    assert_eq!(
        request_error(wire, &at(wire.len() - 1)),
        HeadError::TooLarge,
        "a complete head over the limit"
    );
    let partial = &wire[..wire.len() - 2];
    assert!(matches!(
        parse_request(partial, &at(partial.len())),
        Ok(None)
    ));
    assert_eq!(
        request_error(partial, &at(partial.len() - 1)),
        HeadError::TooLarge,
        "an incomplete head already over the limit"
    );
    // Body bytes after a complete head do not count against it.
    let mut with_body = wire.to_vec();
    with_body.extend_from_slice(&[b'x'; 100]);
    assert!(matches!(
        parse_request(&with_body, &at(wire.len())),
        Ok(Some(_))
    ));
}

#[test]
fn an_overlong_target_is_414() {
    let limits = HeadLimits {
        max_head_bytes: 1 << 20,
        max_headers: 100,
    };
    let target = format!("/{}", "a".repeat(MAX_TARGET_BYTES));
    let wire = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
    let e = request_error(wire.as_bytes(), &limits);
    assert_eq!(e, HeadError::UriTooLong);
    assert_eq!(e.status(), StatusCode::URI_TOO_LONG);
    let fits = format!(
        "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
        "a".repeat(MAX_TARGET_BYTES - 1)
    );
    assert!(matches!(
        parse_request(fits.as_bytes(), &limits),
        Ok(Some(_))
    ));
}

#[test]
fn errors_map_to_the_statuses_hyper_answered() {
    assert_eq!(
        HeadError::TooLarge.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    for e in [
        HeadError::Method,
        HeadError::Target,
        HeadError::Version,
        HeadError::HeaderName,
        HeadError::HeaderValue,
        HeadError::NewLine,
        HeadError::Status,
    ] {
        assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e:?}");
    }
}

#[test]
fn the_writer_spells_added_and_extra_fields_in_lower_case() {
    let (mut head, _) =
        request(b"GET / HTTP/1.1\r\nHost: a\r\nX-Hop: 1\r\nX-Rep: 1\r\nTraceParent: old\r\n\r\n");
    head.headers.remove("x-hop");
    head.headers
        .insert("traceparent", HeaderValue::from_static("new"));
    head.headers.append("x-rep", HeaderValue::from_static("2"));
    head.headers
        .append("x-added", HeaderValue::from_static("yes"));
    let written = lossy(&write_request(&head));
    // `remove` moves the last entry into the hole: the order of different names may change
    // (RFC 9110 §5.3 makes it insignificant); each name's values keep theirs.
    let mut lines: Vec<_> = written.split("\r\n").collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "",
            "",
            "GET / HTTP/1.1",
            "Host: a",
            "TraceParent: new",
            "X-Rep: 1",
            "x-added: yes",
            "x-rep: 2"
        ]
    );
    assert!(written.contains("X-Rep: 1\r\nx-rep: 2\r\n"), "{written}");
}

#[test]
fn without_a_case_map_names_are_written_lower_case() {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("a"));
    headers.append("x-rep", HeaderValue::from_static("1"));
    headers.append("x-rep", HeaderValue::from_static("2"));
    let mut out = Vec::new();
    let uri = http::Uri::from_static("/p?q");
    write_request_head(
        &mut out,
        &Method::GET,
        &uri,
        Version::HTTP_11,
        &headers,
        None,
    );
    assert_eq!(
        lossy(&out),
        "GET /p?q HTTP/1.1\r\nhost: a\r\nx-rep: 1\r\nx-rep: 2\r\n\r\n"
    );
    out.clear();
    write_response_head(
        &mut out,
        Version::HTTP_10,
        StatusCode::BAD_REQUEST,
        None,
        &HeaderMap::new(),
        None,
    );
    assert_eq!(lossy(&out), "HTTP/1.0 400 Bad Request\r\n\r\n");
}

#[test]
fn a_reason_that_could_split_the_head_is_replaced_by_the_canonical_one() {
    let mut out = Vec::new();
    write_response_head(
        &mut out,
        Version::HTTP_11,
        StatusCode::OK,
        Some(b"OK\r\nInjected: yes"),
        &HeaderMap::new(),
        None,
    );
    assert_eq!(lossy(&out), "HTTP/1.1 200 OK\r\n\r\n");
}

#[test]
fn target_forms_are_written_as_received() {
    for (wire, target) in [
        (&b"OPTIONS * HTTP/1.1\r\n\r\n"[..], "*"),
        (b"CONNECT h:1 HTTP/1.1\r\n\r\n", "h:1"),
        (b"GET http://h:1 HTTP/1.1\r\n\r\n", "http://h:1/"),
        (b"GET http://h:1/a?b HTTP/1.1\r\n\r\n", "http://h:1/a?b"),
        (b"GET /? HTTP/1.1\r\n\r\n", "/?"),
    ] {
        let (head, _) = request(wire);
        let written = lossy(&write_request(&head));
        let line = written.split("\r\n").next().unwrap_or_default();
        let got = line.split(' ').nth(1).unwrap_or_default();
        assert_eq!(got, target, "{}", lossy(wire));
    }
}
