//! The ring's storage: one shard per writer thread, merged when the admin server reads.
//!
//! A span is recorded on the request path by whichever thread ended the hop. With one lock for
//! the whole ring, every worker took the same lock (and pulled its cache line from the last
//! core that held it) once per request. Here each thread has a home shard (a thread-local
//! index, assigned on first use), locked with `try_lock` — another shard when a reader or a
//! second thread holds it — so in the common case a worker only touches its own lock.
//!
//! Bounds stay global: each shard publishes its span count, bytes and oldest arrival stamp in
//! atomics on its own cache line, and an insert that takes the ring over `max_spans` or
//! `max_bytes` evicts the oldest-arrived span — its own shard's, unless another shard holds
//! spans older by more than [`STALE_SLACK_NANOS`] (a worker that went idle): then that shard is
//! drained (`try_lock`; never waited for), so a busy worker borrows the space an idle one no
//! longer uses. Under balanced load the shards' oldest spans are milliseconds apart and each
//! worker evicts only its own, so no cross-shard lock is taken.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Instant;

use smallvec::SmallVec;

use super::config::RingConfig;
use super::ring::{SpanResource, StoredSpan};
use super::span::{SpanId, SpanRecord, TraceId};
use crate::propagation::id_hash::IdHash;

/// Fewest spans a shard is meant to hold: a ring smaller than two of these is one shard, so
/// small rings (tests, `--ring-spans 100`) keep exact oldest-first eviction.
const MIN_SPANS_PER_SHARD: usize = 512;
/// Most shards, whatever the CPU count (readers lock each one).
const MAX_SHARDS: usize = 64;
/// How much older than its own oldest span another shard's oldest must be before an insert
/// evicts there instead of at home: far above the milliseconds between balanced workers, far
/// below the minutes a full ring covers.
const STALE_SLACK_NANOS: u64 = 1_000_000_000;
/// Most spans evicted from another shard per visit (one `try_lock` buys room for many inserts).
pub(crate) const STEAL_BATCH: usize = 64;

/// The spans of one trace held by one shard, grouped when a reader asks.
#[derive(Debug, Default, Clone)]
pub(crate) struct Bucket {
    /// In arrival order.
    pub(crate) spans: SmallVec<[StoredSpan; 2]>,
    /// Arrival stamp of the latest span (nanoseconds since the ring was made, unique within
    /// the shard, comparable across shards).
    pub(crate) last_stamp: u64,
}

/// One shard: its spans in arrival order, nothing else. Grouping by trace is the readers'
/// job: a map kept up to date on the request path (an entry per span, a lookup and a removal
/// per eviction) cost about 500 instructions per request, while a reader scans at most the
/// few thousand spans the byte bound allows.
#[derive(Debug, Default)]
pub(crate) struct Shard {
    /// Oldest first.
    held: VecDeque<Held>,
    bytes: usize,
    last_stamp: u64,
    /// This shard's own copies of the last producer's service name and resource. Every span
    /// stitch records names the sink's one `Arc<str>` and `Arc<SpanResource>`; storing those
    /// clones made every worker increment (and, at eviction, decrement) the same two
    /// reference counts per request — cache lines bouncing between cores. Copies local to
    /// the shard are touched only under its lock; the views read the same text.
    local: Option<LocalProducer>,
}

/// A span in a shard, with what eviction needs.
#[derive(Debug)]
struct Held {
    span: StoredSpan,
    /// What the span was charged against the byte bound.
    bytes: usize,
    /// Arrival stamp (see [`Bucket::last_stamp`]).
    stamp: u64,
}

/// A producer's `service.name` and resource as the caller passed them (compared by
/// address), and the shard's copies stored in their place.
#[derive(Debug)]
struct LocalProducer {
    from: (Arc<str>, Arc<SpanResource>),
    copy: (Arc<str>, Arc<SpanResource>),
}

impl LocalProducer {
    fn of(service: &Arc<str>, resource: &Arc<SpanResource>) -> LocalProducer {
        LocalProducer {
            from: (Arc::clone(service), Arc::clone(resource)),
            copy: (
                Arc::from(&**service),
                Arc::new(SpanResource::clone(resource)),
            ),
        }
    }

    fn matches(&self, service: &Arc<str>, resource: &Arc<SpanResource>) -> bool {
        Arc::ptr_eq(&self.from.0, service) && Arc::ptr_eq(&self.from.1, resource)
    }
}

impl Shard {
    /// The spans of one trace this shard holds, in arrival order.
    pub(crate) fn spans_of<'a>(
        &'a self,
        trace_id: &'a TraceId,
    ) -> impl Iterator<Item = &'a StoredSpan> + 'a {
        self.held
            .iter()
            .filter(move |h| &h.span.span.trace_id == trace_id)
            .map(|h| &h.span)
    }

    /// Every trace this shard holds spans of, with those spans (reference counts copied).
    pub(crate) fn buckets(&self) -> HashMap<TraceId, Bucket, IdHash> {
        let mut buckets: HashMap<TraceId, Bucket, IdHash> = HashMap::default();
        for h in &self.held {
            let bucket = buckets.entry(h.span.span.trace_id).or_default();
            bucket.spans.push(h.span.clone());
            bucket.last_stamp = h.stamp;
        }
        buckets
    }

    /// Appends a span. Duplicates are the caller's to drop: stitch's own spans have fresh
    /// ids, received ones go through [`Shards::retain_unseen`] first.
    fn push(
        &mut self,
        now: u64,
        own: bool,
        service: &Arc<str>,
        resource: &Arc<SpanResource>,
        span: Arc<SpanRecord>,
    ) {
        // Strictly increasing within the shard, so arrival order survives a coarse clock.
        let stamp = now.max(self.last_stamp + 1);
        self.last_stamp = stamp;
        let bytes = span.approx_bytes() + service.len() + resource.approx_bytes();
        // Stitch's own spans (`own`) are stored with the shard's copies of the sink's
        // producer; received spans keep the caller's.
        if own && self.local.is_none() {
            self.local = Some(LocalProducer::of(service, resource));
        }
        let (service, resource) = match &self.local {
            Some(local) if own && local.matches(service, resource) => {
                (Arc::clone(&local.copy.0), Arc::clone(&local.copy.1))
            }
            _ => (Arc::clone(service), Arc::clone(resource)),
        };
        self.held.push_back(Held {
            span: StoredSpan {
                service,
                resource,
                span,
            },
            bytes,
            stamp,
        });
        self.bytes += bytes;
    }

    fn oldest_stamp(&self) -> u64 {
        self.held.front().map_or(u64::MAX, |h| h.stamp)
    }

    /// Drops the oldest-arrived span; false when empty.
    fn evict_oldest(&mut self) -> bool {
        let Some(h) = self.held.pop_front() else {
            return false;
        };
        self.bytes -= h.bytes;
        true
    }

    /// How many spans the shard holds.
    pub(crate) fn span_count(&self) -> usize {
        self.held.len()
    }
}

/// A shard with the figures other writers read without locking it, on its own cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot {
    shard: Mutex<Shard>,
    spans: AtomicUsize,
    bytes: AtomicUsize,
    oldest: AtomicU64,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Shard> {
        // A panic while holding the lock leaves consistent-enough data for a debug view.
        self.shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, shard: &Shard) {
        self.spans.store(shard.span_count(), Ordering::Relaxed);
        self.bytes.store(shard.bytes, Ordering::Relaxed);
        self.oldest.store(shard.oldest_stamp(), Ordering::Relaxed);
    }
}

/// All shards of one ring.
#[derive(Debug)]
pub(crate) struct Shards {
    slots: Box<[Slot]>,
    epoch: Instant,
    /// [`STALE_SLACK_NANOS`], zero in tests that check the global eviction order.
    stale_slack_nanos: u64,
}

thread_local! {
    /// This thread's home shard (modulo the ring's shard count), assigned on first use so the
    /// workers of a runtime spread over the shards.
    static HOME: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed)
    };
}

impl Shards {
    /// Shards for a ring of these bounds: one per CPU stitch may use, fewer for small rings.
    pub(crate) fn new(config: &RingConfig) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Shards::with_count(cpus.min(config.max_spans / MIN_SPANS_PER_SHARD))
    }

    /// Exactly `count` shards (at least one, at most [`MAX_SHARDS`]).
    pub(crate) fn with_count(count: usize) -> Self {
        let count = count.clamp(1, MAX_SHARDS);
        let slots = (0..count)
            .map(|_| Slot {
                oldest: AtomicU64::new(u64::MAX),
                ..Slot::default()
            })
            .collect();
        Shards {
            slots,
            epoch: Instant::now(),
            stale_slack_nanos: STALE_SLACK_NANOS,
        }
    }

    /// The same shards where any span older than a shard's oldest counts as stale: eviction
    /// is then oldest-first across shards, exactly (tests).
    #[cfg(test)]
    pub(crate) fn without_slack(mut self) -> Self {
        self.stale_slack_nanos = 0;
        self
    }

    /// Locks each shard in turn, for the readers (never more than one lock held at a time).
    pub(crate) fn each<T>(&self, mut f: impl FnMut(&Shard) -> T) -> Vec<T> {
        self.slots.iter().map(|s| f(&s.lock())).collect()
    }

    /// Drops from `spans` those the ring already holds, and repeats within `spans` (spans
    /// received over OTLP may be copies of stitch's own, recorded by any thread): one scan of
    /// each shard, one lock at a time.
    pub(crate) fn retain_unseen(&self, spans: &mut Vec<Arc<SpanRecord>>) {
        let mut unseen: HashSet<(TraceId, SpanId)> = HashSet::with_capacity(spans.len());
        spans.retain(|s| unseen.insert((s.trace_id, s.span_id)));
        for slot in self.slots.iter() {
            if unseen.is_empty() {
                break;
            }
            let shard = slot.lock();
            for h in &shard.held {
                unseen.remove(&(h.span.span.trace_id, h.span.span.span_id));
            }
        }
        spans.retain(|s| unseen.contains(&(s.trace_id, s.span_id)));
    }

    /// Inserts spans of one producer into the calling thread's shard (or the first free one),
    /// then evicts until the ring's bounds hold. `own`: stitch's own spans, from its sink.
    pub(crate) fn insert<I>(
        &self,
        config: &RingConfig,
        own: bool,
        service: &Arc<str>,
        resource: &Arc<SpanResource>,
        spans: I,
    ) where
        I: IntoIterator<Item = Arc<SpanRecord>>,
    {
        let (home, mut shard) = self.lock_home();
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        for span in spans {
            shard.push(now, own, service, resource, span);
        }
        self.evict(home, &mut shard, config);
        self.slots[home].publish(&shard);
    }

    /// The calling thread's shard, or — when a reader or another thread holds it — the first
    /// other shard free right now; waits only when every shard is busy.
    fn lock_home(&self) -> (usize, MutexGuard<'_, Shard>) {
        let n = self.slots.len();
        let home = HOME.with(|h| *h) % n;
        for i in 0..n {
            let idx = (home + i) % n;
            match self.slots[idx].shard.try_lock() {
                Ok(guard) => return (idx, guard),
                Err(TryLockError::Poisoned(p)) => return (idx, p.into_inner()),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        (home, self.slots[home].lock())
    }

    fn evict(&self, own: usize, shard: &mut Shard, config: &RingConfig) {
        loop {
            let (mut spans, mut bytes) = (shard.span_count(), shard.bytes);
            // The oldest span elsewhere, if it is stale next to this shard's oldest.
            let mut stale: Option<(usize, u64)> = None;
            let own_oldest = shard.oldest_stamp();
            for (i, slot) in self.slots.iter().enumerate() {
                if i == own {
                    continue;
                }
                spans += slot.spans.load(Ordering::Relaxed);
                bytes += slot.bytes.load(Ordering::Relaxed);
                let oldest = slot.oldest.load(Ordering::Relaxed);
                if oldest.saturating_add(self.stale_slack_nanos) < own_oldest
                    && stale.is_none_or(|(_, o)| oldest < o)
                {
                    stale = Some((i, oldest));
                }
            }
            if spans <= config.max_spans && bytes <= config.max_bytes {
                return;
            }
            if let Some((i, _)) = stale
                && self.evict_stale(i, own_oldest)
            {
                continue;
            }
            if !shard.evict_oldest() {
                return;
            }
            self.slots[own].publish(shard);
        }
    }

    /// Evicts up to [`STEAL_BATCH`] stale spans from shard `i` if it is free right now.
    /// A batch, not one span: the room it makes serves the next inserts without another visit.
    fn evict_stale(&self, i: usize, own_oldest: u64) -> bool {
        let slot = &self.slots[i];
        let Ok(mut other) = slot.shard.try_lock() else {
            return false;
        };
        let mut evicted = 0;
        while evicted < STEAL_BATCH
            && other.oldest_stamp().saturating_add(self.stale_slack_nanos) < own_oldest
        {
            if !other.evict_oldest() {
                break;
            }
            evicted += 1;
        }
        slot.publish(&other);
        evicted > 0
    }
}
