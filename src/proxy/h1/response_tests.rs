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
    let (writing, keep) =
        ResponseWriter::new(&mut out, answering(Version::HTTP_11)).start(response, keep);
    let result = writing.await.map(|()| keep).map_err(|e| e.to_string());
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

/// A body giving `frames`; each one marked `true` is preceded by a `Pending` (after waking
/// itself), as a body whose next bytes have not arrived yet.
struct Stuttering {
    frames: std::collections::VecDeque<(bool, Bytes)>,
    stalled: bool,
}

impl http_body::Body for Stuttering {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if self.frames.front().is_some_and(|f| f.0) && !self.stalled {
            self.stalled = true;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        self.stalled = false;
        let frame = self
            .frames
            .pop_front()
            .map(|(_, data)| Ok(http_body::Frame::data(data)));
        std::task::Poll::Ready(frame)
    }
}

/// A socket taking at most `max` bytes per write and saying `Pending` (after waking itself)
/// every other time.
struct Trickle {
    out: Vec<u8>,
    max: usize,
    stall: bool,
}

impl tokio::io::AsyncWrite for Trickle {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.stall = !self.stall;
        if self.stall {
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        let n = buf.len().min(self.max);
        self.out.extend_from_slice(&buf[..n]);
        std::task::Poll::Ready(Ok(n))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

proptest::proptest! {
    /// Whatever the frame sizes (around the copy threshold), the body's stalls and the
    /// socket's short and refused writes, the bytes on the wire are the head, then every
    /// frame in order, framed as planned: nothing lost, repeated or reordered.
    #[test]
    fn any_frames_through_any_socket_arrive_whole_and_in_order(
        frames in proptest::collection::vec(
            (proptest::bool::ANY, proptest::prop_oneof![0usize..64, 8_000usize..8_400, 16_000usize..20_000]),
            0..12,
        ),
        max in 1usize..5_000,
        chunked in proptest::bool::ANY,
    ) {
        let frames: Vec<(bool, Bytes)> = frames
            .iter()
            .enumerate()
            .map(|(i, &(stall, len))| (stall, Bytes::from(vec![b'a' + (i % 26) as u8; len])))
            .collect();
        let total: usize = frames.iter().map(|f| f.1.len()).sum();
        let mut expected = Vec::new();
        for (_, data) in &frames {
            if chunked && !data.is_empty() {
                expected.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                expected.extend_from_slice(data);
                expected.extend_from_slice(b"\r\n");
            } else if !chunked {
                expected.extend_from_slice(data);
            }
        }
        if chunked {
            expected.extend_from_slice(b"0\r\n\r\n");
        }
        let mut response = Response::new(Stuttering { frames: frames.into(), stalled: false });
        if !chunked {
            response.headers_mut().insert("content-length", HeaderValue::from(total));
        }
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let (out, keep) = runtime.block_on(async move {
            let mut socket = Trickle { out: Vec::new(), max, stall: false };
            let (writing, keep) = ResponseWriter::new(&mut socket, answering(Version::HTTP_11))
                .start(response, true);
            writing.await.expect("written");
            (socket.out, keep)
        });
        proptest::prop_assert!(keep);
        let head_end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
        proptest::prop_assert_eq!(&out[head_end..], &expected[..]);
    }
}
