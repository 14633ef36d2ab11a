//! The trace layer: a tower [`Layer`] between the HTTP server and the forwarding client.
//!
//! Inbound it turns the caller's context into a SERVER span, outbound the app's context into
//! a CLIENT span, and rewrites the trace headers accordingly. It never fails a request: its
//! `Error` is the inner service's, and tracing trouble only degrades tracing.
//!
//! The steps of one request, in order (named like pingora's phases), with the rules loaded
//! once for the whole request:
//! 1. **route and propagate** — the rules' policy for the request, then
//!    [`crate::propagation::propagate`] extracts, decides and injects on the request head;
//! 2. **count** — what propagation found, as metrics (and debug logs for what it ignored);
//! 3. **open span** — when sampled, a [`SpanRecord`] holding the request's facts (attributes
//!    are made from them when the span is read or exported);
//! 4. **response head** — status, `grpc-status` of a trailers-only answer, upstream failure;
//! 5. **end** — at end of stream (trailers included), on a body error, or when the client
//!    goes away: the span is recorded, the request counted, the in-flight entry released.
//!    Ending is driven by `hop::Hop`'s `Drop`, so no path can forget it.

mod body;
mod hop;

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use compact_str::CompactString;
use http::request::Parts;
use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};

pub use self::body::{ResponseFuture, TracedBody};
use self::hop::Hop;
use crate::config::{CompiledRules, RulesHandle};
use crate::direction::Direction;
use crate::propagation::{Inflight, Outcome, propagate_with_root_factor};
use crate::telemetry::semconv::RequestFacts;
use crate::telemetry::{Metrics, SpanKind, SpanRecord, SpanSink, WireProtocol, semconv};

/// The runtime handles the trace layer needs, shared by every connection.
#[derive(Debug, Clone)]
pub struct TraceHandles {
    /// The rules in force (hot-reloaded; loaded once per request).
    pub rules: RulesHandle,
    /// In-flight inbound server spans (orphan inference, tracestate restore).
    pub inflight: Inflight,
    /// Where finished spans go.
    pub sink: SpanSink,
    /// Request and propagation metrics.
    pub metrics: Metrics,
    /// Record `url.query` on spans (off by default: queries often carry secrets).
    pub record_query: bool,
}

/// What the trace layer knows about the connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// Which side of the app.
    pub direction: Direction,
    /// The client's address (`client.address` on server spans).
    pub client: SocketAddr,
    /// The destination port, when known (transparent mode or a fixed target).
    pub destination_port: Option<u16>,
    /// Whether the connection speaks HTTP/2 (gRPC is told apart per request).
    pub http2: bool,
}

/// Builds [`Trace`] services for the requests of one connection.
#[derive(Debug, Clone)]
pub struct TraceLayer {
    handles: Arc<TraceHandles>,
    conn: ConnInfo,
}

impl TraceLayer {
    /// A layer for requests arriving on the connection described by `conn`. The handles are
    /// shared behind one `Arc`: hyper clones the service for every request, and one reference
    /// count is cheaper than the nine inside [`TraceHandles`].
    pub fn new(handles: impl Into<Arc<TraceHandles>>, conn: ConnInfo) -> Self {
        TraceLayer {
            handles: handles.into(),
            conn,
        }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace {
            inner,
            handles: self.handles.clone(),
            conn: self.conn,
        }
    }
}

/// The trace middleware around an inner (forwarding) service.
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
    handles: Arc<TraceHandles>,
    conn: ConnInfo,
}

impl<S, B, RB> Service<Request<B>> for Trace<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    RB: http_body::Body,
{
    type Response = Response<TracedBody<RB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    /// The request head's steps, top to bottom; the rest happens in [`ResponseFuture`],
    /// [`TracedBody`] and `Hop`'s `Drop`.
    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let start = SystemTime::now();
        let (mut parts, body) = req.into_parts();
        // One rules version for the whole request.
        let rules = self.handles.rules.load();
        // The Host value is cloned (a reference count, no copy) so the headers can be
        // rewritten while the authority is read; routing and the span both use it.
        let host = parts.headers.get(http::header::HOST).cloned();
        let outcome = self.route_and_propagate(&rules, &mut parts, host.as_ref());
        if outcome.trace {
            self.count(&rules, &outcome);
        }
        let grpc = crate::grpc::is_grpc(&parts.headers);
        let span = self.open_span(&rules, &outcome, &parts, host.as_ref(), grpc, start);
        drop(rules);
        let hop = Hop::new(
            self.conn.direction,
            WireProtocol::of_request(self.conn.http2, grpc),
            started,
            span,
            outcome.inflight,
            Arc::clone(&self.handles),
        );
        ResponseFuture::new(self.inner.call(Request::from_parts(parts, body)), hop)
    }
}

impl<S> Trace<S> {
    /// Route and propagate: the first matching rule's policy, then extract, decide and inject
    /// (the headers are rewritten in place).
    fn route_and_propagate(
        &self,
        rules: &CompiledRules,
        parts: &mut Parts,
        host: Option<&HeaderValue>,
    ) -> Outcome {
        let direction = self.conn.direction;
        let authority = parts
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| host.and_then(|h| h.to_str().ok()));
        let policy = rules.policy_for(direction, authority, parts.uri.path(), &parts.method);
        propagate_with_root_factor(
            policy,
            rules.formats(),
            direction,
            &self.handles.inflight,
            &mut parts.headers,
            self.handles.sink.root_sampling_factor(),
        )
    }

    /// Count what propagation found (metrics, and debug logs for what was ignored).
    fn count(&self, rules: &CompiledRules, outcome: &Outcome) {
        let direction = self.conn.direction;
        let metrics = &self.handles.metrics;
        let name = |d| rules.dialect_name(d);
        metrics.request_dialect(direction, outcome.extracted_dialect.map_or("none", name));
        for &(dialect, kind) in &outcome.repairs {
            metrics.repair(name(dialect), kind.as_str());
        }
        for &(winner, loser) in &outcome.conflicts {
            tracing::debug!(
                winner = name(winner),
                loser = name(loser),
                "trace dialects disagree on the trace id"
            );
            metrics.conflict(name(winner), name(loser));
        }
        for &dialect in &outcome.invalid {
            tracing::debug!(dialect = name(dialect), "ignored an invalid trace header");
            metrics.invalid_header(name(dialect));
        }
        if let Some(orphan) = outcome.orphan {
            metrics.orphan(orphan.as_str());
        }
        if outcome.tracestate_restored {
            metrics.tracestate_restored();
        }
        if outcome.tracestate_invalid {
            tracing::debug!(dialect = "tracestate", "dropped an invalid tracestate");
            metrics.invalid_header("tracestate");
        }
        if outcome.baggage_dropped {
            metrics.baggage_dropped(1);
        }
    }

    /// Open the span, when the hop is traced and sampled: the request's facts (attributes by
    /// the semantic conventions once read), plus what propagation did.
    fn open_span(
        &self,
        rules: &CompiledRules,
        outcome: &Outcome,
        parts: &Parts,
        host: Option<&HeaderValue>,
        grpc: bool,
        start: SystemTime,
    ) -> Option<Arc<SpanRecord>> {
        if !(outcome.trace && outcome.span.sampled) {
            return None;
        }
        let direction = self.conn.direction;
        let id = &outcome.span;
        let kind = match direction {
            Direction::Inbound => SpanKind::Server,
            Direction::Outbound => SpanKind::Client,
        };
        // Every field spelled out: `..from_parts` would test the content type again.
        let facts = RequestFacts {
            method: &parts.method,
            uri: &parts.uri,
            version: parts.version,
            headers: &parts.headers,
            host,
            client_address: (direction == Direction::Inbound).then_some(self.conn.client.ip()),
            destination_port: self.conn.destination_port,
            record_query: self.handles.record_query,
            grpc,
        };
        let mut span = SpanRecord::for_request(
            id.trace_id.0,
            id.span_id.0,
            id.parent_span_id.map(|p| p.0),
            kind,
            &facts,
            start,
        );
        if !outcome.repairs.is_empty() {
            let mut list = String::new();
            for (dialect, kind) in &outcome.repairs {
                if !list.is_empty() {
                    list.push(',');
                }
                list.push_str(rules.dialect_name(*dialect));
                list.push(':');
                list.push_str(kind.as_str());
            }
            span.push_attr(semconv::STITCH_PROPAGATION_REPAIRS, list);
        }
        if let Some(&(winner, loser)) = outcome.conflicts.first() {
            let (winner, loser) = (rules.dialect_name(winner), rules.dialect_name(loser));
            span.push_attr(
                semconv::STITCH_PROPAGATION_CONFLICT,
                format!("{winner}>{loser}"),
            );
        }
        if let Some(hop) = &mut span.hop {
            hop.dialect = outcome
                .extracted_dialect
                .map(|d| CompactString::new(rules.dialect_name(d)));
            hop.tracestate_restored = outcome.tracestate_restored;
            hop.parent_inferred = id.inferred_parent;
            hop.injected = injected_list(rules, outcome);
        }
        // Into its `Arc` once it is complete: the record is a few hundred bytes, and each move
        // of it is a `memcpy`.
        Some(Arc::new(span))
    }
}

/// `stitch.propagation.injected`: the dialects this hop wrote, so the trace view can show
/// each seam as dialect in → dialects out. The names are copied, not formatted, in the common
/// cases (see [`CompiledRules::dialect_list`]).
fn injected_list(rules: &CompiledRules, outcome: &Outcome) -> Option<CompactString> {
    (!outcome.injected.is_empty()).then(|| rules.dialect_list(outcome.injected))
}

#[cfg(test)]
mod tests;
