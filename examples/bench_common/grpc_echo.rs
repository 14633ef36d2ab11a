//! The echo service behind the raw gRPC methods ([`super::raw_codec`]): unary calls answer
//! their message, streams echo every message until the client ends its side.

use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use tonic::body::Body;

use super::raw_codec::{RawCodec, STREAM_PATH, UNARY_PATH};

/// Serves one gRPC request (`content-type: application/grpc*`).
pub(crate) async fn grpc_echo(req: Request<Incoming>) -> http::Response<Body> {
    let mut server = tonic::server::Grpc::new(RawCodec);
    match req.uri().path() {
        UNARY_PATH => {
            let echo = tower::service_fn(|r: tonic::Request<Bytes>| async move {
                Ok::<_, tonic::Status>(tonic::Response::new(r.into_inner()))
            });
            server.unary(echo, req).await
        }
        STREAM_PATH => {
            let echo = tower::service_fn(|r: tonic::Request<tonic::Streaming<Bytes>>| async move {
                Ok::<_, tonic::Status>(tonic::Response::new(r.into_inner()))
            });
            server.streaming(echo, req).await
        }
        _ => tonic::Status::unimplemented("unknown method").into_http(),
    }
}
