//! Unit tests of [`super::framing`]: the body-length tables for requests and responses,
//! persistence, and the mapping to stitch's rejection reasons.

use http::header::{HeaderMap, HeaderValue};
use http::{Method, Version};

use super::framing::{
    BodyFraming, FramingError, connection_tokens, expects_continue, keep_alive, request_body,
    response_body,
};
use super::head::{HeadLimits, RequestHead, ResponseHead, parse_request, parse_response};
use crate::proxy::http::validate::Rejection;

const LIMITS: HeadLimits = HeadLimits {
    max_head_bytes: 65536,
    max_headers: 100,
};

/// A request head with `fields` (one `Name: value` per line) on `version`.
fn request(version: &str, fields: &str) -> RequestHead {
    let wire = format!("POST / {version}\r\nHost: a\r\n{fields}\r\n");
    match parse_request(wire.as_bytes(), &LIMITS) {
        Ok(Some((head, _))) => head,
        other => panic!("{wire:?}: {other:?}"),
    }
}

/// A response head: status line then `fields`.
fn response(status_line: &str, fields: &str) -> ResponseHead {
    let wire = format!("{status_line}\r\n{fields}\r\n");
    match parse_response(wire.as_bytes(), &LIMITS) {
        Ok(Some((head, _))) => head,
        other => panic!("{wire:?}: {other:?}"),
    }
}

#[test]
fn request_body_length_table() {
    use BodyFraming::*;
    use FramingError::*;
    let u64_max = format!("Content-Length: {}\r\n", u64::MAX);
    let over = "Content-Length: 18446744073709551616\r\n";
    let cases: &[(&str, &str, Result<BodyFraming, FramingError>)] = &[
        ("HTTP/1.1", "", Ok(Empty)),
        ("HTTP/1.1", "Content-Length: 5\r\n", Ok(Length(5))),
        ("HTTP/1.1", "Content-Length: 0\r\n", Ok(Empty)),
        ("HTTP/1.1", "Content-Length: 007\r\n", Ok(Length(7))),
        ("HTTP/1.1", &u64_max, Ok(Length(u64::MAX))),
        (
            "HTTP/1.1",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            Ok(Length(5)),
        ),
        ("HTTP/1.1", "Content-Length: 5, 5\r\n", Ok(Length(5))),
        (
            "HTTP/1.1",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            Err(ConflictingContentLength),
        ),
        (
            "HTTP/1.1",
            "Content-Length: 5, 6\r\n",
            Err(ConflictingContentLength),
        ),
        ("HTTP/1.1", over, Err(InvalidContentLength)),
        (
            "HTTP/1.1",
            "Content-Length: +5\r\n",
            Err(InvalidContentLength),
        ),
        (
            "HTTP/1.1",
            "Content-Length: -1\r\n",
            Err(InvalidContentLength),
        ),
        (
            "HTTP/1.1",
            "Content-Length: 0x10\r\n",
            Err(InvalidContentLength),
        ),
        (
            "HTTP/1.1",
            "Content-Length: 5 5\r\n",
            Err(InvalidContentLength),
        ),
        (
            "HTTP/1.1",
            "Content-Length: 5,\r\n",
            Err(InvalidContentLength),
        ),
        ("HTTP/1.1", "Content-Length:\r\n", Err(InvalidContentLength)),
        (
            "HTTP/1.1",
            "Content-Length: \u{663}\r\n",
            Err(InvalidContentLength),
        ),
        ("HTTP/1.1", "Transfer-Encoding: chunked\r\n", Ok(Chunked)),
        ("HTTP/1.1", "Transfer-Encoding: Chunked\r\n", Ok(Chunked)),
        (
            "HTTP/1.1",
            "Transfer-Encoding: gzip, chunked\r\n",
            Ok(Chunked),
        ),
        (
            "HTTP/1.1",
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            Ok(Chunked),
        ),
        ("HTTP/1.1", "Transfer-Encoding: chunked ,\r\n", Ok(Chunked)),
        (
            "HTTP/1.1",
            "Transfer-Encoding: gzip\r\n",
            Err(ChunkedNotFinal),
        ),
        (
            "HTTP/1.1",
            "Transfer-Encoding: chunked, gzip\r\n",
            Err(ChunkedNotFinal),
        ),
        (
            "HTTP/1.1",
            "Transfer-Encoding: chunked;x=1\r\n",
            Err(ChunkedNotFinal),
        ),
        ("HTTP/1.1", "Transfer-Encoding: \r\n", Err(ChunkedNotFinal)),
        (
            "HTTP/1.1",
            "Transfer-Encoding: chunked, chunked\r\n",
            Err(ChunkedTwice),
        ),
        (
            "HTTP/1.1",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            Err(ChunkedTwice),
        ),
        (
            "HTTP/1.1",
            "Transfer-Encoding: chunked, gzip, chunked\r\n",
            Err(ChunkedTwice),
        ),
        (
            "HTTP/1.1",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            Err(TransferEncodingWithContentLength),
        ),
        (
            "HTTP/1.1",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            Err(TransferEncodingWithContentLength),
        ),
        (
            "HTTP/1.0",
            "Transfer-Encoding: chunked\r\n",
            Err(TransferEncodingInHttp10),
        ),
        ("HTTP/1.0", "Content-Length: 3\r\n", Ok(Length(3))),
    ];
    let mut wrong = Vec::new();
    for (version, fields, want) in cases {
        let head = request(version, fields);
        let got = request_body(&head);
        if got != *want {
            wrong.push(format!("{version} {fields:?}: want {want:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn response_body_length_table() {
    use BodyFraming::*;
    let get = Method::GET;
    let cases: &[(&Method, &str, &str, Result<BodyFraming, FramingError>)] = &[
        (
            &get,
            "HTTP/1.1 200 OK",
            "Content-Length: 5\r\n",
            Ok(Length(5)),
        ),
        (&get, "HTTP/1.1 200 OK", "Content-Length: 0\r\n", Ok(Empty)),
        (&get, "HTTP/1.1 200 OK", "", Ok(CloseDelimited)),
        (&get, "HTTP/1.0 200 OK", "", Ok(CloseDelimited)),
        (
            &get,
            "HTTP/1.1 200 OK",
            "Transfer-Encoding: chunked\r\n",
            Ok(Chunked),
        ),
        // TE overrides CL in a response (RFC 9112 §6.3 item 3)
        (
            &get,
            "HTTP/1.1 200 OK",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            Ok(Chunked),
        ),
        (
            &get,
            "HTTP/1.1 200 OK",
            "Transfer-Encoding: gzip\r\n",
            Ok(CloseDelimited),
        ),
        (
            &get,
            "HTTP/1.1 200 OK",
            "Transfer-Encoding: chunked, gzip\r\n",
            Ok(CloseDelimited),
        ),
        (
            &get,
            "HTTP/1.1 200 OK",
            "Transfer-Encoding: chunked, chunked\r\n",
            Err(FramingError::ChunkedTwice),
        ),
        (
            &get,
            "HTTP/1.0 200 OK",
            "Transfer-Encoding: chunked\r\n",
            Err(FramingError::TransferEncodingInHttp10),
        ),
        (
            &get,
            "HTTP/1.1 200 OK",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            Err(FramingError::ConflictingContentLength),
        ),
        (
            &get,
            "HTTP/1.1 200 OK",
            "Content-Length: 5, 5\r\n",
            Ok(Length(5)),
        ),
        (
            &get,
            "HTTP/1.1 200 OK",
            "Content-Length: x\r\n",
            Err(FramingError::InvalidContentLength),
        ),
        // no body, whatever the fields say
        (
            &Method::HEAD,
            "HTTP/1.1 200 OK",
            "Content-Length: 5\r\n",
            Ok(Empty),
        ),
        (
            &Method::HEAD,
            "HTTP/1.1 200 OK",
            "Transfer-Encoding: chunked\r\n",
            Ok(Empty),
        ),
        (&get, "HTTP/1.1 100 Continue", "", Ok(Empty)),
        (
            &get,
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket\r\n",
            Ok(Empty),
        ),
        (
            &get,
            "HTTP/1.1 103 Early Hints",
            "Link: </a>\r\n",
            Ok(Empty),
        ),
        (
            &get,
            "HTTP/1.1 204 No Content",
            "Content-Length: 5\r\n",
            Ok(Empty),
        ),
        (
            &get,
            "HTTP/1.1 304 Not Modified",
            "Content-Length: 5\r\n",
            Ok(Empty),
        ),
        (
            &Method::CONNECT,
            "HTTP/1.1 200 Connection Established",
            "",
            Ok(Empty),
        ),
        (
            &Method::CONNECT,
            "HTTP/1.1 407 Proxy Authentication Required",
            "Content-Length: 5\r\n",
            Ok(Length(5)),
        ),
    ];
    let mut wrong = Vec::new();
    for (method, line, fields, want) in cases {
        let head = response(line, fields);
        let got = response_body(method, &head);
        if got != *want {
            wrong.push(format!(
                "{method} {line} {fields:?}: want {want:?}, got {got:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn connection(values: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for v in values {
        headers.append("connection", HeaderValue::from_str(v).expect("valid value"));
    }
    headers
}

#[test]
fn keep_alive_table() {
    let v11 = Version::HTTP_11;
    let v10 = Version::HTTP_10;
    let cases: &[(Version, &[&str], bool)] = &[
        (v11, &[], true),
        (v11, &["keep-alive"], true),
        (v11, &["close"], false),
        (v11, &["Close"], false),
        (v11, &["x-hop, close"], false),
        (v11, &["close", "keep-alive"], false),
        (v11, &["keep-alive", "close"], false),
        (v11, &["closed"], true),
        (v10, &[], false),
        (v10, &["keep-alive"], true),
        (v10, &["Keep-Alive, x-hop"], true),
        (v10, &["keep-alive, close"], false),
        (Version::HTTP_2, &[], false),
    ];
    for (version, values, want) in cases {
        assert_eq!(
            keep_alive(*version, &connection(values)),
            *want,
            "{version:?} {values:?}"
        );
    }
}

#[test]
fn connection_tokens_are_trimmed_slices_in_order() {
    let headers = connection(&["keep-alive, X-Hop ,TE", ",, upgrade"]);
    let tokens: Vec<_> = connection_tokens(&headers).collect();
    assert_eq!(tokens, [&b"keep-alive"[..], b"X-Hop", b"TE", b"upgrade"]);
}

#[test]
fn expect_100_continue_is_recognised() {
    assert!(expects_continue(&request(
        "HTTP/1.1",
        "Expect: 100-continue\r\nContent-Length: 7\r\n"
    )));
    assert!(expects_continue(&request(
        "HTTP/1.1",
        "Expect: 100-Continue\r\n"
    )));
    assert!(!expects_continue(&request("HTTP/1.1", "")));
    assert!(!expects_continue(&request(
        "HTTP/1.1",
        "Expect: 200-ok\r\n"
    )));
    assert!(
        !expects_continue(&request("HTTP/1.0", "Expect: 100-continue\r\n")),
        "an HTTP/1.0 client cannot read an interim response"
    );
}

#[test]
fn framing_errors_map_to_stitchs_rejection_reasons() {
    use FramingError::*;
    assert_eq!(
        TransferEncodingWithContentLength.rejection(),
        Some(Rejection::AmbiguousFraming)
    );
    assert_eq!(
        ConflictingContentLength.rejection(),
        Some(Rejection::AmbiguousFraming)
    );
    assert_eq!(ChunkedTwice.rejection(), Some(Rejection::ChunkedTwice));
    for e in [
        TransferEncodingInHttp10,
        ChunkedNotFinal,
        InvalidContentLength,
    ] {
        assert_eq!(e.rejection(), None, "{e:?}");
    }
}
