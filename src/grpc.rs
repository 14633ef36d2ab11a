//! The one test for "this request is gRPC". A leaf: the forwarder answers gRPC clients with
//! gRPC errors, the trace layer names their spans `{package.Service}/{Method}` and the metrics
//! count them as `grpc`, and all three must agree.

use http::header::{self, HeaderMap};

/// Whether a request is gRPC (`content-type: application/grpc[+proto|;...]`, media types are
/// case-insensitive).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let ct = v.as_bytes().trim_ascii_start();
        ct.len() >= 16 && ct[..16].eq_ignore_ascii_case(b"application/grpc")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn content_type(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn grpc_content_types_are_recognized_case_insensitively() {
        assert!(is_grpc(&content_type("application/grpc")));
        assert!(is_grpc(&content_type("Application/GRPC+proto")));
        assert!(is_grpc(&content_type(" application/grpc;charset=utf-8")));
        assert!(!is_grpc(&content_type("application/json")));
        assert!(!is_grpc(&content_type("application/grp")));
        assert!(!is_grpc(&HeaderMap::new()));
    }
}
