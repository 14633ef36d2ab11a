//! The response future and body of the trace layer: they carry the [`Hop`] from the request
//! head to the end of the response stream, without buffering anything.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Buf;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::hop::Hop;
use crate::upstream_failure::UpstreamFailure;

pin_project! {
    /// Resolves to the inner response with its body wrapped in [`TracedBody`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        hop: Option<Hop>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, hop: Hop) -> Self {
        ResponseFuture {
            inner,
            hop: Some(hop),
        }
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    RB: Body,
{
    type Output = Result<Response<TracedBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let mut hop = this.hop.take();
        Poll::Ready(match result {
            Ok(resp) => {
                if let Some(hop) = &mut hop {
                    let failure = resp.extensions().get::<UpstreamFailure>().map(|f| f.0);
                    hop.response_head(resp.status(), resp.headers(), failure);
                    // A body with nothing to read (HEAD, 204, 304, trailers-only gRPC) may be
                    // dropped unpolled by the server: that is a normal end, not a cancel.
                    if resp.body().is_end_stream() {
                        hop.complete();
                    }
                }
                Ok(resp.map(|inner| TracedBody { inner, hop }))
            }
            Err(e) => {
                if let Some(hop) = &mut hop {
                    hop.fail("internal");
                }
                Err(e)
            }
        })
    }
}

pin_project! {
    /// The response body, streamed through untouched; the hop ends with the stream.
    pub struct TracedBody<B> {
        #[pin]
        inner: B,
        hop: Option<Hop>,
    }
}

impl<B: Body> Body for TracedBody<B>
where
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let polled = ready!(this.inner.as_mut().poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => {
                if let (Some(trailers), Some(hop)) = (frame.trailers_ref(), this.hop.as_mut()) {
                    hop.trailers(trailers);
                }
                // A server stops polling once a Content-Length body is complete; the end of
                // the stream is then known from the body itself, not from a final `None`.
                if this.inner.is_end_stream()
                    && let Some(mut hop) = this.hop.take()
                {
                    hop.complete();
                }
            }
            Some(Err(_)) => {
                if let Some(mut hop) = this.hop.take() {
                    hop.fail("response_body_error");
                }
            }
            None => {
                if let Some(mut hop) = this.hop.take() {
                    hop.complete();
                }
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
