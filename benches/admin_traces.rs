//! Rendering the `/traces` page (what a browser gets: ring query, integrity verdicts, seam
//! tables, waterfalls and every span's detail) with a full ring of 4096 spans. The issue's
//! budget is 50 ms per page; the shapes:
//!
//! - `demo_chains`: 585 traces shaped like `make demo`'s order chain (7 spans, 4 services,
//!   HTTP and stitch attributes, an inferred parent), listed with the default filters
//!   (20 traces), with `limit=1000` (every trace, up to the page's row budget) and with
//!   `broken=on` (no trace matches, so every trace is checked);
//! - `one_wide_trace`: one trace of 4096 spans (a fan-out of client/server pairs with a few
//!   lost parents), the worst case for per-trace work.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use stitch::admin::traces_html;
use stitch::telemetry::SpanResource;
use stitch::telemetry::config::RingConfig;
use stitch::telemetry::span::{AttrValue, Attribute};
use stitch::telemetry::{SpanKind, SpanRecord, TraceRing};

const RING_SPANS: usize = 4096;

/// A hop's span with the attributes the trace layer records.
#[allow(clippy::too_many_arguments)]
fn span(
    trace: u64,
    id: u64,
    parent: Option<u64>,
    kind: SpanKind,
    path: &'static str,
    start_us: u64,
    len_us: u64,
    seam: (&'static str, &'static str),
) -> SpanRecord {
    let ids = |n: u64| n.to_be_bytes();
    let mut trace_id = [7u8; 16];
    trace_id[8..].copy_from_slice(&trace.to_be_bytes());
    let start = SystemTime::UNIX_EPOCH
        + Duration::from_secs(1_700_000_000)
        + Duration::from_micros(start_us);
    let mut s = SpanRecord::new(trace_id, ids(id), parent.map(ids), kind, "GET", start);
    s.end = start + Duration::from_micros(len_us);
    let attrs: [(&'static str, AttrValue); 11] = [
        ("http.request.method", "GET".into()),
        ("url.path", path.into()),
        ("url.scheme", "http".into()),
        ("http.response.status_code", AttrValue::Int(200)),
        ("server.address", "127.0.0.1".into()),
        ("server.port", AttrValue::Int(17011)),
        ("client.address", "127.0.0.1".into()),
        ("network.protocol.version", "1.1".into()),
        ("user_agent.original", "demo/1".into()),
        ("stitch.propagation.dialect", seam.0.into()),
        ("stitch.propagation.injected", seam.1.into()),
    ];
    for (k, v) in attrs {
        s.set_attr(k, v);
    }
    s
}

fn resource() -> Arc<SpanResource> {
    Arc::new(SpanResource::new(
        [
            ("telemetry.sdk.name", "stitch"),
            ("telemetry.sdk.language", "rust"),
            ("telemetry.sdk.version", "0.1.0"),
            ("k8s.pod.name", "order-7d9f8c-x2x9q"),
        ]
        .into_iter()
        .map(|(k, v)| Attribute {
            key: k.into(),
            value: v.into(),
        })
        .collect(),
    ))
}

/// The demo's order chain: gateway → order → inventory + payment (inferred parent).
fn demo_ring() -> TraceRing {
    let ring = TraceRing::new(RingConfig::default());
    let resource = resource();
    let services: Vec<Arc<str>> = ["gateway", "order", "inventory", "payment"]
        .into_iter()
        .map(Arc::from)
        .collect();
    let mut trace = 0;
    while ring.span_count() < RING_SPANS {
        trace += 1;
        let t = trace * 100;
        let base = trace * 1000;
        let mut payment_call = span(
            trace,
            t + 5,
            Some(t + 3),
            SpanKind::Client,
            "/charge",
            base + 300,
            100,
            ("none", "w3c,jd"),
        );
        payment_call.set_attr("stitch.parent.inferred", true);
        let hops = [
            (
                0,
                span(
                    trace,
                    t + 1,
                    None,
                    SpanKind::Server,
                    "/checkout",
                    base,
                    600,
                    ("none", "w3c"),
                ),
            ),
            (
                0,
                span(
                    trace,
                    t + 2,
                    Some(t + 1),
                    SpanKind::Client,
                    "/orders",
                    base + 20,
                    560,
                    ("w3c", "w3c"),
                ),
            ),
            (
                1,
                span(
                    trace,
                    t + 3,
                    Some(t + 2),
                    SpanKind::Server,
                    "/orders",
                    base + 40,
                    520,
                    ("w3c", "w3c,jd"),
                ),
            ),
            (
                1,
                span(
                    trace,
                    t + 4,
                    Some(t + 3),
                    SpanKind::Client,
                    "/reserve",
                    base + 60,
                    200,
                    ("jd", "w3c,jd"),
                ),
            ),
            (
                2,
                span(
                    trace,
                    t + 6,
                    Some(t + 4),
                    SpanKind::Server,
                    "/reserve",
                    base + 80,
                    150,
                    ("w3c", "w3c,b3,jd"),
                ),
            ),
            (1, payment_call),
            (
                3,
                span(
                    trace,
                    t + 7,
                    Some(t + 5),
                    SpanKind::Server,
                    "/charge",
                    base + 320,
                    60,
                    ("w3c", "w3c,jd"),
                ),
            ),
        ];
        for (service, s) in hops {
            ring.insert_from(&services[service], &resource, [s]);
        }
    }
    ring
}

/// One trace of 4096 spans: a root fanning out to client/server pairs, every 64th server
/// span's parent lost (so the verdict has findings to draw).
fn wide_ring() -> TraceRing {
    let ring = TraceRing::new(RingConfig::default());
    let resource = resource();
    let (front, back): (Arc<str>, Arc<str>) = (Arc::from("front"), Arc::from("back"));
    ring.insert_from(
        &front,
        &resource,
        [span(
            1,
            1,
            None,
            SpanKind::Server,
            "/fan",
            0,
            50_000,
            ("none", "w3c"),
        )],
    );
    let mut id = 1;
    while ring.span_count() < RING_SPANS {
        id += 2;
        let at = id * 10;
        let client = span(
            1,
            id,
            Some(1),
            SpanKind::Client,
            "/part",
            at,
            100,
            ("w3c", "w3c"),
        );
        let parent = if id % 128 == 3 { id + 1_000_000 } else { id };
        let server = span(
            1,
            id + 1,
            Some(parent),
            SpanKind::Server,
            "/part",
            at + 5,
            90,
            ("w3c", "w3c"),
        );
        ring.insert_from(&front, &resource, [client]);
        ring.insert_from(&back, &resource, [server]);
    }
    ring
}

fn bench(c: &mut Criterion) {
    let demo = demo_ring();
    assert_eq!(demo.span_count(), RING_SPANS, "the ring is full");
    let wide = wide_ring();
    assert_eq!(wide.span_count(), RING_SPANS, "the ring is full");
    let cases = [
        ("traces_page/demo_chains/default", &demo, ""),
        ("traces_page/demo_chains/limit_1000", &demo, "limit=1000"),
        ("traces_page/demo_chains/broken_only", &demo, "broken=on"),
        ("traces_page/one_wide_trace/default", &wide, ""),
    ];
    for (name, ring, query) in cases {
        let page = traces_html(ring, query).expect("valid query");
        println!("{name}: {} KiB", page.len() / 1024);
        c.bench_function(name, |b| b.iter(|| traces_html(ring, query)));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
