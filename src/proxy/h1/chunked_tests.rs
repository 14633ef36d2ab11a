//! Unit tests of [`super::chunked`]: decoding, every framing error, incremental input, and
//! the encoder.

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderValue};

use super::chunked::{
    CHUNK_END, ChunkedDecoder, ChunkedError, Decoded, MAX_SIZE_LINE, encode_chunk_header,
    encode_last_chunk,
};
use super::head::HeadLimits;

const LIMITS: HeadLimits = HeadLimits {
    max_head_bytes: 1024,
    max_headers: 4,
};

/// Everything `input` decodes to in one buffer: data, trailers, what is left after the body;
/// or the first error.
fn decode_all(input: &[u8]) -> Result<(Vec<u8>, HeaderMap, Vec<u8>), ChunkedError> {
    let mut decoder = ChunkedDecoder::new(LIMITS);
    let mut buf = BytesMut::from(input);
    let (mut data, mut trailers) = (Vec::new(), HeaderMap::new());
    loop {
        match decoder.decode(&mut buf)? {
            Decoded::Data(bytes) => {
                assert!(!bytes.is_empty(), "no empty data");
                data.extend_from_slice(&bytes);
            }
            Decoded::Trailers(fields) => trailers = fields,
            Decoded::End => return Ok((data, trailers, buf.to_vec())),
            Decoded::NeedMore => panic!("{:?} is incomplete", String::from_utf8_lossy(input)),
        }
    }
}

fn decode_error(input: &[u8]) -> ChunkedError {
    let mut decoder = ChunkedDecoder::new(LIMITS);
    let mut buf = BytesMut::from(input);
    loop {
        match decoder.decode(&mut buf) {
            Err(e) => return e,
            Ok(Decoded::End | Decoded::NeedMore) => {
                panic!("{:?} was not refused", String::from_utf8_lossy(input))
            }
            Ok(_) => {}
        }
    }
}

#[test]
fn a_body_decodes_and_what_follows_is_left() {
    let (data, trailers, rest) =
        decode_all(b"5\r\nhello\r\n1;ext=1\r\n,\r\n6\r\n world\r\n0\r\n\r\nGET / HTTP/1.1")
            .expect("valid body");
    assert_eq!(data, b"hello, world");
    assert!(trailers.is_empty());
    assert_eq!(
        rest, b"GET / HTTP/1.1",
        "the next message stays in the buffer"
    );
}

#[test]
fn sizes_extensions_and_trailers() {
    let ok: &[(&[u8], &[u8])] = &[
        (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        (
            b"000000000000000a\r\n0123456789\r\n0\r\n\r\n",
            b"0123456789",
        ),
        (b"1 ;a=b\r\nx\r\n0\r\n\r\n", b"x"),
        (b"1;a=\"q; \\\" x\"\r\nx\r\n0\r\n\r\n", b"x"),
        (b"1;a\t;b=c\r\nx\r\n0;last=1\r\n\r\n", b"x"),
        (b"1;\xe9\r\nx\r\n00\r\n\r\n", b"x"),
        (b"0\r\n\r\n", b""),
    ];
    for (input, want) in ok {
        let (data, _, rest) = decode_all(input).unwrap_or_else(|e| {
            panic!("{:?}: {e:?}", String::from_utf8_lossy(input));
        });
        assert_eq!(data, *want, "{:?}", String::from_utf8_lossy(input));
        assert!(rest.is_empty());
    }
    let (_, trailers, rest) =
        decode_all(b"0\r\nX-Checksum: abc\r\nx-rep: 1\r\nX-Rep: 2\r\n\r\nnext").expect("trailers");
    assert_eq!(trailers["x-checksum"], "abc");
    let reps: Vec<_> = trailers.get_all("x-rep").iter().collect();
    assert_eq!(reps, ["1", "2"]);
    assert_eq!(rest, b"next");
}

/// Every malformed chunked body and the error it gets.
#[test]
fn malformed_bodies_are_refused() {
    use ChunkedError::*;
    let long_ext = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(MAX_SIZE_LINE));
    let many_trailers = "0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n";
    let big_trailer = format!("0\r\nX: {}\r\n\r\n", "v".repeat(2000));
    let cases: &[(&[u8], ChunkedError)] = &[
        // tests/it/validation.rs: 17 hex digits
        (b"fffffffffffffffff1\r\nx\r\n0\r\n\r\n", Size),
        (b"00000000000000001\r\nx\r\n0\r\n\r\n", Size),
        (b"\r\nx\r\n0\r\n\r\n", Size),
        (b";ext\r\nx\r\n0\r\n\r\n", Size),
        (b"x\r\n", Size),
        (b"-1\r\n", Size),
        (b"+1\r\nx\r\n", Size),
        (b"0x1\r\nx\r\n", Size),
        (b" 1\r\nx\r\n", Size),
        (b"1 \r\nx\r\n0\r\n\r\n", Size),
        (b"1 x\r\nx\r\n", Size),
        (b"1;a\x01\r\nx\r\n", Extension),
        (b"1;a\rb\r\nx\r\n", Extension),
        (b"1;a\x7f\r\nx\r\n", Extension),
        (long_ext.as_bytes(), LineTooLong),
        (b"1\nx\r\n0\r\n\r\n", LineEnding),
        (b"1\r\rx", LineEnding),
        (b"1\rx\r\n", LineEnding),
        (b"1 \rx", LineEnding),
        (b"1\r\nx\n0\r\n\r\n", LineEnding),
        (b"1\r\nxy\r\n0\r\n\r\n", LineEnding),
        (b"1\r\nx\rx", LineEnding),
        (b"0\r\n\n", LineEnding),
        (b"0\r\nX: a\n\r\n", LineEnding),
        (b"0\r\nX: a\r\n\n", LineEnding),
        (b"0\r\nX: a\r\n b\r\n\r\n", Trailer),
        (b"0\r\nX : a\r\n\r\n", Trailer),
        (b"0\r\nX: a\0\r\n\r\n", Trailer),
        (b"0\r\n\rx", LineEnding),
        (many_trailers.as_bytes(), TrailersTooLarge),
        (big_trailer.as_bytes(), TrailersTooLarge),
    ];
    let mut wrong = Vec::new();
    for (input, want) in cases {
        let got = decode_error(input);
        if got != *want {
            let shown = String::from_utf8_lossy(input);
            let shown: String = shown.chars().take(60).collect();
            wrong.push(format!("{shown:?}: want {want:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn broken_framing_is_refused_before_the_line_ends() {
    let mut decoder = ChunkedDecoder::new(LIMITS);
    let mut buf = BytesMut::from(&b"fffffffffffffffff"[..]);
    assert_eq!(decoder.decode(&mut buf), Err(ChunkedError::Size));
    let mut decoder = ChunkedDecoder::new(LIMITS);
    let mut buf = BytesMut::from(&b"5 x"[..]);
    assert_eq!(decoder.decode(&mut buf), Err(ChunkedError::Size));
    let mut decoder = ChunkedDecoder::new(LIMITS);
    let mut buf = BytesMut::from(&b"5;\x00"[..]);
    assert_eq!(decoder.decode(&mut buf), Err(ChunkedError::Extension));
    let mut decoder = ChunkedDecoder::new(LIMITS);
    let mut buf = BytesMut::from(&b"1\r\nxy"[..]);
    assert!(matches!(decoder.decode(&mut buf), Ok(Decoded::Data(_))));
    assert_eq!(decoder.decode(&mut buf), Err(ChunkedError::LineEnding));
}

#[test]
fn every_prefix_needs_more_and_data_comes_as_it_arrives() {
    let body = b"5\r\nhello\r\n3;e=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n";
    let mut decoder = ChunkedDecoder::new(LIMITS);
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut trailers = None;
    for (i, b) in body.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        loop {
            match decoder.decode(&mut buf).expect("valid body") {
                Decoded::Data(bytes) => {
                    assert_eq!(bytes.len(), 1, "one byte in, one byte out");
                    data.extend_from_slice(&bytes);
                }
                Decoded::Trailers(fields) => trailers = Some(fields),
                Decoded::End => {
                    assert_eq!(i, body.len() - 1, "ends at the last byte only");
                    break;
                }
                Decoded::NeedMore => break,
            }
        }
    }
    assert!(decoder.is_done());
    assert_eq!(data, b"helloabc");
    assert_eq!(trailers.expect("trailers")["x-t"], "1");
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Decoded::End),
        "End again after the end"
    );
}

#[test]
fn a_huge_chunk_streams_in_pieces() {
    let mut decoder = ChunkedDecoder::new(LIMITS);
    let mut buf = BytesMut::from(&b"ffffffffffffffff\r\nabc"[..]);
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Decoded::Data(bytes::Bytes::from_static(b"abc")))
    );
    assert_eq!(decoder.decode(&mut buf), Ok(Decoded::NeedMore));
    buf.extend_from_slice(b"def");
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Decoded::Data(bytes::Bytes::from_static(b"def")))
    );
    assert!(!decoder.is_done());
}

#[test]
fn chunk_headers_are_lower_case_hex() {
    for (len, want) in [
        (1u64, "1\r\n"),
        (0xf, "f\r\n"),
        (0x10, "10\r\n"),
        (0x1a2b, "1a2b\r\n"),
        (u64::MAX, "ffffffffffffffff\r\n"),
        (0, ""),
    ] {
        let mut out = Vec::new();
        encode_chunk_header(len, &mut out);
        assert_eq!(String::from_utf8_lossy(&out), want, "{len}");
    }
}

#[test]
fn last_chunk_with_and_without_trailers() {
    let mut out = Vec::new();
    encode_last_chunk(None, &mut out);
    assert_eq!(out, b"0\r\n\r\n");
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.append("x-rep", HeaderValue::from_static("1"));
    trailers.append("x-rep", HeaderValue::from_static("2"));
    out.clear();
    encode_last_chunk(Some(&trailers), &mut out);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "0\r\ngrpc-status: 0\r\nx-rep: 1\r\nx-rep: 2\r\n\r\n"
    );
    // What the encoder writes, the decoder reads back.
    let mut body = Vec::new();
    encode_chunk_header(5, &mut body);
    body.extend_from_slice(b"hello");
    body.extend_from_slice(CHUNK_END);
    body.extend_from_slice(&out);
    let (data, got, rest) = decode_all(&body).expect("own encoding decodes");
    assert_eq!(data, b"hello");
    assert_eq!(got, trailers);
    assert!(rest.is_empty());
}

#[test]
fn trailer_slots_beyond_the_stack_ones_take_the_heap_and_still_bound_the_count() {
    for max_headers in [128usize, 129, 300] {
        let limits = HeadLimits {
            max_head_bytes: 64 * 1024,
            max_headers,
        };
        let fields = |n: usize| -> BytesMut {
            let mut input = b"0\r\n".to_vec();
            for i in 0..n {
                input.extend_from_slice(format!("x-t{i}: {i}\r\n").as_bytes());
            }
            input.extend_from_slice(b"\r\n");
            BytesMut::from(&input[..])
        };
        let mut decoder = ChunkedDecoder::new(limits);
        let mut buf = fields(max_headers);
        match decoder.decode(&mut buf) {
            Ok(Decoded::Trailers(t)) => assert_eq!(t.len(), max_headers),
            other => panic!("{max_headers} fields: {other:?}"),
        }
        let mut decoder = ChunkedDecoder::new(limits);
        let mut buf = fields(max_headers + 1);
        assert_eq!(
            decoder.decode(&mut buf),
            Err(ChunkedError::TrailersTooLarge),
            "{max_headers} + 1 fields"
        );
    }
}
