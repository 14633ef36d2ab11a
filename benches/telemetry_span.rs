//! Cost of what the trace layer adds per request: building a span from the request head,
//! finishing it, and handing it to the sink (which, with no endpoint, inserts it into the
//! ring right away and evicts the oldest span once the ring is full). The `trace_layer_*`
//! cases run the whole layer (rules, propagation, span attributes, metrics, ring) around an
//! inner service that answers at once: once with the built-in rules and a W3C caller, once
//! at a template seam (the demo's order service: `jd` in the rules, a W3C caller).

use std::convert::Infallible;
use std::path::Path;
use std::time::SystemTime;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use stitch::config::{RulesHandle, parse_rules};
use stitch::direction::Direction;
use stitch::propagation::Inflight;
use stitch::telemetry::semconv::RequestFacts;
use stitch::telemetry::{SpanKind, SpanRecord, Telemetry, TelemetryConfig};
use stitch::trace::{ConnInfo, TraceHandles, TraceLayer};
use tower::{Layer, Service};

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

    let demo_order_rules = "extract: [w3c, b3, jaeger, jd]\ninject: [jd]\nformats:\n  jd:\n    headers:\n      jd-trace-id: \"t-{trace_id}-{span_id}-{flags}\"\n";
    for (name, rules) in [
        ("trace_layer_w3c_default_rules", ""),
        ("trace_layer_template_seam", demo_order_rules),
    ] {
        let rules = parse_rules(rules, Path::new("bench.yaml")).expect("rules");
        let layer = TraceLayer::new(
            TraceHandles {
                rules: RulesHandle::new(rules),
                inflight: Inflight::default(),
                sink: telemetry.sink(),
                metrics: telemetry.metrics(),
                record_query: false,
            },
            ConnInfo {
                direction: Direction::Inbound,
                client: "127.0.0.1:50000".parse().expect("address"),
                destination_port: Some(8080),
                http2: false,
            },
        );
        let mut service = layer.layer(tower::service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }));
        // A trace of its own per request, as real traffic has (one trace growing to thousands
        // of spans would measure the ring's per-trace bookkeeping instead).
        let callers: Vec<HeaderValue> = (0..8192u32)
            .map(|n| {
                let value = format!("00-0af7651916cd43dd8448eb21{n:08x}-b7ad6b7169203331-01");
                HeaderValue::from_str(&value).expect("traceparent")
            })
            .collect();
        let mut next = callers.iter().cycle();
        c.bench_function(name, |b| {
            b.iter(|| {
                let req = Request::get("http://orders:8080/orders/42")
                    .header("user-agent", "bench/1")
                    .header("traceparent", next.next().expect("endless").clone())
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                let response = futures::executor::block_on(service.call(req)).expect("response");
                // Reading the body to its end ends the hop: the span reaches the ring.
                futures::executor::block_on(response.into_body().collect()).expect("body")
            })
        });
    }
    rt.block_on(telemetry.shutdown(std::time::Duration::from_secs(5)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
