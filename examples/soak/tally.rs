//! What the load generator counts: per kind of traffic, answers that were right and failures,
//! plus the first few failure reasons of each kind (to say what went wrong, not only how often).

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Failure reasons kept per kind.
const SAMPLES_PER_KIND: usize = 5;

#[derive(Default)]
struct Counts {
    ok: u64,
    failed: u64,
    samples: Vec<String>,
}

/// Shared by every traffic task.
#[derive(Default)]
pub(crate) struct Tally {
    kinds: Mutex<BTreeMap<&'static str, Counts>>,
}

impl Tally {
    fn with<T>(&self, kind: &'static str, f: impl FnOnce(&mut Counts) -> T) -> T {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        f(kinds.entry(kind).or_default())
    }

    /// One request (message, session) of `kind` got the right answer.
    pub(crate) fn ok(&self, kind: &'static str) {
        self.with(kind, |c| c.ok += 1);
    }

    /// One of `kind` failed, for `why`.
    pub(crate) fn failed(&self, kind: &'static str, why: impl std::fmt::Display) {
        self.with(kind, |c| {
            c.failed += 1;
            if c.samples.len() < SAMPLES_PER_KIND {
                c.samples.push(why.to_string());
            }
        });
    }

    /// Records `result` as an ok or a failure of `kind`.
    pub(crate) fn record(&self, kind: &'static str, result: Result<(), String>) {
        match result {
            Ok(()) => self.ok(kind),
            Err(why) => self.failed(kind, why),
        }
    }

    /// Cumulative counts as one JSON object.
    pub(crate) fn json(&self, elapsed_s: f64, done: bool) -> serde_json::Value {
        let kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        let counts: serde_json::Map<String, serde_json::Value> = kinds
            .iter()
            .map(|(kind, c)| {
                (
                    (*kind).to_owned(),
                    serde_json::json!({ "ok": c.ok, "failed": c.failed, "samples": c.samples }),
                )
            })
            .collect();
        serde_json::json!({ "t": elapsed_s, "done": done, "kinds": counts })
    }
}
