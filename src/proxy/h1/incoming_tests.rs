//! Unit tests of [`super::incoming`]: each framing, and how the read side goes back to the
//! driver (complete or not, with what follows the body).

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use super::chunked::ChunkedDecoder;
use super::head::HeadLimits;
use super::incoming::{Delimited, Incoming, ReadSide, Returned};

const LIMITS: HeadLimits = HeadLimits {
    max_head_bytes: 1024,
    max_headers: 8,
};

/// A body over an in-memory stream whose first bytes are `buffered`; the far end, and where the
/// read side comes back.
fn body(
    buffered: &[u8],
    delimited: Delimited,
) -> (
    Incoming,
    tokio::io::DuplexStream,
    oneshot::Receiver<Returned>,
) {
    let (near, far) = tokio::io::duplex(1024);
    let (tx, rx) = oneshot::channel();
    let read = ReadSide::new(Box::new(near), BytesMut::from(buffered));
    (Incoming::new(read, delimited, tx, None), far, rx)
}

#[tokio::test]
async fn a_length_body_ends_at_its_length_and_returns_what_follows() {
    let (b, mut far, rx) = body(b"hel", Delimited::Length(5));
    assert_eq!(b.size_hint().exact(), Some(5));
    far.write_all(b"loGET /next").await.expect("write");
    let data = b.collect().await.expect("body").to_bytes();
    assert_eq!(&data[..], b"hello");
    let returned = rx.await.expect("returned");
    assert!(returned.complete);
    assert_eq!(&returned.read.buf[..], b"GET /next");
}

#[tokio::test]
async fn a_chunked_body_yields_trailers_then_returns_the_read_side() {
    let (b, _far, rx) = body(
        b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\nnext",
        Delimited::Chunked(ChunkedDecoder::new(LIMITS)),
    );
    let collected = b.collect().await.expect("body");
    assert_eq!(
        collected
            .trailers()
            .and_then(|t| t.get("x-t"))
            .map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert_eq!(&collected.to_bytes()[..], b"abc");
    let returned = rx.await.expect("returned");
    assert!(returned.complete);
    assert_eq!(&returned.read.buf[..], b"next");
}

#[tokio::test]
async fn a_close_delimited_body_runs_to_the_end_of_the_stream() {
    let (b, mut far, rx) = body(b"first ", Delimited::UntilClose);
    far.write_all(b"second").await.expect("write");
    drop(far);
    let data = b.collect().await.expect("body").to_bytes();
    assert_eq!(data, Bytes::from_static(b"first second"));
    assert!(!rx.await.expect("returned").complete, "nothing can follow");
}

#[tokio::test]
async fn a_body_cut_short_is_an_error_and_returns_incomplete() {
    let (b, far, rx) = body(b"ab", Delimited::Length(5));
    drop(far);
    assert!(b.collect().await.is_err());
    assert!(!rx.await.expect("returned").complete);
}

#[tokio::test]
async fn a_dropped_body_returns_complete_only_when_its_rest_was_buffered() {
    let (b, _far, rx) = body(b"hello", Delimited::Length(5));
    drop(b);
    assert!(
        rx.await.expect("returned").complete,
        "the rest was buffered"
    );
    let (b, _far, rx) = body(
        b"1\r\na\r\n0\r\n\r\nX",
        Delimited::Chunked(ChunkedDecoder::new(LIMITS)),
    );
    drop(b);
    let returned = rx.await.expect("returned");
    assert!(returned.complete);
    assert_eq!(&returned.read.buf[..], b"X");
    let (b, _far, rx) = body(b"hel", Delimited::Length(5));
    drop(b);
    assert!(
        !rx.await.expect("returned").complete,
        "two bytes never arrived"
    );
}
