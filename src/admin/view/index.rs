//! One trace, indexed once for drawing: each span's facts, where each span id sits, each
//! span's children and the verdict's findings per span. Built in one pass (hash maps, no
//! pairwise scans), so a trace of thousands of spans indexes in well under a millisecond.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use super::facts::Facts;
use crate::telemetry::integrity::Finding;
use crate::telemetry::ring::{StoredSpan, TraceDetail};
use crate::telemetry::span::{SpanId, from_hex};

/// What the verdict says about one span.
#[derive(Debug, Clone)]
pub(super) struct Note {
    /// Breaks the trace (informational notes, such as an inferred parent, do not).
    pub(super) defect: bool,
    /// Badge text: `missing parent`, `clock skew`, `extra root`, `inferred parent`.
    pub(super) label: &'static str,
    /// The finding in a sentence.
    pub(super) text: String,
}

/// A trace ready to draw.
pub(super) struct TraceIndex<'a> {
    /// The trace.
    pub(super) detail: &'a TraceDetail,
    /// Facts of `detail.spans[i]`.
    pub(super) facts: Vec<Facts<'a>>,
    /// Position of a span id in `detail.spans`.
    pub(super) position: HashMap<SpanId, usize>,
    /// Children (positions, by start time) of a span id.
    pub(super) children: HashMap<SpanId, Vec<usize>>,
    /// Findings per span.
    pub(super) notes: HashMap<SpanId, Vec<Note>>,
    /// Earliest start.
    pub(super) start: SystemTime,
    /// First start to last end (never zero, so it can divide).
    pub(super) length: Duration,
}

impl<'a> TraceIndex<'a> {
    /// Indexes `detail` (its spans are ordered by start time).
    pub(super) fn new(detail: &'a TraceDetail) -> Self {
        let spans = &detail.spans;
        let mut position = HashMap::with_capacity(spans.len());
        for (i, s) in spans.iter().enumerate() {
            position.entry(s.span.span_id).or_insert(i);
        }
        let mut children: HashMap<SpanId, Vec<usize>> = HashMap::new();
        for (i, s) in spans.iter().enumerate() {
            if let Some(parent) = s.span.parent_span_id
                && parent != s.span.span_id
                && position.contains_key(&parent)
            {
                children.entry(parent).or_default().push(i);
            }
        }
        let start = spans
            .iter()
            .map(|s| s.span.start)
            .min()
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let end = spans.iter().map(|s| s.span.end).max().unwrap_or(start);
        TraceIndex {
            detail,
            facts: spans.iter().map(Facts::of).collect(),
            position,
            children,
            notes: notes(&detail.verdict.findings),
            start,
            length: end
                .duration_since(start)
                .unwrap_or_default()
                .max(Duration::from_nanos(1)),
        }
    }

    /// The spans.
    pub(super) fn spans(&self) -> &'a [StoredSpan] {
        &self.detail.spans
    }

    /// The span at `position`'s parent, when it is in the trace.
    pub(super) fn parent_of(&self, position: usize) -> Option<usize> {
        let parent = self.spans()[position].span.parent_span_id?;
        self.position.get(&parent).copied()
    }

    /// The verdict's notes on a span.
    pub(super) fn notes_of(&self, position: usize) -> &[Note] {
        self.notes
            .get(&self.spans()[position].span.span_id)
            .map_or(&[], Vec::as_slice)
    }

    /// Positions in depth-first order from the roots (and from spans whose parent is missing),
    /// each with its depth; children by start time. Spans only reachable through a parent
    /// cycle (possible in received data) come last, at depth 0.
    pub(super) fn tree_order(&self) -> Vec<(usize, usize)> {
        let spans = self.spans();
        let mut out = Vec::with_capacity(spans.len());
        let mut stack: Vec<(usize, usize)> = (0..spans.len())
            .rev()
            .filter(|&i| {
                let s = &spans[i].span;
                !s.parent_span_id
                    .is_some_and(|p| p != s.span_id && self.position.contains_key(&p))
            })
            .map(|i| (i, 0))
            .collect();
        let mut seen = HashSet::with_capacity(spans.len());
        while let Some((i, depth)) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            out.push((i, depth));
            if let Some(kids) = self.children.get(&spans[i].span.span_id) {
                stack.extend(kids.iter().rev().map(|&k| (k, depth + 1)));
            }
        }
        out.extend(
            (0..spans.len())
                .filter(|i| !seen.contains(i))
                .map(|i| (i, 0)),
        );
        out
    }
}

/// The findings, per span id; `multiple_roots` becomes an `extra root` note on each root.
fn notes(findings: &[Finding]) -> HashMap<SpanId, Vec<Note>> {
    let mut notes: HashMap<SpanId, Vec<Note>> = HashMap::new();
    let mut add = |id: &str, defect, label, text: String| {
        if let Some(id) = from_hex::<8>(id) {
            notes.entry(id).or_default().push(Note {
                defect,
                label,
                text,
            });
        }
    };
    for f in findings {
        match f {
            Finding::MissingParent {
                span_id,
                parent_span_id,
            } => add(
                span_id,
                true,
                "missing parent",
                format!("parent {parent_span_id} never arrived"),
            ),
            Finding::MultipleRoots { root_span_ids } => {
                for id in root_span_ids {
                    let text = format!("one of {} roots: the chain was cut", root_span_ids.len());
                    add(id, true, "extra root", text);
                }
            }
            Finding::ChildBeforeParent {
                span_id,
                parent_span_id,
                skew_us,
            } => add(
                span_id,
                true,
                "clock skew",
                format!("starts {skew_us} µs before its parent {parent_span_id}"),
            ),
            Finding::InferredParent { span_id } => add(
                span_id,
                false,
                "inferred parent",
                "parent inferred: the only request in flight".to_owned(),
            ),
        }
    }
    notes
}

/// A finding in a sentence, for the list under a trace's heading.
pub(super) fn describe(f: &Finding) -> String {
    match f {
        Finding::MissingParent {
            span_id,
            parent_span_id,
        } => format!("span {span_id}: parent {parent_span_id} never arrived"),
        Finding::MultipleRoots { root_span_ids } => {
            format!(
                "{} roots: {}",
                root_span_ids.len(),
                root_span_ids.join(", ")
            )
        }
        Finding::ChildBeforeParent {
            span_id,
            parent_span_id,
            skew_us,
        } => format!("span {span_id} starts {skew_us} µs before its parent {parent_span_id}"),
        Finding::InferredParent { span_id } => format!("span {span_id}: parent inferred"),
    }
}
