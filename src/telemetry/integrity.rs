//! The trace-integrity checker: what is wrong with the shape of one trace.
//!
//! Findings, per span set of one trace id:
//! - `missing_parent`: a span names a parent that never arrived (a hop is missing or
//!   untraced);
//! - `multiple_roots`: more than one span has no parent (the chain was cut and restarted);
//! - `child_before_parent`: a child starts earlier than its parent by more than the
//!   clock-skew tolerance (clocks disagree, or the parent link is wrong);
//! - `inferred_parent`: the parent was inferred by the orphan policy (informational: the
//!   link is a guess, marked so it is never silent).
//!
//! A trace is `clean` when it has no finding other than informational ones.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use super::span::{SpanId, SpanRecord, to_hex};

/// One thing wrong (or notable) about a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// `span_id` names `parent_span_id`, which is not in the trace.
    MissingParent {
        /// The orphaned span (hex).
        span_id: String,
        /// The parent that never arrived (hex).
        parent_span_id: String,
    },
    /// More than one span has no parent.
    MultipleRoots {
        /// The roots (hex), earliest first.
        root_span_ids: Vec<String>,
    },
    /// A child starts before its parent by more than the tolerance.
    ChildBeforeParent {
        /// The child (hex).
        span_id: String,
        /// Its parent (hex).
        parent_span_id: String,
        /// How much earlier, in microseconds.
        skew_us: u64,
    },
    /// The parent was inferred by the orphan policy.
    InferredParent {
        /// The span whose parent is a guess (hex).
        span_id: String,
    },
}

impl Finding {
    /// Whether the finding breaks the trace (informational ones do not).
    pub(crate) fn is_defect(&self) -> bool {
        !matches!(self, Finding::InferredParent { .. })
    }

    /// The span the finding is about, for marking it in the waterfall.
    pub fn span_id(&self) -> Option<&str> {
        match self {
            Finding::MissingParent { span_id, .. }
            | Finding::ChildBeforeParent { span_id, .. }
            | Finding::InferredParent { span_id } => Some(span_id),
            Finding::MultipleRoots { .. } => None,
        }
    }
}

/// The integrity verdict of one trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// No defect found.
    pub clean: bool,
    /// Everything found, defects and informational notes.
    pub findings: Vec<Finding>,
}

/// Checks one trace's spans (any order).
pub(crate) fn check<'a>(
    spans: impl IntoIterator<Item = &'a SpanRecord>,
    skew_tolerance: Duration,
) -> Verdict {
    let mut spans: Vec<&SpanRecord> = spans.into_iter().collect();
    spans.sort_by_key(|s| s.start);
    // An index, not a scan per span: a trace of thousands of spans stays linear.
    let mut by_id: HashMap<SpanId, &SpanRecord> = HashMap::with_capacity(spans.len());
    for s in &spans {
        by_id.entry(s.span_id).or_insert(s);
    }
    let find = |id: &SpanId| by_id.get(id);
    let mut findings = Vec::new();
    let mut roots = Vec::new();
    for span in &spans {
        match span.parent_span_id {
            None => roots.push(to_hex(&span.span_id)),
            Some(parent_id) => match find(&parent_id) {
                None => findings.push(Finding::MissingParent {
                    span_id: to_hex(&span.span_id),
                    parent_span_id: to_hex(&parent_id),
                }),
                Some(parent) => {
                    if let Ok(early) = parent.start.duration_since(span.start)
                        && early > skew_tolerance
                    {
                        findings.push(Finding::ChildBeforeParent {
                            span_id: to_hex(&span.span_id),
                            parent_span_id: to_hex(&parent_id),
                            skew_us: u64::try_from(early.as_micros()).unwrap_or(u64::MAX),
                        });
                    }
                }
            },
        }
        if span.parent_inferred() {
            findings.push(Finding::InferredParent {
                span_id: to_hex(&span.span_id),
            });
        }
    }
    if roots.len() > 1 {
        findings.push(Finding::MultipleRoots {
            root_span_ids: roots,
        });
    }
    Verdict {
        clean: !findings.iter().any(Finding::is_defect),
        findings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::span::SpanKind;
    use std::time::SystemTime;

    fn span(id: u8, parent: Option<u8>, start_ms: u64) -> SpanRecord {
        let start = SystemTime::UNIX_EPOCH + Duration::from_millis(start_ms);
        let mut s = SpanRecord::new(
            [9; 16],
            [id; 8],
            parent.map(|p| [p; 8]),
            SpanKind::Server,
            "GET",
            start,
        );
        s.end = start + Duration::from_millis(10);
        s
    }

    const TOL: Duration = Duration::from_millis(5);

    #[test]
    fn clean_chain_has_no_findings() {
        let spans = [span(1, None, 0), span(2, Some(1), 1), span(3, Some(2), 2)];
        let v = check(&spans, TOL);
        assert!(v.clean);
        assert!(v.findings.is_empty());
    }

    #[test]
    fn missing_hop_is_reported() {
        let spans = [span(1, None, 0), span(3, Some(2), 2)];
        let v = check(&spans, TOL);
        assert!(!v.clean);
        assert_eq!(
            v.findings,
            vec![Finding::MissingParent {
                span_id: to_hex(&[3; 8]),
                parent_span_id: to_hex(&[2; 8]),
            }]
        );
    }

    #[test]
    fn inverted_timestamp_beyond_tolerance_is_reported_within_is_not() {
        let v = check(&[span(1, None, 100), span(2, Some(1), 90)], TOL);
        assert_eq!(
            v.findings,
            vec![Finding::ChildBeforeParent {
                span_id: to_hex(&[2; 8]),
                parent_span_id: to_hex(&[1; 8]),
                skew_us: 10_000,
            }]
        );
        assert!(check(&[span(1, None, 100), span(2, Some(1), 97)], TOL).clean);
    }

    #[test]
    fn two_roots_are_reported() {
        let v = check(&[span(1, None, 0), span(2, None, 5)], TOL);
        assert!(!v.clean);
        assert_eq!(
            v.findings,
            vec![Finding::MultipleRoots {
                root_span_ids: vec![to_hex(&[1; 8]), to_hex(&[2; 8])]
            }]
        );
    }

    #[test]
    fn inferred_parent_is_noted_but_clean() {
        let mut child = span(2, Some(1), 1);
        child.set_attr(crate::telemetry::semconv::STITCH_PARENT_INFERRED, true);
        let v = check(&[span(1, None, 0), child], TOL);
        assert!(v.clean);
        assert_eq!(
            v.findings,
            vec![Finding::InferredParent {
                span_id: to_hex(&[2; 8])
            }]
        );
    }
}
