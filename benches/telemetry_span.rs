//! Cost of what the trace layer adds per request: building a span from the request head,
//! finishing it, and handing it to the sink (which, with no endpoint, inserts it into the
//! ring right away and evicts the oldest span once the ring is full).

use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Request, StatusCode};
use stitch::telemetry::semconv::RequestFacts;
use stitch::telemetry::{SpanKind, SpanRecord, Telemetry, TelemetryConfig};

fn span_from_head(parts: &http::request::Parts, n: u64) -> SpanRecord {
    let mut trace_id = [7u8; 16];
    trace_id[8..].copy_from_slice(&n.to_be_bytes());
    let mut span = SpanRecord::for_request(
        trace_id,
        [1; 8],
        Some([2; 8]),
        SpanKind::Server,
        &RequestFacts::from_parts(parts),
        SystemTime::now(),
    );
    span.record_response_head(StatusCode::OK, &HeaderMap::new());
    span.finish(SystemTime::now())
}

fn bench(c: &mut Criterion) {
    let (parts, _) = Request::get("http://orders:8080/orders/42")
        .header("user-agent", "bench/1")
        .body(())
        .expect("request")
        .into_parts();
    let mut n = 0u64;
    c.bench_function("span_build_and_finish", |b| {
        b.iter(|| {
            n += 1;
            span_from_head(&parts, n)
        })
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let telemetry = rt.block_on(async { Telemetry::start(TelemetryConfig::default()) });
    let sink = telemetry.sink();
    c.bench_function("span_build_finish_and_record_ring_only", |b| {
        b.iter(|| {
            n += 1;
            sink.record(span_from_head(&parts, n));
        })
    });
    rt.block_on(telemetry.shutdown(std::time::Duration::from_secs(5)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
