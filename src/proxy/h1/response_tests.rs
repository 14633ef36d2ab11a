//! Unit tests of [`super::response`]: the framing decision per request and response, and the
//! bytes written for bodies whose length is wrong.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body_util::Full;

use super::response::{Answering, Outgoing, ResponseWriter, plan};
use super::server_test_support::Pieces;

fn answering(version: Version) -> Answering {
    Answering {
        head: false,
        connect: false,
        version,
        client_keep_alive: true,
    }
}

fn planned(
    a: &Answering,
    status: u16,
    fields: &[(&str, &str)],
    exact: Option<u64>,
) -> (Outgoing, bool, HeaderMap) {
    let mut headers = HeaderMap::new();
    for (n, v) in fields {
        headers.append(
            HeaderName::from_bytes(n.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    let mut keep = true;
    let status = StatusCode::from_u16(status).expect("status");
    let out = plan(a, status, &mut headers, exact, &mut keep);
    (out, keep, headers)
}

#[test]
fn bodiless_responses_keep_their_fields_and_have_no_body() {
    let head = Answering {
        head: true,
        ..answering(Version::HTTP_11)
    };
    let (out, keep, h) = planned(&head, 200, &[("content-length", "12")], Some(0));
    assert_eq!((out, keep), (Outgoing::None, true));
    assert_eq!(h["content-length"], "12", "HEAD keeps the GET's length");
    for status in [101, 204, 304] {
        assert_eq!(
            planned(&answering(Version::HTTP_11), status, &[], None).0,
            Outgoing::None
        );
    }
    let connect = Answering {
        connect: true,
        ..answering(Version::HTTP_11)
    };
    assert_eq!(planned(&connect, 200, &[], None).0, Outgoing::None);
    assert_eq!(planned(&connect, 407, &[], Some(0)).0, Outgoing::Length(0));
}

#[test]
fn lengths_are_kept_added_or_dropped_when_wrong() {
    let a = answering(Version::HTTP_11);
    assert_eq!(
        planned(&a, 200, &[("content-length", "5")], None).0,
        Outgoing::Length(5)
    );
    let (out, _, h) = planned(&a, 200, &[], Some(3));
    assert_eq!(
        (out, h["content-length"].to_str().ok()),
        (Outgoing::Length(3), Some("3"))
    );
    let (out, _, h) = planned(
        &a,
        200,
        &[("content-length", "5"), ("content-length", "6")],
        None,
    );
    assert_eq!(out, Outgoing::Chunked);
    assert!(!h.contains_key("content-length"));
    assert_eq!(h["transfer-encoding"], "chunked");
}

#[test]
fn unknown_lengths_are_chunked_to_1_1_and_close_delimited_to_1_0() {
    let (out, keep, h) = planned(&answering(Version::HTTP_11), 200, &[], None);
    assert_eq!((out, keep), (Outgoing::Chunked, true));
    assert_eq!(h["transfer-encoding"], "chunked");
    let (out, keep, h) = planned(&answering(Version::HTTP_10), 200, &[], None);
    assert_eq!((out, keep), (Outgoing::Close, false));
    assert!(h.is_empty(), "no framing field: {h:?}");
    let (out, keep, h) = planned(
        &answering(Version::HTTP_10),
        200,
        &[("transfer-encoding", "chunked"), ("content-length", "4")],
        None,
    );
    assert_eq!((out, keep), (Outgoing::Close, false));
    assert!(h.is_empty(), "1.0 gets neither field: {h:?}");
    let (out, keep, _) = planned(
        &answering(Version::HTTP_11),
        200,
        &[("transfer-encoding", "gzip")],
        None,
    );
    assert_eq!((out, keep), (Outgoing::Close, false));
}

async fn written<B>(response: Response<B>, keep: bool) -> (Vec<u8>, Result<bool, String>)
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<super::error::BoxError>,
{
    let mut out = Vec::new();
    let result = ResponseWriter::new(&mut out, answering(Version::HTTP_11))
        .write(response, keep)
        .await
        .map_err(|e| e.to_string());
    (out, result)
}

#[tokio::test]
async fn a_body_off_its_content_length_ends_the_connection() {
    let mut short = Response::new(Full::new(Bytes::from_static(b"abc")));
    short
        .headers_mut()
        .insert("content-length", HeaderValue::from_static("5"));
    let (_, result) = written(short, true).await;
    assert!(result.is_err(), "short: {result:?}");
    let mut long = Response::new(Full::new(Bytes::from_static(b"abcdefg")));
    long.headers_mut()
        .insert("content-length", HeaderValue::from_static("5"));
    let (out, result) = written(long, true).await;
    assert!(result.is_err(), "long: {result:?}");
    assert!(
        out.ends_with(b"\r\n\r\nabcde"),
        "never more than the length"
    );
}

#[tokio::test]
async fn chunked_output_and_a_response_that_says_close() {
    let pieces = Pieces([&b"ab"[..], b"", b"cde"].map(Bytes::from_static).into());
    let (out, result) = written(Response::new(pieces), true).await;
    assert_eq!(result, Ok(true));
    assert!(
        out.ends_with(b"\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
    let mut close = Response::new(Full::<Bytes>::default());
    close
        .headers_mut()
        .insert("connection", HeaderValue::from_static("close"));
    let (out, result) = written(close, true).await;
    assert_eq!(result, Ok(false));
    let text = String::from_utf8_lossy(&out);
    assert_eq!(
        text.matches("connection").count(),
        1,
        "not added twice: {text}"
    );
}
