//! One call per request hop: extract, repair, decide the parent, sample and rewrite the
//! headers. Pure apart from the in-flight registry and the random number generator.
//!
//! The caller routes first (the rules' first matching rule gives the [`Policy`]) and passes
//! the policy with the rules' template [`Formats`]; the engine knows nothing of the rules file.
//!
//! Steps, in the order [`propagate`] runs them:
//! 1. **policy**: a policy with `trace: false` returns at once and leaves the headers
//!    untouched.
//! 2. **scan**: one pass over the header map finds every trace header of every known dialect.
//! 3. **extract**: dialects in `extract` priority order; the first valid one wins, later valid
//!    ones with another trace id are conflicts; invalid ones count as absent.
//! 4. **decide**: the parent is the extracted span; with none, inbound starts a new root and
//!    outbound applies the orphan policy. New roots are sampled at `root_ratio`, everything
//!    else follows its parent.
//! 5. **inject**: every dialect in `inject` plus every dialect present on the request is
//!    rewritten for the new span; `tracestate` is kept, dropped or restored; `baggage` is
//!    checked against its limits.

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};
use smallvec::SmallVec;

use super::b3::{self, B3Value, MultiHeaders};
use super::context::{Dialect, Parsed, RepairKind, Repairs, TraceContext};
use super::dialect_set::DialectSet;
use super::formats::Formats;
use super::ids::{SpanId, TraceId, id_header_value};
use super::inflight::{Inflight, InflightGuard, InflightSpan};
use super::policy::{OrphanPolicy, Policy};
use super::template::MAX_RENDERED_LEN;
use super::{baggage, jaeger, tracestate, w3c};
use crate::direction::Direction;

/// `traceparent`.
pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub(crate) static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// Single-header B3.
pub(crate) static B3: HeaderName = HeaderName::from_static("b3");
/// Jaeger `uber-trace-id`.
pub(crate) static UBER_TRACE_ID: HeaderName = HeaderName::from_static("uber-trace-id");
/// W3C `baggage`.
pub(crate) static BAGGAGE: HeaderName = HeaderName::from_static("baggage");

/// The identity stitch decided for this hop's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanIdentity {
    /// The trace.
    pub trace_id: TraceId,
    /// The new span of this hop (server span inbound, client span outbound).
    pub span_id: SpanId,
    /// Its parent; `None` for a root (or a trace-only template context).
    pub parent_span_id: Option<SpanId>,
    /// Whether the span is recorded and exported.
    pub sampled: bool,
    /// The parent was inferred from the only in-flight inbound request: the span must carry
    /// `stitch.parent.inferred = true`.
    pub inferred_parent: bool,
}

/// What the orphan policy did with an outbound request that carried no context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrphanOutcome {
    /// Started a new trace.
    NewRoot,
    /// Adopted the only in-flight inbound server span as parent.
    Inferred,
}

impl OrphanOutcome {
    /// Static label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            OrphanOutcome::NewRoot => "new_root",
            OrphanOutcome::Inferred => "inferred",
        }
    }
}

/// Facts and the decided identity for one request hop; the trace layer turns them into a span,
/// metrics and debug logs. Dialect names come from the rules (`dialect_name`).
#[derive(Debug)]
pub struct Outcome {
    /// `false` when a rule said `trace: false`: headers untouched, no span, other fields empty.
    pub trace: bool,
    /// The decided span identity (all-zero when `trace` is false).
    pub span: SpanIdentity,
    /// The dialect the parent context came from.
    pub extracted_dialect: Option<Dialect>,
    /// Repairs lenient mode applied, by dialect and kind.
    pub repairs: SmallVec<[(Dialect, RepairKind); 2]>,
    /// Dialects that disagreed with the winner on the trace id: `(winner, loser)`.
    pub conflicts: SmallVec<[(Dialect, Dialect); 2]>,
    /// Dialects whose headers were present but invalid (treated as absent).
    pub invalid: SmallVec<[Dialect; 2]>,
    /// A `tracestate` was restored from the in-flight inbound request of the same trace.
    pub tracestate_restored: bool,
    /// A `tracestate` was dropped (invalid, over the limits, or without a valid `traceparent`).
    pub tracestate_dropped: bool,
    /// The dropped `tracestate` itself broke its grammar or limits (its `traceparent` was
    /// fine) — an invalid header, as opposed to one dropped with its invalid parent.
    pub tracestate_invalid: bool,
    /// Outbound without any context: what the orphan policy did.
    pub orphan: Option<OrphanOutcome>,
    /// The dialects written on the forwarded request (`inject` plus those present on it).
    pub injected: DialectSet,
    /// `baggage` broke the spec's limits and was removed.
    pub baggage_dropped: bool,
    /// Inbound only: keeps this server span registered until dropped (end of the response).
    pub inflight: Option<InflightGuard>,
}

impl Outcome {
    fn untraced() -> Outcome {
        Outcome {
            trace: false,
            span: SpanIdentity {
                trace_id: TraceId::INVALID,
                span_id: SpanId::INVALID,
                parent_span_id: None,
                sampled: false,
                inferred_parent: false,
            },
            extracted_dialect: None,
            repairs: SmallVec::new(),
            conflicts: SmallVec::new(),
            invalid: SmallVec::new(),
            tracestate_restored: false,
            tracestate_dropped: false,
            tracestate_invalid: false,
            orphan: None,
            injected: DialectSet::default(),
            baggage_dropped: false,
            inflight: None,
        }
    }
}

/// Most template header values tracked inline during a scan before spilling to the heap.
const INLINE_TEMPLATE_HEADERS: usize = 4;

/// Every trace header found on the request, from one pass over the map.
#[derive(Default)]
struct Scan<'a> {
    traceparent: Option<&'a HeaderValue>,
    traceparent_count: u8,
    tracestate: bool,
    b3: Option<&'a HeaderValue>,
    multi: MultiHeaders<'a>,
    uber_trace_id: Option<&'a HeaderValue>,
    baggage: bool,
    templates: SmallVec<[Option<&'a [u8]>; INLINE_TEMPLATE_HEADERS]>,
}

fn first<'a>(slot: &mut Option<&'a [u8]>, value: &'a HeaderValue) {
    if slot.is_none() {
        *slot = Some(value.as_bytes());
    }
}

impl<'a> Scan<'a> {
    fn new(headers: &'a HeaderMap, formats: &Formats) -> Scan<'a> {
        let mut scan = Scan::default();
        scan.templates.resize(formats.header_count(), None);
        for (name, value) in headers {
            match name.as_str() {
                "traceparent" => {
                    scan.traceparent.get_or_insert(value);
                    scan.traceparent_count = scan.traceparent_count.saturating_add(1);
                }
                "tracestate" => scan.tracestate = true,
                "b3" => {
                    scan.b3.get_or_insert(value);
                }
                "x-b3-traceid" => first(&mut scan.multi.trace_id, value),
                "x-b3-spanid" => first(&mut scan.multi.span_id, value),
                "x-b3-parentspanid" => first(&mut scan.multi.parent_span_id, value),
                "x-b3-sampled" => first(&mut scan.multi.sampled, value),
                "x-b3-flags" => first(&mut scan.multi.flags, value),
                "uber-trace-id" => {
                    scan.uber_trace_id.get_or_insert(value);
                }
                "baggage" => scan.baggage = true,
                _ => {
                    if let Some(slot) = formats.slot(name) {
                        first(&mut scan.templates[slot], value);
                    }
                }
            }
        }
        scan
    }

    fn template_present(&self, formats: &Formats, index: usize) -> bool {
        self.templates[formats.slots(index)]
            .iter()
            .any(Option::is_some)
    }
}

/// A dialect's extraction result.
enum Extracted {
    Absent,
    Context(TraceContext, Repairs, Dialect),
    SamplingOnly(bool),
    Invalid(Dialect),
}

fn from_parsed(parsed: Option<Parsed<TraceContext>>, dialect: Dialect) -> Extracted {
    match parsed {
        None => Extracted::Absent,
        Some(Ok((ctx, repairs))) => Extracted::Context(ctx, repairs, dialect),
        Some(Err(e)) => {
            tracing::debug!(dialect = ?dialect, error = %e, "ignored invalid trace header");
            Extracted::Invalid(dialect)
        }
    }
}

fn from_b3(parsed: Parsed<B3Value>, dialect: Dialect) -> Extracted {
    match parsed {
        Ok((B3Value::Context(ctx), repairs)) => Extracted::Context(ctx, repairs, dialect),
        Ok((B3Value::SamplingOnly(sampled), _)) => Extracted::SamplingOnly(sampled),
        Err(e) => {
            tracing::debug!(dialect = ?dialect, error = %e, "ignored invalid trace header");
            Extracted::Invalid(dialect)
        }
    }
}

fn extract_one(
    scan: &Scan<'_>,
    formats: &Formats,
    policy: &Policy,
    dialect: Dialect,
    out: &mut Outcome,
) -> Extracted {
    let mode = policy.repair;
    match dialect {
        Dialect::W3c => {
            if scan.traceparent_count > 1 {
                tracing::debug!(dialect = "w3c", "ignored repeated traceparent");
                return Extracted::Invalid(Dialect::W3c);
            }
            let parsed = scan
                .traceparent
                .map(|v| w3c::parse_traceparent(v.as_bytes(), mode));
            from_parsed(parsed, Dialect::W3c)
        }
        Dialect::B3 | Dialect::B3Multi => {
            if let Some(single) = scan.b3 {
                match from_b3(b3::parse_single(single.as_bytes(), mode), Dialect::B3) {
                    Extracted::Invalid(d) => out.invalid.push(d),
                    valid => return valid,
                }
            }
            match b3::parse_multi(&scan.multi, mode) {
                None => Extracted::Absent,
                Some(parsed) => from_b3(parsed, Dialect::B3Multi),
            }
        }
        Dialect::Jaeger => {
            let parsed = scan
                .uber_trace_id
                .map(|v| jaeger::parse(v.as_bytes(), mode));
            from_parsed(parsed, Dialect::Jaeger)
        }
        Dialect::Template(i) => {
            let index = usize::from(i);
            let Some(format) = formats.as_slice().get(index) else {
                return Extracted::Absent;
            };
            let values = &scan.templates[formats.slots(index)];
            from_parsed(format.parse(values, mode), dialect)
        }
    }
}

/// The winning context and the sampling hint, after every extract dialect was read.
struct Extraction {
    winner: Option<(TraceContext, Dialect)>,
    sampling_hint: Option<bool>,
    /// The trace id of a valid `traceparent`, whoever won (decides whether `tracestate` stays).
    w3c_trace: Option<TraceId>,
    /// The width each 64-bit-capable dialect arrived in, so it is written back in the width
    /// its peer used even when another dialect (e.g. a 128-bit W3C id) won.
    widths: Widths,
}

/// `(trace id, was 64-bit)` of the B3 and Jaeger contexts read, when valid.
#[derive(Debug, Default, Clone, Copy)]
struct Widths {
    b3: Option<(TraceId, bool)>,
    jaeger: Option<(TraceId, bool)>,
}

impl Widths {
    /// `next` with the short-id flag the given dialect's own header had, when it carried the
    /// same trace; otherwise `next` unchanged.
    fn apply(seen: Option<(TraceId, bool)>, next: &TraceContext) -> TraceContext {
        match seen {
            Some((trace_id, short)) if trace_id == next.trace_id => TraceContext {
                short_trace_id: short,
                ..*next
            },
            _ => *next,
        }
    }
}

fn extract(scan: &Scan<'_>, formats: &Formats, policy: &Policy, out: &mut Outcome) -> Extraction {
    let mut ex = Extraction {
        winner: None,
        sampling_hint: None,
        w3c_trace: None,
        widths: Widths::default(),
    };
    let mut b3_done = false;
    for &dialect in &policy.extract {
        if matches!(dialect, Dialect::B3 | Dialect::B3Multi) {
            if b3_done {
                continue;
            }
            b3_done = true;
        }
        match extract_one(scan, formats, policy, dialect, out) {
            Extracted::Absent => {}
            Extracted::Invalid(d) => out.invalid.push(d),
            Extracted::SamplingOnly(sampled) => {
                ex.sampling_hint.get_or_insert(sampled);
            }
            Extracted::Context(ctx, repairs, d) => {
                for kind in repairs.iter() {
                    out.repairs.push((d, kind));
                }
                match d {
                    Dialect::W3c => ex.w3c_trace = Some(ctx.trace_id),
                    Dialect::B3 | Dialect::B3Multi => {
                        ex.widths.b3 = Some((ctx.trace_id, ctx.short_trace_id))
                    }
                    Dialect::Jaeger => ex.widths.jaeger = Some((ctx.trace_id, ctx.short_trace_id)),
                    Dialect::Template(_) => {}
                }
                match ex.winner {
                    None => ex.winner = Some((ctx, d)),
                    Some((won, winner)) if won.trace_id != ctx.trace_id => {
                        tracing::debug!(winner = ?winner, loser = ?d, "trace id conflict between dialects");
                        out.conflicts.push((winner, d));
                    }
                    Some(_) => {}
                }
            }
        }
    }
    ex
}

fn sample_root(ratio: f64) -> bool {
    if ratio >= 1.0 {
        true
    } else if ratio <= 0.0 {
        false
    } else {
        super::ids::random_unit() < ratio
    }
}

/// Picks the parent of this hop: the extracted context, else (outbound) the orphan policy, else
/// a new root. Returns the context to write (its span id is set by the caller) and, for an
/// inferred parent, the `tracestate` its inbound request carried.
fn decide(
    ex: &Extraction,
    direction: Direction,
    policy: &Policy,
    root_ratio: f64,
    inflight: &Inflight,
    out: &mut Outcome,
) -> (TraceContext, Option<HeaderValue>) {
    let mut inherited_tracestate = None;
    let next = match ex.winner {
        Some((ctx, dialect)) => {
            out.extracted_dialect = Some(dialect);
            TraceContext {
                parent_span_id: Some(ctx.span_id).filter(SpanId::is_valid),
                sampled: Some(ctx.sampled.unwrap_or_else(|| sample_root(root_ratio))),
                ..ctx
            }
        }
        None => {
            let inferred = (direction == Direction::Outbound
                && policy.orphans == OrphanPolicy::InferSingleInflight)
                .then(|| inflight.single())
                .flatten();
            match inferred {
                Some(parent) => {
                    out.orphan = Some(OrphanOutcome::Inferred);
                    out.span.inferred_parent = true;
                    inherited_tracestate = parent.tracestate;
                    TraceContext {
                        trace_id: parent.trace_id,
                        span_id: parent.span_id,
                        parent_span_id: Some(parent.span_id),
                        sampled: Some(parent.sampled),
                        debug: false,
                        random: parent.random,
                        short_trace_id: false,
                    }
                }
                None => {
                    if direction == Direction::Outbound {
                        out.orphan = Some(OrphanOutcome::NewRoot);
                    }
                    TraceContext {
                        trace_id: TraceId::random(),
                        span_id: SpanId::INVALID,
                        parent_span_id: None,
                        sampled: Some(ex.sampling_hint.unwrap_or_else(|| sample_root(root_ratio))),
                        debug: false,
                        // stitch made the trace id from random bits: W3C Level 2 random flag.
                        random: true,
                        short_trace_id: false,
                    }
                }
            }
        }
    };
    (next, inherited_tracestate)
}

/// Runs the engine for one request hop under `policy` (the rules' choice for this request)
/// and rewrites `headers` in place. See the module docs for the steps.
pub fn propagate(
    policy: &Policy,
    formats: &Formats,
    direction: Direction,
    inflight: &Inflight,
    headers: &mut HeaderMap,
) -> Outcome {
    propagate_with_root_factor(policy, formats, direction, inflight, headers, 1.0)
}

/// [`propagate`] with the root sampling ratio scaled by `root_factor` — the exporter's
/// adaptive degradation (1.0 healthy, down to 0.01 while the collector keeps failing). Only
/// decisions stitch makes itself (new roots, contexts without a sampling decision) are
/// affected; a parent's decision is always followed, and headers are always written.
pub(crate) fn propagate_with_root_factor(
    policy: &Policy,
    formats: &Formats,
    direction: Direction,
    inflight: &Inflight,
    headers: &mut HeaderMap,
    root_factor: f64,
) -> Outcome {
    if !policy.trace {
        return Outcome::untraced();
    }
    let mut out = Outcome::untraced();
    out.trace = true;

    let scan = Scan::new(headers, formats);
    let ex = extract(&scan, formats, policy, &mut out);
    let present = Present::of(&scan, formats);
    drop(scan);

    let root_ratio = policy.root_ratio * root_factor.clamp(0.0, 1.0);
    let (next, inherited_tracestate) =
        decide(&ex, direction, policy, root_ratio, inflight, &mut out);
    let next = TraceContext {
        span_id: SpanId::random(),
        ..next
    };
    out.span.trace_id = next.trace_id;
    out.span.span_id = next.span_id;
    out.span.parent_span_id = next.parent_span_id;
    out.span.sampled = next.sampled.unwrap_or(false);

    // Inject.
    let writes_w3c = present.w3c || policy.inject.contains(&Dialect::W3c);
    let kept_tracestate = settle_tracestate(headers, &present, &ex, &next, &mut out);
    if writes_w3c && !present.tracestate && direction == Direction::Outbound {
        let restored = inherited_tracestate.or_else(|| inflight.tracestate_of(&next.trace_id));
        if let Some(value) = restored {
            headers.insert(TRACESTATE.clone(), value);
            out.tracestate_restored = true;
        }
    }
    out.injected = write_dialects(formats, policy, &present, &next, ex.widths, headers);

    if present.baggage
        && !baggage::within_limits(headers.get_all(&BAGGAGE).iter().map(HeaderValue::as_bytes))
    {
        headers.remove(&BAGGAGE);
        out.baggage_dropped = true;
    }

    if direction == Direction::Inbound {
        let tracestate = if kept_tracestate {
            joined_tracestate(headers)
        } else {
            None
        };
        out.inflight = inflight.register(InflightSpan {
            trace_id: next.trace_id,
            span_id: next.span_id,
            sampled: out.span.sampled,
            random: next.random,
            tracestate,
        });
    }
    out
}

/// Which dialects were on the request (rewritten even when `inject` does not list them).
struct Present {
    w3c: bool,
    tracestate: bool,
    b3: bool,
    b3multi: bool,
    jaeger: bool,
    baggage: bool,
    /// Bit i: template format i was present (formats past 64 are always rewritten if listed).
    templates: u64,
}

impl Present {
    fn of(scan: &Scan<'_>, formats: &Formats) -> Present {
        let mut templates = 0u64;
        for i in 0..formats.as_slice().len().min(64) {
            if scan.template_present(formats, i) {
                templates |= 1 << i;
            }
        }
        Present {
            w3c: scan.traceparent.is_some(),
            tracestate: scan.tracestate,
            b3: scan.b3.is_some(),
            b3multi: scan.multi.is_present(),
            jaeger: scan.uber_trace_id.is_some(),
            baggage: scan.baggage,
            templates,
        }
    }
}

/// Keeps `tracestate` only with a valid `traceparent` of the trace that won and valid members;
/// otherwise removes it. Returns whether it was kept.
fn settle_tracestate(
    headers: &mut HeaderMap,
    present: &Present,
    ex: &Extraction,
    next: &TraceContext,
    out: &mut Outcome,
) -> bool {
    if !present.tracestate {
        return false;
    }
    let members = if ex.w3c_trace == Some(next.trace_id) {
        tracestate::validate(
            headers
                .get_all(&TRACESTATE)
                .iter()
                .map(HeaderValue::as_bytes),
        )
        .inspect_err(|e| tracing::debug!(dialect = "w3c", error = %e, "dropped invalid tracestate"))
        .ok()
    } else {
        None
    };
    match members {
        Some(0) => {
            // Only empty members: nothing to forward, nothing lost.
            headers.remove(&TRACESTATE);
            false
        }
        Some(_) => true,
        None => {
            headers.remove(&TRACESTATE);
            out.tracestate_dropped = true;
            out.tracestate_invalid = ex.w3c_trace == Some(next.trace_id);
            false
        }
    }
}

/// The `tracestate` to remember for outbound restores: the single line as is (a cheap
/// reference-counted clone), or several lines joined with `,`.
fn joined_tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut lines = headers.get_all(&TRACESTATE).iter();
    let first = lines.next()?;
    let Some(second) = lines.next() else {
        return Some(first.clone());
    };
    let mut joined = first.as_bytes().to_vec();
    for line in std::iter::once(second).chain(lines) {
        joined.push(b',');
        joined.extend_from_slice(line.as_bytes());
    }
    HeaderValue::from_bytes(&joined).ok()
}

fn write_dialects(
    formats: &Formats,
    policy: &Policy,
    present: &Present,
    next: &TraceContext,
    widths: Widths,
    headers: &mut HeaderMap,
) -> DialectSet {
    let mut written = DialectSet::default();
    let b3_ctx = Widths::apply(widths.b3, next);
    let mut wants = |present: bool, d: Dialect| {
        let write = present || policy.inject.contains(&d);
        if write {
            written.insert(d);
        }
        write
    };
    if wants(present.w3c, Dialect::W3c) {
        let mut buf = [0u8; w3c::TRACEPARENT_LEN];
        w3c::write_traceparent(next, &mut buf);
        headers.insert(TRACEPARENT.clone(), id_header_value(&buf));
    }
    if wants(present.b3, Dialect::B3) {
        let mut buf = [0u8; b3::SINGLE_MAX_LEN];
        let len = b3::write_single(&b3_ctx, &mut buf);
        headers.insert(B3.clone(), id_header_value(&buf[..len]));
    }
    if wants(present.b3multi, Dialect::B3Multi) {
        b3::write_multi(&b3_ctx, headers);
    }
    if wants(present.jaeger, Dialect::Jaeger) {
        let mut buf = [0u8; jaeger::MAX_LEN];
        let len = jaeger::write(&Widths::apply(widths.jaeger, next), &mut buf);
        headers.insert(UBER_TRACE_ID.clone(), id_header_value(&buf[..len]));
    }
    for (i, format) in formats.as_slice().iter().enumerate() {
        let was_present = i < 64 && present.templates & (1 << i) != 0;
        let index = u16::try_from(i).unwrap_or(u16::MAX);
        if !wants(was_present, Dialect::Template(index)) {
            continue;
        }
        let mut buf = [0u8; MAX_RENDERED_LEN];
        for header in &format.headers {
            let len = header.write(next, &mut buf);
            headers.insert(header.name.clone(), id_header_value(&buf[..len]));
        }
    }
    written
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
