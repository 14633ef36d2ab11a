//! Property tests of the codec (run by `make test`, so the parser is fuzzed on every run):
//! hostile bytes never panic and never consume more than given; heads split anywhere parse as
//! whole; written heads parse back to themselves; chunked bodies survive any chunking and any
//! read splits.

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use proptest::collection::vec;
use proptest::prelude::*;

use super::chunked::{CHUNK_END, ChunkedDecoder, Decoded, encode_chunk_header, encode_last_chunk};
use super::head::{
    HeadLimits, RequestHead, ResponseHead, parse_request, parse_response, write_request_head,
    write_response_head,
};

const LIMITS: HeadLimits = HeadLimits {
    max_head_bytes: 65536,
    max_headers: 100,
};

fn written_request(head: &RequestHead) -> Vec<u8> {
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

fn written_response(head: &ResponseHead) -> Vec<u8> {
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

/// Small, varied limits: the limit paths are exercised, not only the happy ones.
fn limits() -> impl Strategy<Value = HeadLimits> {
    (0usize..700, 0usize..12).prop_map(|(max_head_bytes, max_headers)| HeadLimits {
        max_head_bytes,
        max_headers,
    })
}

/// Bytes that look like HTTP often enough to get past the start line: a plausible start
/// followed by a soup of separators, token bytes, CTLs and obs-text.
pub(super) fn http_ish(start: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let soup = prop_oneof![
        Just(b'\r'),
        Just(b'\n'),
        Just(b' '),
        Just(b'\t'),
        Just(b':'),
        Just(b','),
        Just(b'/'),
        Just(0u8),
        Just(0x7f),
        Just(0xe9),
        b'a'..=b'z',
        b'A'..=b'Z',
        b'0'..=b'9',
        any::<u8>(),
    ];
    (proptest::sample::select(start), vec(soup, 0..300)).prop_map(|(start, soup)| {
        let mut bytes = start.as_bytes().to_vec();
        bytes.extend(soup);
        bytes
    })
}

const REQUEST_STARTS: &[&str] = &[
    "",
    "GET / HTTP/1.1\r\n",
    "POST /p?q HTTP/1.0\n",
    "CONNECT a:1 HTTP/1.1\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: a\r\n",
    "GET http://a/ HTTP/1.1\r\nX: ",
];

const RESPONSE_STARTS: &[&str] = &[
    "",
    "HTTP/1.1 200 OK\r\n",
    "HTTP/1.0 404 \n",
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n",
];

/// A field name (token), in mixed case.
fn field_name() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,15}"
}

/// A field value as httparse leaves it (no leading or trailing whitespace), obs-text included.
fn field_value() -> impl Strategy<Value = Vec<u8>> {
    let inner = prop_oneof![b' '..=b'~', Just(b'\t'), 0x80u8..=0xff];
    let edge = prop_oneof![b'!'..=b'~', 0x80u8..=0xff];
    proptest::option::of((edge.clone(), vec(inner, 0..20), edge)).prop_map(|v| match v {
        None => Vec::new(),
        Some((first, middle, last)) => {
            let mut value = vec![first];
            value.extend(middle);
            value.push(last);
            value
        }
    })
}

/// A valid request head (CRLF or bare-LF lines) and body bytes that follow it.
fn request_wire() -> impl Strategy<Value = (Vec<u8>, usize)> {
    let method = prop_oneof![
        Just("GET".to_owned()),
        Just("POST".to_owned()),
        "[A-Z][A-Z_.-]{0,8}"
    ];
    let target = "/[a-zA-Z0-9._~!$&'()*+,;=:@%/-]{0,20}(\\?[a-zA-Z0-9=&+._~/?%-]{0,20})?";
    (
        method,
        target,
        any::<bool>(),
        vec((field_name(), field_value()), 0..12),
        any::<bool>(),
        vec(any::<u8>(), 0..16),
    )
        .prop_map(|(method, target, v10, fields, bare_lf, body)| {
            let eol: &[u8] = if bare_lf { b"\n" } else { b"\r\n" };
            let version = if v10 { "HTTP/1.0" } else { "HTTP/1.1" };
            let mut wire = format!("{method} {target} {version}").into_bytes();
            wire.extend_from_slice(eol);
            for (name, value) in fields {
                wire.extend_from_slice(name.as_bytes());
                wire.extend_from_slice(b": ");
                wire.extend_from_slice(&value);
                wire.extend_from_slice(eol);
            }
            wire.extend_from_slice(eol);
            let head_len = wire.len();
            wire.extend(body);
            (wire, head_len)
        })
}

/// A valid response head and its length.
fn response_wire() -> impl Strategy<Value = (Vec<u8>, usize)> {
    (
        100u16..1000,
        "[ -~]{0,20}",
        vec((field_name(), field_value()), 0..12),
        vec(any::<u8>(), 0..16),
    )
        .prop_map(|(code, reason, fields, body)| {
            let mut wire = format!("HTTP/1.1 {code} {reason}\r\n").into_bytes();
            for (name, value) in fields {
                wire.extend_from_slice(name.as_bytes());
                wire.extend_from_slice(b": ");
                wire.extend_from_slice(&value);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"\r\n");
            let head_len = wire.len();
            wire.extend(body);
            (wire, head_len)
        })
}

/// Per lower-cased name, the (spelling, value) pairs in order.
type FieldView = std::collections::BTreeMap<Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>>;

/// The [`FieldView`] of a field section: what must survive a round trip (the relative order
/// of different names does not, RFC 9110 §5.3).
fn field_view(head: &[u8]) -> FieldView {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut view = FieldView::new();
    let Ok((_, fields)) = httparse::parse_headers(head, &mut slots).map(httparse::Status::unwrap)
    else {
        return view;
    };
    for f in fields {
        view.entry(f.name.to_ascii_lowercase().into_bytes())
            .or_default()
            .push((f.name.as_bytes().to_vec(), f.value.to_vec()));
    }
    view
}

/// The field section of a head (after the start line).
fn fields_of(head: &[u8]) -> &[u8] {
    let line_end = head.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
    &head[line_end..]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_a_request_parse(bytes in vec(any::<u8>(), 0..600), limits in limits()) {
        if let Ok(Some((_, n))) = parse_request(&bytes, &limits) {
            prop_assert!(n <= bytes.len());
            prop_assert!(n <= limits.max_head_bytes);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_response_parse(bytes in vec(any::<u8>(), 0..600), limits in limits()) {
        if let Ok(Some((_, n))) = parse_response(&bytes, &limits) {
            prop_assert!(n <= bytes.len());
            prop_assert!(n <= limits.max_head_bytes);
        }
    }

    #[test]
    fn http_shaped_garbage_never_panics_and_what_parses_writes_back(bytes in http_ish(REQUEST_STARTS), limits in limits()) {
        match parse_request(&bytes, &limits) {
            Ok(Some((head, n))) => {
                prop_assert!(n <= bytes.len());
                // What parsed is a valid head: written, it parses to the same head.
                let written = written_request(&head);
                let again = parse_request(&written, &LIMITS);
                let Ok(Some((again, m))) = again else {
                    return Err(TestCaseError::fail(format!("{written:?} did not parse: {again:?}")));
                };
                prop_assert_eq!(m, written.len());
                prop_assert_eq!(written_request(&again), written);
            }
            Ok(None) => prop_assert!(bytes.len() <= limits.max_head_bytes),
            Err(_) => {}
        }
    }

    #[test]
    fn http_shaped_garbage_never_panics_a_response_parse(bytes in http_ish(RESPONSE_STARTS), limits in limits()) {
        match parse_response(&bytes, &limits) {
            Ok(Some((head, n))) => {
                prop_assert!(n <= bytes.len());
                let written = written_response(&head);
                let again = parse_response(&written, &LIMITS);
                let Ok(Some((again, _))) = again else {
                    return Err(TestCaseError::fail(format!("{written:?} did not parse: {again:?}")));
                };
                prop_assert_eq!(written_response(&again), written);
            }
            Ok(None) => prop_assert!(bytes.len() <= limits.max_head_bytes),
            Err(_) => {}
        }
    }

    #[test]
    fn a_request_head_split_anywhere_parses_as_whole((wire, head_len) in request_wire()) {
        let Ok(Some((whole, n))) = parse_request(&wire, &LIMITS) else {
            return Err(TestCaseError::fail(format!("{:?} did not parse", String::from_utf8_lossy(&wire))));
        };
        prop_assert_eq!(n, head_len);
        let want = written_request(&whole);
        for end in 0..=wire.len() {
            match parse_request(&wire[..end], &LIMITS) {
                Ok(None) => prop_assert!(end < head_len, "incomplete at {} of {}", end, head_len),
                Ok(Some((part, m))) => {
                    prop_assert!(end >= head_len);
                    prop_assert_eq!(m, n);
                    prop_assert_eq!(written_request(&part), want.clone());
                }
                Err(e) => return Err(TestCaseError::fail(format!("error {e:?} at {end}"))),
            }
        }
        // Case, per-name order and values survive the round trip; line endings become CRLF.
        prop_assert_eq!(field_view(fields_of(&want)), field_view(fields_of(&wire[..head_len])));
        prop_assert!(!want.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'));
    }

    #[test]
    fn a_response_head_split_anywhere_parses_as_whole((wire, head_len) in response_wire()) {
        let Ok(Some((whole, n))) = parse_response(&wire, &LIMITS) else {
            return Err(TestCaseError::fail(format!("{:?} did not parse", String::from_utf8_lossy(&wire))));
        };
        prop_assert_eq!(n, head_len);
        let want = written_response(&whole);
        for end in 0..=wire.len() {
            match parse_response(&wire[..end], &LIMITS) {
                Ok(None) => prop_assert!(end < head_len),
                Ok(Some((part, m))) => {
                    prop_assert_eq!(m, n);
                    prop_assert_eq!(written_response(&part), want.clone());
                }
                Err(e) => return Err(TestCaseError::fail(format!("error {e:?} at {end}"))),
            }
        }
        // The status line, reason included, comes back byte for byte.
        let line = |b: &[u8]| b[..b.iter().position(|c| *c == b'\n').unwrap_or(0)].to_vec();
        prop_assert_eq!(line(&want), line(&wire));
        prop_assert_eq!(field_view(fields_of(&want)), field_view(fields_of(&wire[..head_len])));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_chunked_decoder(
        bytes in vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b';'), Just(b'0'), b'0'..=b'9', b'a'..=b'f', any::<u8>()], 0..400),
        splits in vec(1usize..40, 1..20),
        max_head_bytes in 0usize..200,
        max_headers in 0usize..6,
    ) {
        let mut decoder = ChunkedDecoder::new(HeadLimits { max_head_bytes, max_headers });
        let mut buf = BytesMut::new();
        let (mut given, mut fed, mut out) = (0usize, 0usize, 0usize);
        let mut pieces = splits.iter().cycle();
        'feed: while fed < bytes.len() {
            let take = (*pieces.next().unwrap_or(&1)).min(bytes.len() - fed);
            buf.extend_from_slice(&bytes[fed..fed + take]);
            fed += take;
            given += take;
            loop {
                let before = buf.len();
                match decoder.decode(&mut buf) {
                    Ok(Decoded::Data(data)) => {
                        prop_assert!(!data.is_empty());
                        out += data.len();
                    }
                    Ok(Decoded::Trailers(_)) => {}
                    Ok(Decoded::End) | Err(_) => break 'feed,
                    // A size line already understood may have been consumed; never data.
                    Ok(Decoded::NeedMore) => break,
                }
                prop_assert!(buf.len() <= before);
            }
        }
        prop_assert!(out <= given);
        prop_assert!(given - buf.len() <= given);
    }

    #[test]
    fn a_chunked_body_survives_any_chunking_and_any_reads(
        data in vec(any::<u8>(), 0..3000),
        chunk_sizes in vec(1usize..700, 1..12),
        extensions in vec(proptest::option::of("[a-z]{1,5}(=[a-z0-9]{1,5})?"), 1..5),
        upper_hex in any::<bool>(),
        trailers in vec(("x-[a-z]{1,8}", "[!-~]([ -~]{0,10}[!-~])?"), 0..4),
        reads in vec(1usize..200, 1..16),
    ) {
        // Encode: the data cut at `chunk_sizes` (cyclically), some chunks with extensions.
        let mut wire = Vec::new();
        let mut at = 0;
        for (i, size) in chunk_sizes.iter().cycle().enumerate() {
            if at >= data.len() {
                break;
            }
            let end = (at + size).min(data.len());
            let mut header = Vec::new();
            encode_chunk_header((end - at) as u64, &mut header);
            if upper_hex {
                header.make_ascii_uppercase();
            }
            if let Some(Some(ext)) = extensions.get(i % extensions.len()) {
                header.truncate(header.len() - 2);
                header.extend_from_slice(format!(";{ext}\r\n").as_bytes());
            }
            wire.extend_from_slice(&header);
            wire.extend_from_slice(&data[at..end]);
            wire.extend_from_slice(CHUNK_END);
            at = end;
        }
        let mut sent = HeaderMap::new();
        for (name, value) in &trailers {
            let name = HeaderName::from_bytes(name.as_bytes()).expect("generated token");
            sent.append(name, HeaderValue::from_str(value).expect("generated value"));
        }
        encode_last_chunk(Some(&sent), &mut wire);
        wire.extend_from_slice(b"NEXT");
        // Decode in `reads`-sized pieces.
        let mut decoder = ChunkedDecoder::new(LIMITS);
        let mut buf = BytesMut::new();
        let (mut got, mut got_trailers) = (Vec::new(), HeaderMap::new());
        let mut fed = 0;
        let mut pieces = reads.iter().cycle();
        let mut ended = false;
        while !ended {
            let take = (*pieces.next().unwrap_or(&1)).min(wire.len() - fed);
            buf.extend_from_slice(&wire[fed..fed + take]);
            fed += take;
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Decoded::Data(bytes)) => got.extend_from_slice(&bytes),
                    Ok(Decoded::Trailers(fields)) => got_trailers = fields,
                    Ok(Decoded::End) => {
                        ended = true;
                        break;
                    }
                    Ok(Decoded::NeedMore) => {
                        prop_assert!(fed < wire.len(), "needs more after the whole body");
                        break;
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("{e:?} decoding {:?}", String::from_utf8_lossy(&wire)))),
                }
            }
        }
        prop_assert_eq!(got, data);
        prop_assert_eq!(got_trailers, sent);
        // Exactly the body was consumed: the next message's bytes are all still there.
        let mut rest = buf.to_vec();
        rest.extend_from_slice(&wire[fed..]);
        prop_assert_eq!(rest, b"NEXT".to_vec());
    }
}
