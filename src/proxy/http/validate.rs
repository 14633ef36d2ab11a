//! Request checks that hyper does not make and RFC 9112 / RFC 9110 / RFC 9113 require of a
//! server or an intermediary: a request failing one is answered `400` by stitch and never
//! reaches the upstream (`Connection: close` on HTTP/1, where the framing can no longer be
//! trusted).
//!
//! hyper (httparse) already refuses malformed request lines, bad field names, NUL or bare CR in
//! values, obs-fold, `Content-Length: +5`, unknown codings with `Content-Length` and
//! `Transfer-Encoding` in HTTP/1.0; h2 already refuses disagreeing `content-length` fields and
//! a `content-length` that the DATA frames do not add up to (a stream error
//! `PROTOCOL_ERROR`, RFC 9113 §8.1.1). What is left is checked here on the request head; a
//! malformed body (a chunk size that overflows) is recognised when the body is read
//! ([`Rejection::MalformedBody`]).

use http::header::{self, HeaderMap};
use http::{Request, Version};

/// Why a request was refused: a bounded set, used as the `reason` label of
/// `stitch_requests_rejected_total` and in the debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// `Transfer-Encoding` with `Content-Length`, or `Content-Length`s that disagree
    /// (RFC 9112 §6.3): a request-smuggling vector.
    AmbiguousFraming,
    /// `chunked` applied more than once (RFC 9112 §6.1): a second framing layer.
    ChunkedTwice,
    /// More than one `Host` field (RFC 9112 §3.2).
    DuplicateHost,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    MissingHost,
    /// An HTTP/2 `host` field naming another authority than `:authority` (RFC 9113 §8.3.1).
    HostAuthorityMismatch,
    /// An HTTP/2 request without `:authority` where stitch routes by it (explicit outbound).
    MissingAuthority,
    /// The request body's framing is broken (a chunk size that overflows, a bad chunk line).
    MalformedBody,
}

impl Rejection {
    /// Every reason (the tests check the labels are distinct).
    #[cfg(test)]
    pub(crate) const ALL: [Rejection; 7] = [
        Rejection::AmbiguousFraming,
        Rejection::ChunkedTwice,
        Rejection::DuplicateHost,
        Rejection::MissingHost,
        Rejection::HostAuthorityMismatch,
        Rejection::MissingAuthority,
        Rejection::MalformedBody,
    ];

    /// The metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Rejection::AmbiguousFraming => "ambiguous_framing",
            Rejection::ChunkedTwice => "chunked_twice",
            Rejection::DuplicateHost => "duplicate_host",
            Rejection::MissingHost => "missing_host",
            Rejection::HostAuthorityMismatch => "host_authority_mismatch",
            Rejection::MissingAuthority => "missing_authority",
            Rejection::MalformedBody => "malformed_body",
        }
    }

    /// The text of the `400` answer: what was wrong and the rule it breaks.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Rejection::AmbiguousFraming => "stitch: ambiguous request framing (RFC 9112 §6.3)",
            Rejection::ChunkedTwice => "stitch: chunked applied more than once (RFC 9112 §6.1)",
            Rejection::DuplicateHost => "stitch: more than one Host header (RFC 9112 §3.2)",
            Rejection::MissingHost => "stitch: HTTP/1.1 request without Host (RFC 9112 §3.2)",
            Rejection::HostAuthorityMismatch => {
                "stitch: host differs from :authority (RFC 9113 §8.3.1)"
            }
            Rejection::MissingAuthority => {
                "stitch: the request has no :authority to route by (RFC 9113 §8.3.1)"
            }
            Rejection::MalformedBody => "stitch: malformed chunked request body (RFC 9112 §7.1)",
        }
    }
}

/// Checks an HTTP/1 request head (the version as received, before stitch rewrites it).
pub(crate) fn check_http1<B>(req: &Request<B>) -> Result<(), Rejection> {
    let headers = req.headers();
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(Rejection::DuplicateHost),
        (None, _) if req.version() == Version::HTTP_11 => return Err(Rejection::MissingHost),
        _ => {}
    }
    if has_ambiguous_framing(headers) {
        return Err(Rejection::AmbiguousFraming);
    }
    if chunked_count(headers) > 1 {
        return Err(Rejection::ChunkedTwice);
    }
    Ok(())
}

/// Checks an HTTP/2 request head; `routed_by_authority`: the upstream is chosen from the
/// request (explicit outbound), so a request naming none cannot be routed.
pub(crate) fn check_http2<B>(req: &Request<B>, routed_by_authority: bool) -> Result<(), Rejection> {
    let authority = req.uri().authority();
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let (host, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Err(Rejection::DuplicateHost);
    }
    match (authority, host) {
        (Some(a), Some(h)) if !a.as_str().as_bytes().eq_ignore_ascii_case(h.as_bytes()) => {
            Err(Rejection::HostAuthorityMismatch)
        }
        (None, _) if routed_by_authority => Err(Rejection::MissingAuthority),
        _ => Ok(()),
    }
}

/// Whether the request framing is ambiguous (RFC 9112 §6.3): `Transfer-Encoding` together
/// with `Content-Length`, or `Content-Length` values that disagree.
fn has_ambiguous_framing(headers: &HeaderMap) -> bool {
    let mut lengths = headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|v| v.trim_ascii());
    let first = lengths.next();
    if first.is_some() && headers.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    match first {
        Some(first) => lengths.any(|other| other != first),
        None => false,
    }
}

/// How many times `chunked` appears among the transfer codings, over every
/// `Transfer-Encoding` field (a list split across fields is one list, RFC 9110 §5.3).
fn chunked_count(headers: &HeaderMap) -> usize {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h1(version: Version, fields: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::builder().version(version).uri("/");
        for (k, v) in fields {
            req = req.header(*k, *v);
        }
        req.body(()).expect("valid request")
    }

    fn h2(uri: &str, fields: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::builder().version(Version::HTTP_2).uri(uri);
        for (k, v) in fields {
            req = req.header(*k, *v);
        }
        req.body(()).expect("valid request")
    }

    #[test]
    fn http1_host_rules() {
        let v11 = Version::HTTP_11;
        assert_eq!(check_http1(&h1(v11, &[("host", "a")])), Ok(()));
        assert_eq!(
            check_http1(&h1(v11, &[("host", "a"), ("host", "b")])),
            Err(Rejection::DuplicateHost)
        );
        assert_eq!(
            check_http1(&h1(v11, &[("host", "a"), ("host", "a")])),
            Err(Rejection::DuplicateHost),
            "two Host fields are refused even when they agree"
        );
        assert_eq!(check_http1(&h1(v11, &[])), Err(Rejection::MissingHost));
        assert_eq!(
            check_http1(&h1(Version::HTTP_10, &[])),
            Ok(()),
            "HTTP/1.0 predates Host"
        );
    }

    #[test]
    fn http1_framing_rules() {
        let req = |fields: &[(&str, &str)]| {
            let mut all = vec![("host", "a")];
            all.extend_from_slice(fields);
            check_http1(&h1(Version::HTTP_11, &all))
        };
        assert_eq!(req(&[("transfer-encoding", "chunked")]), Ok(()));
        assert_eq!(req(&[("transfer-encoding", "gzip, chunked")]), Ok(()));
        assert_eq!(
            req(&[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked")
            ]),
            Err(Rejection::ChunkedTwice)
        );
        assert_eq!(
            req(&[("transfer-encoding", "chunked, Chunked")]),
            Err(Rejection::ChunkedTwice)
        );
        assert_eq!(
            req(&[("content-length", "5"), ("transfer-encoding", "chunked")]),
            Err(Rejection::AmbiguousFraming)
        );
        assert_eq!(
            req(&[("content-length", "5"), ("content-length", "6")]),
            Err(Rejection::AmbiguousFraming)
        );
        assert_eq!(req(&[("content-length", "5, 5")]), Ok(()));
    }

    #[test]
    fn http2_authority_rules() {
        let ok = h2("http://a:80/", &[("host", "a:80")]);
        assert_eq!(check_http2(&ok, true), Ok(()));
        let case = h2("http://a:80/", &[("host", "A:80")]);
        assert_eq!(check_http2(&case, true), Ok(()), "hosts compare case-blind");
        let other = h2("http://a/", &[("host", "b")]);
        assert_eq!(
            check_http2(&other, false),
            Err(Rejection::HostAuthorityMismatch)
        );
        let none = h2("/", &[]);
        assert_eq!(check_http2(&none, true), Err(Rejection::MissingAuthority));
        assert_eq!(
            check_http2(&none, false),
            Ok(()),
            "a fixed destination needs no authority"
        );
        let two = h2("http://a/", &[("host", "a"), ("host", "a")]);
        assert_eq!(check_http2(&two, false), Err(Rejection::DuplicateHost));
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, val) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("valid name"),
                http::HeaderValue::from_str(val).expect("valid value"),
            );
        }
        m
    }

    #[test]
    fn framing_ambiguity_is_detected() {
        assert!(has_ambiguous_framing(&map(&[
            ("content-length", "5"),
            ("transfer-encoding", "chunked")
        ])));
        assert!(has_ambiguous_framing(&map(&[
            ("content-length", "5"),
            ("content-length", "6")
        ])));
        assert!(has_ambiguous_framing(&map(&[("content-length", "5, 6")])));
        assert!(!has_ambiguous_framing(&map(&[
            ("content-length", "5"),
            ("content-length", "5")
        ])));
        assert!(!has_ambiguous_framing(&map(&[(
            "transfer-encoding",
            "chunked"
        )])));
        assert!(!has_ambiguous_framing(&map(&[])));
    }

    #[test]
    fn labels_are_distinct() {
        let labels: std::collections::HashSet<_> =
            Rejection::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), Rejection::ALL.len());
    }
}
