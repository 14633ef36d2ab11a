//! Why a request (or an opaque connection) could not be forwarded: one error type for the whole
//! upstream side, after hyper's and pingora's: a bounded kind, a retry flag set by whoever
//! knows, and the cause behind `source()`.
//!
//! Everything a failure turns into comes from here: the 502/504 status and its text (with the
//! cause, which operators read in the answer), the span's `error.type` ([`ForwardErrorKind::as_str`],
//! carried to the trace layer as an [`crate::upstream_failure::UpstreamFailure`]), and the
//! pool's decision to send a request again ([`ForwardError::is_retryable`]).

use std::error::Error;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::proxy::h1::client::SendError;

/// What went wrong, from a fixed set: usable as a metric label and as `error.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ForwardErrorKind {
    /// The upstream's name did not resolve.
    Resolve,
    /// Every resolved address refused or was unreachable.
    Connect,
    /// No connection within the connect timeout.
    ConnectTimeout,
    /// The destination is one of stitch's own listeners: forwarding would loop forever.
    Loop,
    /// The upstream failed the exchange before a response head arrived.
    UpstreamReset,
}

impl ForwardErrorKind {
    /// The label for metrics and the span's `error.type`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ForwardErrorKind::Resolve => "dns_error",
            ForwardErrorKind::Connect => "connect_error",
            ForwardErrorKind::ConnectTimeout => "connect_timeout",
            ForwardErrorKind::Loop => "forwarding_loop",
            ForwardErrorKind::UpstreamReset => "upstream_reset",
        }
    }
}

/// Why a request could not be forwarded.
#[derive(Debug)]
pub(crate) struct ForwardError {
    kind: ForwardErrorKind,
    retryable: bool,
    cause: Cause,
}

#[derive(Debug)]
enum Cause {
    Io(io::Error),
    Http(hyper::Error),
    /// The HTTP/1 client driver refused the upstream's response (its head or framing).
    Response(Box<dyn Error + Send + Sync>),
    /// The client's request body failed while it was sent upstream over HTTP/1.
    RequestBody(Box<dyn Error + Send + Sync>),
    After(Duration),
    Own(SocketAddr),
    /// One failure several requests waited for (a shared HTTP/2 connect).
    Shared(Arc<ForwardError>),
}

impl ForwardError {
    /// The name did not resolve; nothing was sent.
    pub(crate) fn resolve(e: io::Error) -> Self {
        ForwardError::new(ForwardErrorKind::Resolve, true, Cause::Io(e))
    }

    /// No address accepted the connection; nothing was sent.
    pub(crate) fn connect(e: io::Error) -> Self {
        ForwardError::new(ForwardErrorKind::Connect, true, Cause::Io(e))
    }

    /// Connecting took longer than `timeout`; nothing was sent.
    pub(crate) fn connect_timeout(timeout: Duration) -> Self {
        ForwardError::new(
            ForwardErrorKind::ConnectTimeout,
            true,
            Cause::After(timeout),
        )
    }

    /// `addr` is stitch's own listener; sending again would loop the same way.
    pub(crate) fn forwarding_loop(addr: SocketAddr) -> Self {
        ForwardError::new(ForwardErrorKind::Loop, false, Cause::Own(addr))
    }

    /// The upstream failed the exchange before answering. `unsent`: hyper handed the request
    /// back, so not a byte of it reached the upstream and it may go out on another connection.
    pub(crate) fn upstream(e: hyper::Error, unsent: bool) -> Self {
        ForwardError::new(ForwardErrorKind::UpstreamReset, unsent, Cause::Http(e))
    }

    /// An HTTP/1 exchange failed in stitch's client driver; with the request when not one
    /// byte of it was written ([`SendError::Unsent`]: retryable, it may go out on another
    /// connection).
    pub(crate) fn exchange<B>(e: SendError<B>) -> (Self, Option<http::Request<B>>) {
        let mut unsent = None;
        let (retryable, cause) = match e {
            SendError::Unsent { error, request } => {
                unsent = Some(*request);
                (true, Cause::Io(error))
            }
            SendError::Io(error) => (false, Cause::Io(error)),
            SendError::Closed => (
                false,
                Cause::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the upstream closed the connection before a complete response head",
                )),
            ),
            SendError::Head(e) => (false, Cause::Response(Box::new(e))),
            SendError::Framing(e) => (false, Cause::Response(Box::new(e))),
            SendError::Body(e) => (false, Cause::RequestBody(e)),
        };
        let error = ForwardError::new(ForwardErrorKind::UpstreamReset, retryable, cause);
        (error, unsent)
    }

    /// `e`, which several requests waited for (a shared HTTP/2 connection attempt), as this
    /// request's error: the same kind, retry flag and text for each of them.
    pub(crate) fn shared(e: Arc<ForwardError>) -> Self {
        ForwardError::new(e.kind, e.retryable, Cause::Shared(e))
    }

    fn new(kind: ForwardErrorKind, retryable: bool, cause: Cause) -> Self {
        ForwardError {
            kind,
            retryable,
            cause,
        }
    }

    /// What went wrong (metrics, `error.type`).
    pub(crate) fn kind(&self) -> ForwardErrorKind {
        self.kind
    }

    /// Whether the request may be sent again: it can never reach the upstream twice.
    pub(crate) fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// Whether the exchange failed because the client's request body is malformed (a chunk
    /// size that overflows, a bad chunk line): the client's fault, answered `400`, not an
    /// upstream failure: the HTTP/1 engine's body error for a chunked body it refuses (sent
    /// upstream by the HTTP/1 client driver), or, over HTTP/2, a hyper user body error whose
    /// cause is the decoder's `InvalidData` / `InvalidInput`. A client that went away
    /// mid-body is not malformed.
    pub(crate) fn is_malformed_request_body(&self) -> bool {
        match &self.cause {
            Cause::Http(e) if e.is_user() => is_malformed_body(Error::source(e)),
            Cause::RequestBody(e) => is_malformed_body(Some(&**e)),
            _ => false,
        }
    }

    /// Whether the exchange failed because the client's HTTP/1 request body did, and not for
    /// its framing: the client closed the connection (or its socket failed) before the body's
    /// end. The upstream is not to blame: it is answered (and counted) `400`, as nginx logs
    /// it, and the HTTP/1 driver drops that answer unwritten (the client left).
    pub(crate) fn is_client_body_failure(&self) -> bool {
        matches!(&self.cause, Cause::RequestBody(e) if !is_malformed_body(Some(&**e)))
    }

    /// The status stitch answers with: 504 when the upstream did not answer the connect in
    /// time, 502 otherwise.
    pub(crate) fn status(&self) -> StatusCode {
        match self.kind {
            ForwardErrorKind::ConnectTimeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// This error and its cause on one line (`upstream connect failed: Connection refused
    /// (os error 111)`): the text of stitch's 502/504 answer and of its logs.
    pub(crate) fn with_cause(&self) -> impl fmt::Display + '_ {
        WithCause(self)
    }
}

impl fmt::Display for ForwardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, &self.cause) {
            (_, Cause::Shared(e)) => e.fmt(f),
            (ForwardErrorKind::ConnectTimeout, Cause::After(t)) => {
                write!(f, "upstream connect timed out after {t:?}")
            }
            (ForwardErrorKind::Loop, Cause::Own(a)) => {
                write!(f, "refused: {a} is stitch's own listener (forwarding loop)")
            }
            (ForwardErrorKind::Resolve, _) => f.write_str("cannot resolve upstream"),
            (ForwardErrorKind::UpstreamReset, _) => {
                f.write_str("upstream failed before responding")
            }
            _ => f.write_str("upstream connect failed"),
        }
    }
}

impl Error for ForwardError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.cause {
            Cause::Io(e) => Some(e),
            Cause::Http(e) => Some(e),
            Cause::Response(e) | Cause::RequestBody(e) => Some(&**e),
            Cause::Shared(e) => e.source(),
            Cause::After(_) | Cause::Own(_) => None,
        }
    }
}

struct WithCause<'a>(&'a ForwardError);

impl fmt::Display for WithCause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.source() {
            Some(cause) => write!(f, "{}: {cause}", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Whether a request body's error (or a cause in its chain) says the body is malformed: the
/// HTTP/1 engine's refusal of a chunked body, or a decoder's `InvalidData` / `InvalidInput`
/// (HTTP/2 through hyper). A client that went away mid-body is not malformed.
pub(crate) fn is_malformed_body(mut source: Option<&(dyn Error + 'static)>) -> bool {
    while let Some(s) = source {
        // The HTTP/1 engine's body error, as the client's body failed.
        if let Some(body) = s.downcast_ref::<crate::proxy::h1::error::Error>() {
            return body.rejection().is_some();
        }
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput
            );
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_status_text_and_retry_flag_come_from_one_error() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let own: SocketAddr = "127.0.0.1:4140".parse().expect("literal address");
        // (error, error.type, status, retryable, has a source, answer text)
        let cases = [
            (
                ForwardError::resolve(io::Error::other("no such host")),
                "dns_error",
                502,
                true,
                true,
                "cannot resolve upstream: no such host",
            ),
            (
                ForwardError::connect(refused),
                "connect_error",
                502,
                true,
                true,
                "upstream connect failed: connection refused",
            ),
            (
                ForwardError::connect_timeout(Duration::from_millis(200)),
                "connect_timeout",
                504,
                true,
                false,
                "upstream connect timed out after 200ms",
            ),
            (
                ForwardError::forwarding_loop(own),
                "forwarding_loop",
                502,
                false,
                false,
                "refused: 127.0.0.1:4140 is stitch's own listener (forwarding loop)",
            ),
        ];
        for (e, kind, status, retryable, has_source, text) in cases {
            assert_eq!(e.kind().as_str(), kind);
            assert_eq!(e.status().as_u16(), status, "{kind}");
            assert_eq!(e.is_retryable(), retryable, "{kind}");
            assert_eq!(e.source().is_some(), has_source, "{kind}");
            assert_eq!(e.with_cause().to_string(), text);
        }
    }

    #[test]
    fn a_shared_failure_reads_the_same_for_every_request_that_waited() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        for original in [
            ForwardError::connect(refused),
            ForwardError::connect_timeout(Duration::from_millis(200)),
        ] {
            let text = original.with_cause().to_string();
            let (kind, status, retryable) =
                (original.kind(), original.status(), original.is_retryable());
            let original = Arc::new(original);
            for e in [
                ForwardError::shared(original.clone()),
                ForwardError::shared(original.clone()),
            ] {
                assert_eq!(e.kind(), kind);
                assert_eq!(e.status(), status);
                assert_eq!(e.is_retryable(), retryable);
                assert_eq!(e.with_cause().to_string(), text);
            }
        }
    }
}
