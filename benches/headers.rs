//! Header rewriting per forwarded message: the hop-by-hop strip a request and a response go
//! through (RFC 9110 §7.6.1), on a message without hop-by-hop fields (the fast path) and on one
//! with `Connection` naming extra fields, `Keep-Alive`, `TE` and `Transfer-Encoding`.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use stitch::proxy::http::headers::{Keep, strip_hop_by_hop};

fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(16);
    for (name, value) in pairs {
        map.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    map
}

fn bench(c: &mut Criterion) {
    let plain = map(&[
        ("host", "orders.shop.svc.cluster.local:8080"),
        ("user-agent", "Go-http-client/1.1"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("content-length", "512"),
        ("x-request-id", "3f2c6a8e-8d1b-4e3c-9a7e-2b9f0c1d4e5f"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ]);
    let mut hop_by_hop = plain.clone();
    for (name, value) in [
        ("connection", "keep-alive, x-internal-hop"),
        ("keep-alive", "timeout=5"),
        ("x-internal-hop", "1"),
        ("te", "trailers"),
        ("transfer-encoding", "chunked"),
    ] {
        hop_by_hop.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    let mut group = c.benchmark_group("strip_hop_by_hop");
    for (name, template) in [("none_present", &plain), ("five_present", &hop_by_hop)] {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || template.clone(),
                |map| strip_hop_by_hop(map, Keep::default()),
                BatchSize::NumIterations(64),
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
