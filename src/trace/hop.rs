//! One request hop in flight: its span (when sampled), its metrics labels and its in-flight
//! registration. Dropping a `Hop` ends it — whichever way the request ended.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, StatusCode};

use super::TraceHandles;
use crate::direction::Direction;
use crate::propagation::InflightGuard;
use crate::telemetry::{SpanRecord, StatusClass, WireProtocol};

/// The state of a request between its head and its end.
#[derive(Debug)]
pub(crate) struct Hop {
    direction: Direction,
    protocol: WireProtocol,
    started: Instant,
    /// Behind an `Arc` from the start (it is never shared before the hop ends, so
    /// `Arc::make_mut` never copies): the hop — and the per-stream future that carries it —
    /// stays small to move, and the finished record goes to the sink without another copy.
    span: Option<Arc<SpanRecord>>,
    status: Option<StatusCode>,
    failure: Option<&'static str>,
    completed: Option<Instant>,
    _inflight: Option<InflightGuard>,
    handles: Arc<TraceHandles>,
}

impl Hop {
    pub(crate) fn new(
        direction: Direction,
        protocol: WireProtocol,
        started: Instant,
        span: Option<Arc<SpanRecord>>,
        inflight: Option<InflightGuard>,
        handles: Arc<TraceHandles>,
    ) -> Hop {
        Hop {
            direction,
            protocol,
            started,
            span,
            status: None,
            failure: None,
            completed: None,
            _inflight: inflight,
            handles,
        }
    }

    /// The response head arrived.
    pub(crate) fn response_head(
        &mut self,
        status: StatusCode,
        headers: &HeaderMap,
        failure: Option<&'static str>,
    ) {
        self.status = Some(status);
        self.failure = failure;
        if let Some(span) = &mut self.span {
            let span = Arc::make_mut(span);
            span.record_response_head(status, headers);
            if let Some(kind) = failure {
                span.record_failure(kind);
            }
        }
    }

    /// Trailers arrived (gRPC status lives here).
    pub(crate) fn trailers(&mut self, trailers: &HeaderMap) {
        if let Some(span) = &mut self.span {
            Arc::make_mut(span).record_trailers(trailers);
        }
    }

    /// The response stream ended normally.
    pub(crate) fn complete(&mut self) {
        self.completed.get_or_insert_with(Instant::now);
    }

    /// The exchange failed (inner service error or response body error).
    pub(crate) fn fail(&mut self, kind: &'static str) {
        self.failure.get_or_insert(kind);
        if let Some(span) = &mut self.span {
            Arc::make_mut(span).record_failure(kind);
        }
    }
}

impl Drop for Hop {
    fn drop(&mut self) {
        if self.completed.is_none() && self.failure.is_none() {
            // The client went away (or the server dropped the exchange) before the end.
            self.fail("cancelled");
        }
        let class = match (self.status, self.failure) {
            (Some(status), _) => StatusClass::from_status(status.as_u16()),
            (None, _) => StatusClass::Failed,
        };
        // The end is when the stream ended, not when the body object was dropped. One
        // monotonic clock read serves the duration metric and the span's end time.
        let took = self
            .completed
            .unwrap_or_else(Instant::now)
            .saturating_duration_since(self.started);
        self.handles
            .metrics
            .request_finished(self.direction, self.protocol, class, took);
        if let Some(mut span) = self.span.take() {
            let record = Arc::make_mut(&mut span);
            record.close(record.start.checked_add(took).unwrap_or(record.start));
            self.handles.sink.record(span);
        }
    }
}
