//! The in-memory trace ring: the embedded default that needs no collector.
//!
//! Spans (stitch's own, and those received on `POST /v1/traces`) are kept in arrival order,
//! bounded by span count and approximate bytes; the oldest-arrived span is evicted first.
//! The storage is sharded by writer thread ([`super::ring_shards`]): the request path
//! appends to its own thread's shard (when a hop ends: a push and at most a few evictions
//! from the front) without a lock every worker shares; the admin views lock one shard at a
//! time, copy out the `Arc`s they need (grouped by trace id as they go), merge the shards'
//! pieces of each trace and do their sorting, grouping and integrity checks after releasing
//! the locks.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::config::RingConfig;
use super::integrity::{self, Finding, Verdict};
use super::ring_shards::{Bucket, Shard, Shards};
use super::span::{Attribute, SpanRecord, TraceId};

/// A span in the ring, with the resource that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSpan {
    /// `service.name` from the producer's resource.
    pub service: Arc<str>,
    /// The producer's other resource attributes, shared by all its spans (the trace view
    /// shows them in the span's detail).
    pub resource: Arc<SpanResource>,
    /// The span itself, shared with the export batch when exporting.
    pub span: Arc<SpanRecord>,
}

/// Resource attributes of a span producer other than `service.name` (SDK, host, Kubernetes,
/// `OTEL_RESOURCE_ATTRIBUTES`). Each span in the ring is charged their size, so a producer
/// with a huge resource fills the byte bound sooner instead of escaping it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SpanResource {
    attributes: Vec<Attribute>,
    approx_bytes: usize,
}

impl SpanResource {
    /// A resource of these attributes.
    pub fn new(attributes: Vec<Attribute>) -> Self {
        let approx_bytes = attributes
            .iter()
            .map(|a| a.key.len() + a.value.approx_bytes() + 32)
            .sum();
        SpanResource {
            attributes,
            approx_bytes,
        }
    }

    /// What each span of this producer is charged against the ring's byte bound.
    pub(crate) fn approx_bytes(&self) -> usize {
        self.approx_bytes
    }

    /// The attributes, in the producer's order.
    pub fn attributes(&self) -> &[Attribute] {
        &self.attributes
    }
}

/// Which traces `/traces` lists.
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    /// Only traces with at least one span of this service.
    pub service: Option<String>,
    /// Only traces with (`Some(true)`) or without (`Some(false)`) an error span.
    pub error: Option<bool>,
    /// Only traces at least this long (first start to last end).
    pub min_duration: Option<Duration>,
    /// Only traces whose integrity verdict is not clean.
    pub broken: bool,
    /// Only traces where stitch repaired a header or restored a `tracestate`.
    pub repaired: bool,
    /// Only traces with a span whose parent was inferred.
    pub inferred_parent: bool,
    /// At most this many traces (newest first).
    pub limit: usize,
}

/// One line of the trace list.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSummary {
    /// The trace id.
    pub trace_id: TraceId,
    /// The earliest root span's name (or the earliest span's, if no root arrived).
    pub root_name: String,
    /// That span's service.
    pub root_service: String,
    /// Every service seen in the trace, sorted.
    pub services: Vec<String>,
    /// Spans held for the trace.
    pub span_count: usize,
    /// Earliest start.
    pub start: SystemTime,
    /// Earliest start to latest end.
    pub duration: Duration,
    /// Whether any span has status Error.
    pub error: bool,
    /// The integrity verdict's `clean`.
    pub clean: bool,
    /// A span carries repairs or a restored `tracestate`.
    pub repaired: bool,
    /// A span's parent was inferred.
    pub inferred_parent: bool,
}

/// One trace: its spans by start time, and its integrity verdict.
#[derive(Debug, Clone)]
pub struct TraceDetail {
    /// The trace id.
    pub trace_id: TraceId,
    /// Spans ordered by start time.
    pub spans: Vec<StoredSpan>,
    /// What is wrong with the trace's shape, if anything.
    pub verdict: Verdict,
}

/// Shared handle to the ring. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct TraceRing {
    shards: Arc<Shards>,
    config: RingConfig,
    no_resource: Arc<SpanResource>,
}

impl TraceRing {
    /// An empty ring with these bounds, sharded by writer thread (one shard per CPU stitch may
    /// use; one for small rings).
    pub fn new(config: RingConfig) -> Self {
        TraceRing::with_shards(Shards::new(&config), config)
    }

    /// An empty ring of exactly `count` shards (tests of the merged views).
    #[cfg(test)]
    pub(crate) fn with_shard_count(config: RingConfig, count: usize) -> Self {
        TraceRing::with_shards(Shards::with_count(count).without_slack(), config)
    }

    fn with_shards(shards: Shards, config: RingConfig) -> Self {
        TraceRing {
            shards: Arc::new(shards),
            config,
            no_resource: Arc::default(),
        }
    }

    /// Records one of stitch's own finished spans into the calling thread's shard: no lock
    /// shared with other workers in the common case. Its span id is fresh, so only that
    /// shard is checked for a duplicate (a copy received back over OTLP arrives later and is
    /// caught by [`TraceRing::insert_from`]).
    pub(crate) fn record(
        &self,
        service: &Arc<str>,
        resource: &Arc<SpanResource>,
        span: Arc<SpanRecord>,
    ) {
        self.shards
            .insert(&self.config, true, service, resource, [span]);
    }

    /// Adds spans of one service. A span id already held for its trace is ignored (stitch
    /// may receive its own spans back when exporting to itself).
    pub fn insert<I>(&self, service: &Arc<str>, spans: I)
    where
        I: IntoIterator,
        I::Item: Into<Arc<SpanRecord>>,
    {
        self.insert_from(service, &self.no_resource, spans);
    }

    /// [`TraceRing::insert`] with the producer's other resource attributes. Every shard is
    /// checked for duplicates (one lock at a time): O(shards) per span.
    pub fn insert_from<I>(&self, service: &Arc<str>, resource: &Arc<SpanResource>, spans: I)
    where
        I: IntoIterator,
        I::Item: Into<Arc<SpanRecord>>,
    {
        let mut spans: Vec<Arc<SpanRecord>> = spans.into_iter().map(Into::into).collect();
        self.shards.retain_unseen(&mut spans);
        if !spans.is_empty() {
            self.shards
                .insert(&self.config, false, service, resource, spans);
        }
    }

    /// The most spans the ring keeps.
    pub fn capacity(&self) -> usize {
        self.config.max_spans
    }

    /// How many spans the ring holds.
    pub fn span_count(&self) -> usize {
        self.shards.each(Shard::span_count).into_iter().sum()
    }

    /// Traces, most recently updated first, filtered.
    pub fn recent(&self, query: &TraceQuery) -> Vec<TraceSummary> {
        let mut buckets = self.merged_buckets();
        buckets.sort_by_key(|b| std::cmp::Reverse(b.1.last_stamp));
        buckets
            .iter()
            .filter_map(|(id, b)| self.summarise(*id, b))
            .filter(|s| {
                query
                    .service
                    .as_ref()
                    .is_none_or(|svc| s.services.iter().any(|x| x == svc))
                    && query.error.is_none_or(|e| s.error == e)
                    && query.min_duration.is_none_or(|d| s.duration >= d)
                    && (!query.broken || !s.clean)
                    && (!query.repaired || s.repaired)
                    && (!query.inferred_parent || s.inferred_parent)
            })
            .take(query.limit)
            .collect()
    }

    /// One trace with its verdict.
    pub fn trace(&self, trace_id: &TraceId) -> Option<TraceDetail> {
        let mut spans: Vec<StoredSpan> = Vec::new();
        self.shards.each(|shard| {
            for span in shard.spans_of(trace_id) {
                // A copy received back over OTLP may sit in another shard.
                if !spans.iter().any(|s| s.span.span_id == span.span.span_id) {
                    spans.push(span.clone());
                }
            }
        });
        // Stitch's own spans keep their hop facts until read: the views get attributes.
        for stored in &mut spans {
            if stored.span.hop.is_some() {
                stored.span = Arc::new(stored.span.materialized());
            }
        }
        if spans.is_empty() {
            return None;
        }
        spans.sort_by_key(|s| s.span.start);
        let verdict = integrity::check(
            spans.iter().map(|s| &*s.span),
            self.config.clock_skew_tolerance,
        );
        Some(TraceDetail {
            trace_id: *trace_id,
            spans,
            verdict,
        })
    }

    /// Every trace's buckets merged over the shards: copied out one shard at a time
    /// (reference counts only), so the sorting, grouping and integrity checks run unlocked.
    fn merged_buckets(&self) -> Vec<(TraceId, Bucket)> {
        let mut per_shard = self
            .shards
            .each(|shard| shard.buckets().into_iter().collect::<Vec<_>>());
        if per_shard.len() == 1 {
            return per_shard.pop().unwrap_or_default();
        }
        let mut merged: HashMap<TraceId, Bucket> = HashMap::new();
        for (id, bucket) in per_shard.into_iter().flatten() {
            match merged.entry(id) {
                Entry::Vacant(v) => {
                    v.insert(bucket);
                }
                Entry::Occupied(mut o) => {
                    let held = o.get_mut();
                    held.last_stamp = held.last_stamp.max(bucket.last_stamp);
                    for span in bucket.spans {
                        if !held
                            .spans
                            .iter()
                            .any(|s| s.span.span_id == span.span.span_id)
                        {
                            held.spans.push(span);
                        }
                    }
                }
            }
        }
        merged.into_iter().collect()
    }

    fn summarise(&self, trace_id: TraceId, bucket: &Bucket) -> Option<TraceSummary> {
        let first = bucket.spans.iter().min_by_key(|s| s.span.start)?;
        let root = bucket
            .spans
            .iter()
            .filter(|s| s.span.parent_span_id.is_none())
            .min_by_key(|s| s.span.start)
            .unwrap_or(first);
        let start = first.span.start;
        let end = bucket
            .spans
            .iter()
            .map(|s| s.span.end)
            .max()
            .unwrap_or(start);
        let mut services: Vec<String> =
            bucket.spans.iter().map(|s| s.service.to_string()).collect();
        services.sort();
        services.dedup();
        let verdict = integrity::check(
            bucket.spans.iter().map(|s| &*s.span),
            self.config.clock_skew_tolerance,
        );
        Some(TraceSummary {
            trace_id,
            root_name: root.span.name.to_string(),
            root_service: root.service.to_string(),
            services,
            span_count: bucket.spans.len(),
            start,
            duration: end.duration_since(start).unwrap_or_default(),
            error: bucket.spans.iter().any(|s| s.span.status.is_error()),
            clean: verdict.clean,
            repaired: bucket.spans.iter().any(|s| s.span.repaired()),
            inferred_parent: verdict
                .findings
                .iter()
                .any(|f| matches!(f, Finding::InferredParent { .. })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::ring_shards::STEAL_BATCH;
    use crate::telemetry::span::{SpanKind, SpanStatus};

    fn span(trace: u8, id: u8, parent: Option<u8>, start_ms: u64, dur_ms: u64) -> SpanRecord {
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis(start_ms);
        let mut s = SpanRecord::new(
            [trace; 16],
            [id; 8],
            parent.map(|p| [p; 8]),
            SpanKind::Server,
            "GET",
            start,
        );
        s.end = start + Duration::from_millis(dur_ms);
        s
    }

    fn ring(max_spans: usize) -> TraceRing {
        TraceRing::new(RingConfig {
            max_spans,
            ..RingConfig::default()
        })
    }

    fn all() -> TraceQuery {
        TraceQuery {
            limit: 100,
            ..TraceQuery::default()
        }
    }

    #[test]
    fn groups_by_trace_newest_first() {
        let r = ring(100);
        let a: Arc<str> = Arc::from("a");
        r.insert(&a, [span(1, 1, None, 0, 10), span(2, 1, None, 0, 10)]);
        r.insert(&a, [span(1, 2, Some(1), 1, 5)]);
        let list = r.recent(&all());
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].trace_id, [1; 16], "trace 1 was updated last");
        assert_eq!(list[0].span_count, 2);
        assert_eq!(r.trace(&[1; 16]).expect("trace held").spans.len(), 2);
    }

    #[test]
    fn evicts_oldest_spans_beyond_count_and_bytes() {
        let r = ring(3);
        let a: Arc<str> = Arc::from("a");
        for i in 0..5u8 {
            r.insert(&a, [span(i, 1, None, 0, 1)]);
        }
        assert_eq!(r.span_count(), 3);
        assert!(r.trace(&[0; 16]).is_none());
        assert!(r.trace(&[4; 16]).is_some());

        let small = TraceRing::new(RingConfig {
            max_bytes: span(0, 0, None, 0, 0).approx_bytes() * 2 + 10,
            ..RingConfig::default()
        });
        for i in 0..5u8 {
            small.insert(&a, [span(i, 1, None, 0, 1)]);
        }
        assert_eq!(small.span_count(), 2);
    }

    #[test]
    fn duplicate_span_ids_are_ignored() {
        let r = ring(10);
        let a: Arc<str> = Arc::from("a");
        r.insert(&a, [span(1, 1, None, 0, 1)]);
        r.insert(&a, [span(1, 1, None, 0, 1)]);
        assert_eq!(r.span_count(), 1);
        // Repeated within one received batch: the first copy is kept.
        r.insert(&a, [span(2, 1, None, 0, 1), span(2, 1, None, 0, 2)]);
        assert_eq!(r.span_count(), 2);
        // One of stitch's own spans received back over OTLP.
        r.record(&a, &Arc::default(), Arc::new(span(3, 1, None, 0, 1)));
        r.insert(&a, [span(3, 1, None, 0, 1)]);
        assert_eq!(r.span_count(), 3);
        assert_eq!(r.trace(&[3; 16]).expect("held").spans.len(), 1);
    }

    #[test]
    fn filters_by_service_status_and_duration() {
        let r = ring(100);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        r.insert(&a, [span(1, 1, None, 0, 100)]);
        let mut failed = span(2, 1, None, 0, 5);
        failed.status = SpanStatus::Error {
            description: "HTTP 500".into(),
        };
        r.insert(&b, [failed]);
        let q = |f: fn(&mut TraceQuery)| {
            let mut q = all();
            f(&mut q);
            r.recent(&q)
                .into_iter()
                .map(|s| s.trace_id[0])
                .collect::<Vec<_>>()
        };
        assert_eq!(q(|q| q.service = Some("b".into())), vec![2]);
        assert_eq!(q(|q| q.error = Some(true)), vec![2]);
        assert_eq!(q(|q| q.error = Some(false)), vec![1]);
        assert_eq!(
            q(|q| q.min_duration = Some(Duration::from_millis(50))),
            vec![1]
        );
        assert_eq!(q(|q| q.limit = 1).len(), 1);

        // A repaired trace with an inferred parent, and one whose parent never arrived.
        let mut repaired = span(3, 2, Some(1), 1, 1);
        repaired.set_attr(
            crate::telemetry::semconv::STITCH_PROPAGATION_REPAIRS,
            "b3:upper_case_hex",
        );
        repaired.set_attr(crate::telemetry::semconv::STITCH_PARENT_INFERRED, true);
        r.insert(&a, [span(3, 1, None, 0, 5), repaired]);
        r.insert(&a, [span(4, 2, Some(9), 0, 5)]);
        assert_eq!(q(|q| q.repaired = true), vec![3]);
        assert_eq!(q(|q| q.inferred_parent = true), vec![3]);
        assert_eq!(
            q(|q| q.broken = true),
            vec![4],
            "an inferred parent is not a break"
        );
    }

    /// Runs `f` on a thread of its own (and so, usually, another home shard) and waits.
    fn on_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().expect("writer thread");
    }

    #[test]
    fn shards_written_by_several_threads_read_as_one_ring() {
        let sharded = TraceRing::with_shard_count(RingConfig::default(), 4);
        let single = TraceRing::with_shard_count(RingConfig::default(), 1);
        let a: Arc<str> = Arc::from("a");
        // Trace 1's three spans come from three threads; a received copy of one is ignored.
        let writes: Vec<(u8, u8, Option<u8>, u64)> = vec![
            (1, 1, None, 0),
            (2, 1, None, 1),
            (1, 2, Some(1), 2),
            (3, 1, None, 3),
            (1, 3, Some(2), 4),
        ];
        for ring in [&sharded, &single] {
            for &(trace, id, parent, start) in &writes {
                let (ring, a) = (ring.clone(), Arc::clone(&a));
                on_thread(move || {
                    let s = Arc::new(span(trace, id, parent, start, 10));
                    ring.record(&a, &Arc::default(), s);
                });
            }
            ring.insert(&a, [span(1, 2, Some(1), 2, 10)]);
        }
        assert_eq!(sharded.span_count(), 5);
        let ids = |r: &TraceRing| {
            r.recent(&all())
                .iter()
                .map(|s| (s.trace_id[0], s.span_count, s.root_name.clone(), s.clean))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&sharded), ids(&single), "same list, same order");
        assert_eq!(ids(&sharded)[0].0, 1, "trace 1 was updated last");
        let detail = sharded.trace(&[1; 16]).expect("trace 1");
        assert_eq!(
            detail
                .spans
                .iter()
                .map(|s| s.span.span_id[0])
                .collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(
            detail.verdict,
            single.trace(&[1; 16]).expect("trace 1").verdict
        );
    }

    #[test]
    fn sharded_ring_keeps_the_total_bound_and_evicts_the_oldest_anywhere() {
        let r = TraceRing::with_shard_count(
            RingConfig {
                max_spans: 1000,
                ..RingConfig::default()
            },
            4,
        );
        let a: Arc<str> = Arc::from("a");
        let writers: Vec<_> = (0..4u8)
            .map(|t| {
                let (r, a) = (r.clone(), Arc::clone(&a));
                std::thread::spawn(move || {
                    for i in 0..5000u32 {
                        let mut s = span(t, 1, None, 0, 1);
                        s.trace_id[4..8].copy_from_slice(&i.to_be_bytes());
                        r.record(&a, &Arc::default(), Arc::new(s));
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        let held = r.span_count();
        assert!(
            (1000 - 4 * STEAL_BATCH..=1000).contains(&held),
            "held {held}"
        );

        // A later writer's spans replace the older ones, wherever those are.
        let later = r.clone();
        on_thread(move || {
            for i in 0..1000u32 {
                let mut s = span(9, 1, None, 0, 1);
                s.trace_id[4..8].copy_from_slice(&i.to_be_bytes());
                later.record(&a, &Arc::default(), Arc::new(s));
            }
        });
        let list = r.recent(&TraceQuery {
            limit: 2000,
            ..all()
        });
        assert!(list.len() <= 1000);
        assert!(
            list.iter().all(|s| s.trace_id[0] == 9),
            "only the newest writer's spans are left"
        );
    }

    #[test]
    fn resources_are_kept_per_span_and_charged_to_the_byte_bound() {
        let plain = ring(100);
        let a: Arc<str> = Arc::from("a");
        let resource = Arc::new(SpanResource::new(vec![Attribute {
            key: "host.name".into(),
            value: "x".repeat(4096).into(),
        }]));
        plain.insert_from(&a, &resource, [span(1, 1, None, 0, 1)]);
        let held = plain.trace(&[1; 16]).expect("held");
        assert_eq!(held.spans[0].resource.attributes()[0].key, "host.name");

        let small = TraceRing::new(RingConfig {
            max_bytes: 3 * 4096,
            ..RingConfig::default()
        });
        for i in 0..5u8 {
            small.insert_from(&a, &resource, [span(i, 1, None, 0, 1)]);
        }
        assert_eq!(small.span_count(), 2, "each span is charged its resource");
    }

    #[test]
    fn own_spans_share_the_shards_copy_of_the_producer_not_the_callers() {
        let ring = ring(100);
        let a: Arc<str> = Arc::from("svc");
        let resource = Arc::new(SpanResource::new(vec![Attribute {
            key: "host.name".into(),
            value: "h".into(),
        }]));
        for i in 0..10u8 {
            ring.record(&a, &resource, Arc::new(span(i, 1, None, 0, 1)));
        }
        // The shard keeps one clone of each as the key of its copies, whatever the count.
        assert_eq!(Arc::strong_count(&a), 2);
        assert_eq!(Arc::strong_count(&resource), 2);
        let held = ring.trace(&[3; 16]).expect("held");
        assert_eq!(&*held.spans[0].service, "svc");
        assert_eq!(held.spans[0].resource.attributes(), resource.attributes());
        // Received spans keep the producer they came with.
        let b: Arc<str> = Arc::from("other");
        ring.insert_from(&b, &resource, [span(20, 1, None, 0, 1)]);
        let held = ring.trace(&[20; 16]).expect("held");
        assert!(Arc::ptr_eq(&held.spans[0].service, &b));
    }
}
