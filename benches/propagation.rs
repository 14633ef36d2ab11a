//! Extract + decide + inject for a typical request (8 ordinary headers + `traceparent` + a
//! 3-member `tracestate`; W3C in, W3C + one template out), against the stock OpenTelemetry SDK
//! `TraceContextPropagator` doing the same W3C rewrite (extract, new child span id, inject).
//!
//! A second group runs the same rewrite with each dialect in turn as the one the request
//! carries (written back as W3C, B3 single and multi, Jaeger and the `jd` template).
//!
//! Besides criterion's figures, `main` prints ns/request measured over pre-built header maps
//! and allocations/request counted by a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use criterion::{BatchSize, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;

use stitch::config::{CompiledRules, parse_rules};
use stitch::direction::Direction;
use stitch::propagation::{Inflight, propagate};

/// Counts heap allocations so the bench can report allocations per request.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// A counting allocator needs `unsafe impl GlobalAlloc`; this is the only unsafe code, in the
// bench binary only.
#[allow(unsafe_code)]
// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract is exactly `System`'s; the counter is a relaxed atomic increment.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc`/`realloc` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const RULES: &str = r#"
inject: [w3c, jd]
formats:
  jd:
    headers:
      jd-trace-id: "t-{trace_id}-{span_id}-{flags}"
"#;

/// A request head as hyper hands it over: values are slices of one shared read buffer, so
/// cloning a value is a reference-count increment.
fn typical_headers() -> HeaderMap {
    let pairs = [
        ("host", "orders.shop.svc.cluster.local:8080"),
        ("user-agent", "Go-http-client/1.1"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip"),
        ("content-type", "application/json"),
        ("content-length", "512"),
        ("x-request-id", "3f2c6a8e-8d1b-4e3c-9a7e-2b9f0c1d4e5f"),
        (
            "authorization",
            "Bearer eyJhbGciOiJIUzI1NiJ9.e30.ZRrHA1JJJW8opsbCGfG_HACGpVUMN_a9IV7pAx_Zmeo",
        ),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        (
            "tracestate",
            "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,vendor@tenant=opaque-value",
        ),
    ];
    let buffer = Bytes::from(pairs.iter().map(|(_, v)| *v).collect::<Vec<_>>().concat());
    let mut map = HeaderMap::with_capacity(16);
    let mut offset = 0;
    for (name, value) in pairs {
        let slice = buffer.slice(offset..offset + value.len());
        offset += value.len();
        map.append(
            HeaderName::from_static(name),
            HeaderValue::from_maybe_shared(slice).expect("valid value"),
        );
    }
    map
}

fn stitch_once(
    rules: &CompiledRules,
    inflight: &Inflight,
    map: &mut HeaderMap,
    direction: Direction,
) {
    // Routing and the engine, as the trace layer runs them per request.
    let policy = rules.policy_for(
        direction,
        Some("orders.shop.svc.cluster.local:8080"),
        "/api/orders/42",
        &Method::GET,
    );
    let outcome = propagate(policy, rules.formats(), direction, inflight, map);
    black_box(&outcome);
}

struct Extract<'a>(&'a HeaderMap);

impl Extractor for Extract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct Inject<'a>(&'a mut HeaderMap);

impl Injector for Inject<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The SDK's W3C rewrite: extract the caller, make a child span context with a new random span
/// id, inject it.
fn otel_once(propagator: &TraceContextPropagator, map: &mut HeaderMap) {
    let parent = propagator.extract(&Extract(map));
    let remote = parent.span().span_context().clone();
    let child = SpanContext::new(
        remote.trace_id(),
        SpanId::from_bytes(rand::random::<u64>().max(1).to_be_bytes()),
        remote.trace_flags(),
        false,
        remote.trace_state().clone(),
    );
    let cx = Context::new().with_remote_span_context(child);
    propagator.inject_context(&cx, &mut Inject(map));
    black_box(&cx);
}

/// ns/request (median and best round, this machine is shared) and allocations/request of `f`,
/// over rounds of pre-built header maps (the clones are made outside the timed and counted
/// region).
fn measure(mut f: impl FnMut(&mut HeaderMap)) -> (f64, f64, f64) {
    // Small rounds: with hundreds of maps alive, glibc hands the growing header tables fresh,
    // not-yet-faulted pages (it trims freed memory between rounds), and page faults would
    // dominate; a proxy's allocator is warm.
    const ROUNDS: usize = 3000;
    const PER_ROUND: usize = 32;
    let template = typical_headers();
    let mut round_ns = Vec::with_capacity(ROUNDS);
    let mut allocations = 0u64;
    for round in 0..ROUNDS + 10 {
        let mut maps: Vec<HeaderMap> = (0..PER_ROUND).map(|_| template.clone()).collect();
        let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
        let start = Instant::now();
        for map in &mut maps {
            f(map);
        }
        let took = start.elapsed().as_nanos();
        let allocated = ALLOCATIONS.load(Ordering::Relaxed) - allocations_before;
        // The first rounds warm caches, thread-local RNGs and the in-flight map's capacity.
        if round >= 10 {
            round_ns.push(took as f64 / PER_ROUND as f64);
            allocations += allocated;
        }
        black_box(&maps);
    }
    round_ns.sort_by(f64::total_cmp);
    let n = (ROUNDS * PER_ROUND) as f64;
    (round_ns[ROUNDS / 2], round_ns[0], allocations as f64 / n)
}

/// Rules for the per-dialect group: every dialect is read, each one in turn is the one present,
/// and the context is written in W3C and in the peer's own dialect.
const DIALECT_RULES: &str = r#"
extract: [w3c, b3, jaeger, jd]
inject: [w3c, b3, b3multi, jaeger, jd]
formats:
  jd:
    headers:
      jd-trace-id: "t-{trace_id}-{span_id}-{flags}"
"#;

/// The typical request with its trace headers replaced by one dialect's.
fn headers_in(dialect: &str) -> HeaderMap {
    let mut map = typical_headers();
    map.remove("traceparent");
    map.remove("tracestate");
    let (trace, span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let pairs: Vec<(&str, String)> = match dialect {
        "w3c" => vec![("traceparent", format!("00-{trace}-{span}-01"))],
        "b3" => vec![("b3", format!("{trace}-{span}-1"))],
        "b3multi" => vec![
            ("x-b3-traceid", trace.to_owned()),
            ("x-b3-spanid", span.to_owned()),
            ("x-b3-sampled", "1".to_owned()),
        ],
        "jaeger" => vec![("uber-trace-id", format!("{trace}:{span}:0:1"))],
        _ => vec![("jd-trace-id", format!("t-{trace}-{span}-01"))],
    };
    for (name, value) in pairs {
        map.insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).expect("valid value"),
        );
    }
    map
}

fn criterion_benches(c: &mut Criterion) {
    let dialect_rules = parse_rules(DIALECT_RULES, Path::new("bench.yaml")).expect("valid rules");
    let inflight = Inflight::default();
    let mut group = c.benchmark_group("extract_inject_by_dialect");
    for dialect in ["w3c", "b3", "b3multi", "jaeger", "jd"] {
        let template = headers_in(dialect);
        group.bench_function(dialect, |b| {
            b.iter_batched_ref(
                || template.clone(),
                |map| stitch_once(&dialect_rules, &inflight, map, Direction::Outbound),
                BatchSize::NumIterations(32),
            )
        });
    }
    group.finish();

    let rules = parse_rules(RULES, Path::new("bench.yaml")).expect("valid rules");
    let propagator = TraceContextPropagator::new();
    let template = typical_headers();
    let mut group = c.benchmark_group("typical_request");
    group.bench_function("stitch_outbound", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |map| stitch_once(&rules, &inflight, map, Direction::Outbound),
            BatchSize::NumIterations(32),
        )
    });
    group.bench_function("stitch_inbound", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |map| stitch_once(&rules, &inflight, map, Direction::Inbound),
            BatchSize::NumIterations(32),
        )
    });
    group.bench_function("otel_sdk_w3c", |b| {
        b.iter_batched_ref(
            || template.clone(),
            |map| otel_once(&propagator, map),
            BatchSize::NumIterations(32),
        )
    });
    group.finish();
}

fn main() {
    // `cargo test --all-targets` runs this binary without `--bench`: criterion then runs each
    // benchmark once as a smoke test, and the long manual measurement is skipped.
    if std::env::args().any(|a| a == "--bench") {
        report_per_request_figures();
    } else {
        check_allocation_budget();
    }
    let mut criterion = Criterion::default().configure_from_args();
    criterion_benches(&mut criterion);
    criterion.final_summary();
}

/// The issue's budget: at most 3 allocations per typical request, in both directions (checked
/// in `cargo test` runs too, so a regression fails CI).
fn check_allocation_budget() {
    let rules = parse_rules(RULES, Path::new("bench.yaml")).expect("valid rules");
    let inflight = Inflight::default();
    for direction in [Direction::Outbound, Direction::Inbound] {
        let template = typical_headers();
        let mut maps: Vec<HeaderMap> = (0..64).map(|_| template.clone()).collect();
        stitch_once(&rules, &inflight, &mut template.clone(), direction);
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for map in &mut maps {
            stitch_once(&rules, &inflight, map, direction);
        }
        let per_request = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / 64.0;
        assert!(
            per_request <= 3.0,
            "{direction}: {per_request} allocations per request"
        );
        println!("{direction}: {per_request:.2} allocations per request (budget 3)");
    }
}

/// Prints ns/request, allocations/request and the ratio to the SDK baseline.
fn report_per_request_figures() {
    let rules = parse_rules(RULES, Path::new("bench.yaml")).expect("valid rules");
    let inflight = Inflight::default();
    let propagator = TraceContextPropagator::new();
    let (out_ns, out_best, out_allocs) =
        measure(|m| stitch_once(&rules, &inflight, m, Direction::Outbound));
    let (in_ns, in_best, in_allocs) =
        measure(|m| stitch_once(&rules, &inflight, m, Direction::Inbound));
    let (otel_ns, otel_best, otel_allocs) = measure(|m| otel_once(&propagator, m));
    println!("per request: median round / best round, allocations");
    println!("stitch outbound: {out_ns:.0} / {out_best:.0} ns, {out_allocs:.2} allocations");
    println!(
        "stitch inbound (+ in-flight registry): {in_ns:.0} / {in_best:.0} ns, {in_allocs:.2} allocations"
    );
    println!(
        "otel_sdk TraceContextPropagator (W3C only): {otel_ns:.0} / {otel_best:.0} ns, {otel_allocs:.2} allocations"
    );
    println!(
        "otel_sdk / stitch (median): outbound {:.1}x, inbound {:.1}x",
        otel_ns / out_ns,
        otel_ns / in_ns
    );
}
