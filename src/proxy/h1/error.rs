//! Why an HTTP/1 connection (or a request body on it) ended other than cleanly. The wiring step
//! logs these and counts refusals: [`Error::rejection`] names the
//! `stitch_requests_rejected_total{reason}` a refused request counts under, and
//! [`Error::refused_with`] tells which status the client was answered with.

use std::io;

use http::StatusCode;

use super::chunked::ChunkedError;
use super::framing::FramingError;
use super::head::HeadError;
use crate::proxy::http::validate::Rejection;

/// A boxed error of a service or a body, the common currency of `tower` and `http_body`.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a connection or a body ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The connection's socket failed (the client's; or the upstream's, in a response body
    /// read by the client driver).
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    /// The request head was refused (answered [`HeadError::status`], then closed).
    #[error("request head refused: {0}")]
    Head(HeadError),
    /// The request's body framing was refused (answered `400`, then closed).
    #[error("request framing refused: {0}")]
    Framing(FramingError),
    /// The chunked body is malformed (the body's reader got this error; the connection
    /// closes after the response). [`Error::rejection`] counts it as a refused request: the
    /// client driver's response bodies need the wiring to tell them apart.
    #[error("malformed chunked body: {0}")]
    Chunked(ChunkedError),
    /// The client closed the connection before the request body was complete.
    #[error("client closed the connection inside the request body")]
    IncompleteBody,
    /// The client closed the connection while its request was being served: the exchange is
    /// abandoned (the service's future is dropped, so the request counts as cancelled), as
    /// hyper did without half-close support.
    #[error("client closed the connection before the response")]
    ClientClosed,
    /// A request head was not complete by the header-read timeout (closed, no response).
    #[error("request head incomplete at the header-read timeout")]
    HeaderTimeout,
    /// The service failed instead of answering (closed, no response: as hyper did).
    #[error("service failed: {0}")]
    Service(BoxError),
    /// The body being written failed, or did not match its `Content-Length`: a response body
    /// (the client sees the connection close before the body's end), or a request body the
    /// client driver was sending (it becomes `client::SendError::Body`).
    #[error("body failed: {0}")]
    Body(BoxError),
    /// The connection was handed over (upgrade) or its reader went away: nothing more to read.
    #[error("the connection was handed over or has gone")]
    Gone,
}

impl Error {
    /// The reason a refused request counts under in `stitch_requests_rejected_total{reason}`,
    /// when stitch counts it (the framing rules stitch enforces itself, and a chunked body
    /// broken from its first bytes); `None` otherwise.
    pub(crate) fn rejection(&self) -> Option<Rejection> {
        match self {
            Error::Framing(e) => e.rejection(),
            Error::Chunked(_) => Some(Rejection::MalformedBody),
            _ => None,
        }
    }

    /// The status the driver answered a refused request with before closing, if it answered
    /// one (a refused head or framing); the wiring step logs it.
    pub(crate) fn refused_with(&self) -> Option<StatusCode> {
        match self {
            Error::Head(e) => Some(e.status()),
            Error::Framing(_) => Some(StatusCode::BAD_REQUEST),
            _ => None,
        }
    }
}
