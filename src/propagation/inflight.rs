//! The registry of in-flight inbound server spans, shared by both directions of one stitch.
//!
//! Outbound requests consult it to restore a `tracestate` the app dropped and, with
//! `orphans: infer_single_inflight`, to adopt the only in-flight server span as parent. A std
//! `Mutex` is enough: the critical sections are a hash-map insert/remove, never held across an
//! await. The registry is bounded; past `capacity`, new requests are simply not registered
//! (tracing degrades, traffic does not).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

use http::HeaderValue;

use super::ids::{SpanId, TraceId};

/// Default bound on registered in-flight requests.
pub(crate) const DEFAULT_CAPACITY: usize = 65_536;

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

/// Trace ids are mostly random already, so a keyed multiply-xor fold is enough and several
/// times cheaper than SipHash on the request path. The per-registry random key keeps
/// upstream-chosen ids from being aimed at one bucket.
#[derive(Debug, Clone, Copy)]
struct TraceIdHash {
    key: u64,
}

impl Default for TraceIdHash {
    fn default() -> Self {
        TraceIdHash {
            key: RandomState::new().hash_one(0u64) | 1,
        }
    }
}

impl BuildHasher for TraceIdHash {
    type Hasher = FoldHasher;
    fn build_hasher(&self) -> FoldHasher {
        FoldHasher(self.key)
    }
}

#[derive(Debug)]
struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0 ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(29);
        }
    }

    fn write_usize(&mut self, _length_prefix: usize) {}

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
}

#[derive(Debug, Default)]
struct State {
    by_trace: HashMap<TraceId, Slot, TraceIdHash>,
    len: usize,
    next_key: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
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
                state: Mutex::new(State::default()),
                capacity,
            }),
        }
    }

    /// Registers an inbound server span; `None` when the registry is full.
    pub(crate) fn register(&self, span: InflightSpan) -> Option<InflightGuard> {
        let mut state = self.shared.lock();
        if state.len >= self.shared.capacity {
            return None;
        }
        let key = state.next_key;
        state.next_key = state.next_key.wrapping_add(1);
        state.len += 1;
        let trace_id = span.trace_id;
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
        Some(InflightGuard {
            shared: Arc::clone(&self.shared),
            trace_id,
            key,
        })
    }

    /// The `tracestate` of an in-flight inbound request of `trace_id`: the first of them that
    /// has one, in the slot's order (not arrival order: a release moves the latest entry up).
    pub(crate) fn tracestate_of(&self, trace_id: &TraceId) -> Option<HeaderValue> {
        let state = self.shared.lock();
        let slot = state.by_trace.get(trace_id)?;
        std::iter::once(&slot.first)
            .chain(&slot.rest)
            .find_map(|e| e.span.tracestate.clone())
    }

    /// The in-flight span when exactly one inbound request is in flight.
    pub fn single(&self) -> Option<InflightSpan> {
        let state = self.shared.lock();
        if state.len != 1 {
            return None;
        }
        state
            .by_trace
            .values()
            .next()
            .map(|slot| slot.first.span.clone())
    }

    /// How many inbound requests are registered.
    pub fn len(&self) -> usize {
        self.shared.lock().len
    }

    /// True when none is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the map inconsistent in a way that
        // matters more than losing tracing, so keep serving with the inner state.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let State { by_trace, len, .. } = &mut *state;
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
        *len -= 1;
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
}
