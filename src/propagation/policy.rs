//! What the engine is told for one request: the settings in force after the rules file's
//! defaults were merged with the first matching rule. Routing (which rule matches) is the
//! rules' business (`config`); the engine only reads the result.

use super::context::{Dialect, RepairMode};

/// The settings in force for one request: the file's defaults, overridden by the matching rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// `false`: forward untouched.
    pub trace: bool,
    /// Dialects read, in priority order.
    pub extract: Vec<Dialect>,
    /// Dialects written (plus those present on the request).
    pub inject: Vec<Dialect>,
    /// Strict or lenient parsing.
    pub repair: RepairMode,
    /// Outbound requests without context.
    pub orphans: OrphanPolicy,
    /// Sampling probability of new roots.
    pub root_ratio: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            trace: true,
            extract: vec![Dialect::W3c, Dialect::B3, Dialect::Jaeger],
            inject: vec![Dialect::W3c],
            repair: RepairMode::Strict,
            orphans: OrphanPolicy::NewRoot,
            root_ratio: 1.0,
        }
    }
}

/// What to do with an outbound request that carries no trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrphanPolicy {
    /// Start a new trace (default).
    #[default]
    NewRoot,
    /// Adopt the only in-flight inbound server span as parent; new root with zero or several.
    InferSingleInflight,
}

impl OrphanPolicy {
    /// The spelling used in the rules file.
    pub fn as_str(self) -> &'static str {
        match self {
            OrphanPolicy::NewRoot => "new_root",
            OrphanPolicy::InferSingleInflight => "infer_single_inflight",
        }
    }
}
