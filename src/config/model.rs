//! The rules file as serde data: exactly the keys DESIGN.md documents, unknown keys rejected.
//! Values whose validation needs a location (dialect names, globs, templates, the ratio) are
//! wrapped in [`Spanned`] so errors can name line and column.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::propagation::{OrphanPolicy, RepairMode};

/// The whole rules file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RulesFile {
    /// Dialects read, in priority order.
    pub extract: Option<Vec<Spanned<String>>>,
    /// Dialects written on every forwarded request.
    pub inject: Option<Vec<Spanned<String>>>,
    /// User-defined template dialects, by name.
    #[serde(default)]
    pub formats: BTreeMap<String, Spanned<FormatSpec>>,
    /// Per-route overrides; first match wins.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
    /// `strict` (default) or `lenient`.
    pub repair: Option<RepairMode>,
    /// `new_root` (default) or `infer_single_inflight`.
    pub orphans: Option<OrphanPolicy>,
    /// Sampling of new roots.
    pub sampling: Option<SamplingSpec>,
}

/// One template format.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FormatSpec {
    /// Header name → template.
    pub headers: BTreeMap<String, Spanned<String>>,
}

/// `sampling:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SamplingSpec {
    /// Probability of sampling a new root, in [0, 1].
    pub root_ratio: Option<Spanned<f64>>,
}

/// `direction:` in a rule's `match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DirectionSpec {
    /// A peer calling the app.
    Inbound,
    /// The app calling a peer.
    Outbound,
}

/// A rule's `match:`; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MatchSpec {
    /// Inbound or outbound.
    pub direction: Option<DirectionSpec>,
    /// Glob on the request authority (`*` and `?`), host only unless it names a port.
    pub authority: Option<Spanned<String>>,
    /// Prefix of the request path.
    pub path_prefix: Option<Spanned<String>>,
    /// HTTP method.
    pub method: Option<Spanned<String>>,
}

/// One entry of `rules:`; keys other than `match` override the file's defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleSpec {
    /// When the rule applies.
    #[serde(rename = "match", default)]
    pub matcher: MatchSpec,
    /// `false` forwards matching requests untouched.
    pub trace: Option<bool>,
    /// Override of `extract`.
    pub extract: Option<Vec<Spanned<String>>>,
    /// Override of `inject`.
    pub inject: Option<Vec<Spanned<String>>>,
    /// Override of `repair`.
    pub repair: Option<RepairMode>,
    /// Override of `orphans`.
    pub orphans: Option<OrphanPolicy>,
    /// Override of `sampling`.
    pub sampling: Option<SamplingSpec>,
}
