//! The request body stitch sends upstream: the client's body ([`WireBody`], from stitch's
//! HTTP/1 engine or hyper's HTTP/2 server) streamed frame by frame, with the first frame
//! possibly read ahead (see [`peek_first_frame`]) so that a body whose framing is broken from
//! its first bytes is refused before the request head reaches the upstream.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::body::WireBody;
use crate::proxy::h1::error::BoxError;

/// How long a request with a body whose framing can break (HTTP/1 chunked, HTTP/2 with
/// `content-length`) is held for its first body frame before its head goes upstream. A client
/// sends the first bytes of its body with, or right after, the head; one that waits for the
/// response before sending any (full-duplex over HTTP/1, a bidirectional stream) is delayed by
/// at most this, never deadlocked.
pub(crate) const FIRST_FRAME_WINDOW: Duration = Duration::from_millis(50);

/// The client's request body, with the frame read ahead (if any) replayed first.
#[derive(Debug)]
pub(crate) struct RequestBody {
    /// Boxed: the request is held by value in every in-flight request's future, and a frame
    /// (up to a trailer map) would triple the body's size for the few requests read ahead.
    first: Option<Box<Frame<Bytes>>>,
    inner: WireBody,
}

impl RequestBody {
    /// The body as received, nothing read ahead.
    pub(crate) fn new(inner: WireBody) -> Self {
        RequestBody { first: None, inner }
    }
}

/// Reads the body's first frame if it arrives within `window`: `Err` when the body's framing
/// is already broken (the caller answers `400` and forwards nothing), otherwise the body with
/// that frame kept for replay.
pub(crate) async fn peek_first_frame(
    mut inner: WireBody,
    window: Duration,
) -> Result<RequestBody, BoxError> {
    let first = match tokio::time::timeout(window, inner.frame()).await {
        Ok(Some(frame)) => Some(Box::new(frame?)),
        Ok(None) | Err(_) => None,
    };
    Ok(RequestBody { first, inner })
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(frame) = self.first.take() {
            return Poll::Ready(Some(Ok(*frame)));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let held = self
            .first
            .as_ref()
            .and_then(|f| f.data_ref())
            .map_or(0, |d| d.remaining() as u64);
        // Upper after lower: `set_lower` on the default hint (no upper bound) cannot panic.
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(held));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint
    }
}
