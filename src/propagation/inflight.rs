//! The registry of in-flight inbound server spans, shared by both directions of one stitch.
//!
//! Outbound requests consult it to restore a `tracestate` the app dropped and, with
//! `orphans: infer_single_inflight`, to adopt the only in-flight server span as parent. Every
//! worker registers its inbound requests here and an outbound request on any worker must see
//! them, so the registry is shared — but not behind one lock: entries live in
//! [`SHARDS`] shards chosen by trace id, each a std `Mutex` on its own cache line (critical
//! sections are a hash-map insert/remove, never held across an await), and the count of
//! registered entries is one atomic. Two workers then take the same lock only when their
//! requests' trace ids fall in the same shard, instead of on every request. The registry is
//! bounded; past `capacity`, new requests are simply not registered (tracing degrades,
//! traffic does not).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use http::HeaderValue;

use super::id_hash::IdHash;
use super::ids::{SpanId, TraceId};

/// Default bound on registered in-flight requests.
pub(crate) const DEFAULT_CAPACITY: usize = 65_536;

/// How many shards: well above the few workers a sidecar runs, so two requests in flight at
/// once rarely share a lock; small enough that `single` (which visits every shard, only for
/// orphaned outbound requests under `infer_single_inflight`) stays cheap.
pub(crate) const SHARDS: usize = 16;

/// One in-flight inbound server span.
#[derive(Debug, Clone)]
pub struct InflightSpan {
    /// Its trace.
    pub trace_id: TraceId,
    /// The server span stitch opened for it (the app's parent).
    pub span_id: SpanId,
    /// Its sampling decision.
    pub sampled: bool,
    /// Whether its trace id carries the W3C Level 2 random flag.
    pub random: bool,
    /// The `tracestate` it arrived with, if any (kept byte for byte).
    pub tracestate: Option<HeaderValue>,
}

#[derive(Debug)]
struct Entry {
    key: u64,
    span: InflightSpan,
}

/// Several inbound requests of one trace may be in flight at once; almost always one, so the
/// first lives inline and the rest in a `Vec` that never allocates in the common case.
#[derive(Debug)]
struct Slot {
    first: Entry,
    rest: Vec<Entry>,
}

/// The entries of the trace ids that hash to one shard. All entries of a trace are in the
/// same shard, so a key only needs to be unique within its shard.
#[derive(Debug, Default)]
struct State {
    by_trace: HashMap<TraceId, Slot, IdHash>,
    next_key: u64,
}

/// One shard's lock, alone on its cache line(s) so that workers using different shards do
/// not pull the same line back and forth.
#[derive(Debug, Default)]
#[repr(align(128))]
struct ShardLock(Mutex<State>);

#[derive(Debug)]
struct Shared {
    shards: [ShardLock; SHARDS],
    /// Picks the shard of a trace id (keyed, like the maps' hasher).
    pick: IdHash,
    /// Registered entries over all shards: the bound, `len` and `single`'s test.
    len: AtomicUsize,
    capacity: usize,
}

/// The shared registry; cheap to clone.
#[derive(Debug, Clone)]
pub struct Inflight {
    shared: Arc<Shared>,
}

impl Default for Inflight {
    fn default() -> Self {
        Inflight::new(DEFAULT_CAPACITY)
    }
}

/// Keeps a server span registered; dropping it (when the inbound response ends) unregisters.
#[derive(Debug)]
pub struct InflightGuard {
    shared: Arc<Shared>,
    trace_id: TraceId,
    key: u64,
}

impl Inflight {
    /// A registry holding at most `capacity` in-flight requests.
    pub fn new(capacity: usize) -> Inflight {
        Inflight {
            shared: Arc::new(Shared {
                shards: Default::default(),
                pick: IdHash::default(),
                len: AtomicUsize::new(0),
                capacity,
            }),
        }
    }

    /// Registers an inbound server span; `None` when the registry is full.
    pub(crate) fn register(&self, span: InflightSpan) -> Option<InflightGuard> {
        // Claim room first: concurrent registrations can never exceed the bound together.
        if self.shared.len.fetch_add(1, Ordering::Relaxed) >= self.shared.capacity {
            self.shared.len.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let trace_id = span.trace_id;
        let mut state = self.shared.lock(&trace_id);
        let key = state.next_key;
        state.next_key = state.next_key.wrapping_add(1);
        let entry = Entry { key, span };
        match state.by_trace.get_mut(&trace_id) {
            Some(slot) => slot.rest.push(entry),
            None => {
                state.by_trace.insert(
                    trace_id,
                    Slot {
                        first: entry,
                        rest: Vec::new(),
                    },
                );
            }
        }
        drop(state);
        Some(InflightGuard {
            shared: Arc::clone(&self.shared),
            trace_id,
            key,
        })
    }

    /// The `tracestate` of an in-flight inbound request of `trace_id`: the first of them that
    /// has one, in the slot's order (not arrival order: a release moves the latest entry up).
    pub(crate) fn tracestate_of(&self, trace_id: &TraceId) -> Option<HeaderValue> {
        let state = self.shared.lock(trace_id);
        let slot = state.by_trace.get(trace_id)?;
        std::iter::once(&slot.first)
            .chain(&slot.rest)
            .find_map(|e| e.span.tracestate.clone())
    }

    /// The in-flight span when exactly one inbound request is in flight. Under concurrent
    /// registrations this is a snapshot, as a single lock's answer was: the count is read
    /// first, so two requests in flight are never reported as one.
    pub fn single(&self) -> Option<InflightSpan> {
        if self.shared.len.load(Ordering::Relaxed) != 1 {
            return None;
        }
        self.shared.shards.iter().find_map(|shard| {
            let state = lock(shard);
            state
                .by_trace
                .values()
                .next()
                .map(|slot| slot.first.span.clone())
        })
    }

    /// How many inbound requests are registered.
    pub fn len(&self) -> usize {
        self.shared.len.load(Ordering::Relaxed)
    }

    /// True when none is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock(shard: &ShardLock) -> MutexGuard<'_, State> {
    // A panic while holding this lock cannot leave the map inconsistent in a way that
    // matters more than losing tracing, so keep serving with the inner state.
    shard
        .0
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// The shard holding `trace_id`'s entries, locked.
    fn lock(&self, trace_id: &TraceId) -> MutexGuard<'_, State> {
        // The high bits: the maps inside use the low ones of their own hash.
        let index = (self.pick.hash_one(trace_id) >> 32) as usize % SHARDS;
        lock(&self.shards[index])
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut state = self.shared.lock(&self.trace_id);
        let State { by_trace, .. } = &mut *state;
        let Some(slot) = by_trace.get_mut(&self.trace_id) else {
            return;
        };
        if slot.first.key == self.key {
            match slot.rest.pop() {
                // The latest remaining entry moves up (an O(1) pop); entries of one trace share
                // the trace id, so any of them serves `single` and `tracestate_of`.
                Some(next) => slot.first = next,
                None => {
                    by_trace.remove(&self.trace_id);
                }
            }
        } else if let Some(i) = slot.rest.iter().position(|e| e.key == self.key) {
            slot.rest.swap_remove(i);
        } else {
            return;
        }
        drop(state);
        self.shared.len.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(trace: u8, span: u8, tracestate: Option<&'static str>) -> InflightSpan {
        InflightSpan {
            trace_id: TraceId([trace; 16]),
            span_id: SpanId([span; 8]),
            sampled: true,
            random: false,
            tracestate: tracestate.map(HeaderValue::from_static),
        }
    }

    #[test]
    fn registers_and_unregisters() {
        let inflight = Inflight::new(8);
        let a = inflight.register(span(1, 1, Some("a=1"))).expect("room");
        assert_eq!(inflight.single().map(|s| s.span_id), Some(SpanId([1; 8])));
        let b = inflight.register(span(1, 2, None)).expect("room");
        assert_eq!(inflight.len(), 2);
        assert!(
            inflight.single().is_none(),
            "two in flight: no single parent"
        );
        assert_eq!(
            inflight.tracestate_of(&TraceId([1; 16])),
            Some(HeaderValue::from_static("a=1"))
        );
        drop(a);
        assert_eq!(inflight.single().map(|s| s.span_id), Some(SpanId([2; 8])));
        assert_eq!(inflight.tracestate_of(&TraceId([1; 16])), None);
        drop(b);
        assert!(inflight.is_empty());
        assert!(inflight.single().is_none());
    }

    #[test]
    fn bounded() {
        let inflight = Inflight::new(2);
        let _a = inflight.register(span(1, 1, None)).expect("room");
        let _b = inflight.register(span(2, 2, None)).expect("room");
        assert!(inflight.register(span(3, 3, None)).is_none());
        assert_eq!(inflight.len(), 2);
    }

    #[test]
    fn unregisters_out_of_order_within_a_trace() {
        let inflight = Inflight::new(8);
        let a = inflight.register(span(1, 1, None)).expect("room");
        let b = inflight.register(span(1, 2, None)).expect("room");
        let c = inflight.register(span(1, 3, Some("c=3"))).expect("room");
        drop(b);
        assert_eq!(inflight.len(), 2);
        drop(a);
        assert_eq!(inflight.single().map(|s| s.span_id), Some(SpanId([3; 8])));
        drop(c);
        assert!(inflight.is_empty());
    }

    #[test]
    fn shards_share_one_count_and_one_bound() {
        // Trace ids over every shard, registered from several threads at once: the count and
        // the bound hold across shards, and each trace's entries are found again.
        let inflight = Inflight::new(200);
        let guards: Vec<Vec<InflightGuard>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4u8)
                .map(|t| {
                    let inflight = &inflight;
                    scope.spawn(move || {
                        (0..64u8)
                            .filter_map(|i| {
                                let mut id = [t; 16];
                                id[0] = i;
                                inflight.register(InflightSpan {
                                    trace_id: TraceId(id),
                                    span_id: SpanId([i; 8]),
                                    sampled: true,
                                    random: false,
                                    tracestate: Some(HeaderValue::from_static("k=v")),
                                })
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("no panic"))
                .collect()
        });
        let registered: usize = guards.iter().map(Vec::len).sum();
        assert_eq!(registered, 200, "256 tried, the bound admits exactly 200");
        assert_eq!(inflight.len(), 200);
        for guard in guards.iter().flatten() {
            assert!(inflight.tracestate_of(&guard.trace_id).is_some());
        }
        let mut guards: Vec<InflightGuard> = guards.into_iter().flatten().collect();
        let last = guards.pop().expect("one left");
        drop(guards);
        assert_eq!(inflight.len(), 1);
        assert_eq!(
            inflight.single().map(|s| s.trace_id),
            Some(last.trace_id),
            "the one left is found whichever shard holds it"
        );
        drop(last);
        assert!(inflight.is_empty());
        assert!(inflight.single().is_none());
    }
}
