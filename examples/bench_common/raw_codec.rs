//! A pass-through gRPC codec: messages are raw `Bytes`, so the benchmark backend and load client
//! need no `.proto` file, no code generation and no protobuf work that would blur what the proxy
//! costs. The framing on the wire is ordinary gRPC (length-prefixed messages, trailers).

use bytes::{Buf, BufMut, Bytes};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Path of the unary echo method (the service name looks like a real one to proxies).
pub(crate) const UNARY_PATH: &str = "/bench.Echo/Unary";
/// Path of the bidirectional streaming echo method.
pub(crate) const STREAM_PATH: &str = "/bench.Echo/Stream";

/// Encodes and decodes messages as the bytes they are.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }
}
