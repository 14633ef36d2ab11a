//! Validation and compilation of the rules file into [`CompiledRules`]: dialect names resolved,
//! templates parsed into segments, globs and methods compiled, defaults merged into one
//! [`Policy`] per route so the request path does no lookups beyond a first-match scan. The
//! result is what the propagation engine takes: a [`Policy`] per request and the [`Formats`].

use std::collections::BTreeMap;
use std::path::Path;

use compact_str::CompactString;
use http::Method;
use serde_json::{Value, json};
use serde_saphyr::{Location, MessageFormatter, Spanned};

use super::error::{ConfigError, ConfigErrors};
use super::glob::AuthorityGlob;
use super::model::{DirectionSpec, RuleSpec, RulesFile, SamplingSpec};
use crate::direction::Direction;
use crate::propagation::formats::MAX_FORMATS;
use crate::propagation::template::TemplateFormat;
use crate::propagation::{Dialect, DialectSet, Formats, Policy, RepairMode};

#[derive(Debug)]
struct Matcher {
    direction: Option<Direction>,
    authority: Option<AuthorityGlob>,
    path_prefix: Option<String>,
    method: Option<Method>,
}

impl Matcher {
    fn matches(
        &self,
        direction: Direction,
        authority: Option<&str>,
        path: &str,
        method: &Method,
    ) -> bool {
        self.direction.is_none_or(|d| d == direction)
            && self.method.as_ref().is_none_or(|m| m == method)
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
            && self
                .authority
                .as_ref()
                .is_none_or(|g| authority.is_some_and(|a| g.matches(a)))
    }
}

#[derive(Debug)]
struct Route {
    matcher: Matcher,
    policy: Policy,
}

/// The validated, compiled rules one request uses from start to end.
#[derive(Debug)]
pub struct CompiledRules {
    defaults: Policy,
    routes: Vec<Route>,
    formats: Formats,
    view: Value,
    /// [`CompiledRules::dialect_list`] of every policy's `inject` set that names a template
    /// (what most hops write), made once here instead of on each request.
    inject_labels: Vec<(DialectSet, CompactString)>,
}

impl Default for CompiledRules {
    /// The built-in rules used with no file.
    fn default() -> Self {
        let defaults = Policy::default();
        let view = json!({
            "source": Value::Null,
            "extract": ["w3c", "b3", "jaeger"],
            "inject": ["w3c"],
            "formats": {},
            "rules": [],
            "repair": "strict",
            "orphans": "new_root",
            "sampling": { "root_ratio": 1.0 },
        });
        CompiledRules {
            defaults,
            routes: Vec::new(),
            formats: Formats::default(),
            view,
            inject_labels: Vec::new(),
        }
    }
}

impl CompiledRules {
    /// The policy for a request: the first rule that matches, else the file's defaults.
    pub fn policy_for(
        &self,
        direction: Direction,
        authority: Option<&str>,
        path: &str,
        method: &Method,
    ) -> &Policy {
        self.routes
            .iter()
            .find(|r| r.matcher.matches(direction, authority, path, method))
            .map_or(&self.defaults, |r| &r.policy)
    }

    /// The file-level defaults (what requests no rule matches get).
    pub fn defaults(&self) -> &Policy {
        &self.defaults
    }

    /// The template formats, indexed by [`Dialect::Template`].
    pub fn formats(&self) -> &Formats {
        &self.formats
    }

    /// The name of `dialect` as the rules file spells it (metric labels, logs).
    pub(crate) fn dialect_name(&self, dialect: Dialect) -> &str {
        self.formats.dialect_name(dialect)
    }

    /// The names of `set` joined with `,` in canonical order (built-ins, then formats), for
    /// the span attribute `stitch.propagation.injected`. Built-ins only: a static string;
    /// a policy's `inject` set: the label made at load; anything else (a template dialect
    /// present on the request that the rule does not inject) is joined here.
    pub(crate) fn dialect_list(&self, set: DialectSet) -> CompactString {
        if let Some(label) = set.builtin_label() {
            return CompactString::const_new(label);
        }
        if let Some((_, label)) = self.inject_labels.iter().find(|(s, _)| *s == set) {
            return label.clone();
        }
        let mut out = CompactString::const_new(set.builtins_label());
        for index in set.template_indexes() {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(self.dialect_name(Dialect::Template(index)));
        }
        out
    }

    fn with_inject_labels(mut self) -> Self {
        let sets = std::iter::once(&self.defaults)
            .chain(self.routes.iter().map(|r| &r.policy))
            .map(|p| DialectSet::of(p.inject.iter().copied()))
            .filter(|set| set.builtin_label().is_none());
        let mut labels: Vec<(DialectSet, CompactString)> = Vec::new();
        for set in sets {
            if !labels.iter().any(|(s, _)| *s == set) {
                labels.push((set, self.dialect_list(set)));
            }
        }
        self.inject_labels = labels;
        self
    }

    /// The rules in force as JSON, for the admin `/config` endpoint.
    pub fn to_json(&self) -> &Value {
        &self.view
    }
}

/// Collects errors with their positions while compiling.
struct Errors<'a> {
    path: &'a Path,
    list: Vec<ConfigError>,
}

impl Errors<'_> {
    fn at(&mut self, location: &Location, reason: impl Into<String>) {
        self.list.push(ConfigError {
            path: self.path.to_path_buf(),
            line: location.line(),
            column: location.column(),
            reason: reason.into(),
        });
    }
}

/// Parses and compiles rules-file text. `path` only labels the errors.
pub fn parse_rules(text: &str, path: &Path) -> Result<CompiledRules, ConfigErrors> {
    let file: RulesFile = if text.trim().is_empty() {
        RulesFile::default()
    } else {
        serde_saphyr::from_str(text).map_err(|e| ConfigErrors(vec![yaml_error(&e, path)]))?
    };
    compile(&file, path)
}

/// Reads, parses and compiles the rules file at `path`.
pub(crate) fn load_file(path: &Path) -> Result<CompiledRules, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            reason: format!("cannot read: {e}"),
        }])
    })?;
    parse_rules(&text, path)
}

fn yaml_error(e: &serde_saphyr::Error, path: &Path) -> ConfigError {
    let location = e.location();
    let reason = serde_saphyr::DefaultMessageFormatter.format_message(e.without_snippet());
    ConfigError {
        path: path.to_path_buf(),
        line: location.map_or(0, |l| l.line()),
        column: location.map_or(0, |l| l.column()),
        reason: reason.into_owned(),
    }
}

fn compile(file: &RulesFile, path: &Path) -> Result<CompiledRules, ConfigErrors> {
    let mut errors = Errors {
        path,
        list: Vec::new(),
    };

    // Formats first: dialect names in extract/inject may refer to them.
    let mut formats = Formats::default();
    let mut formats_view = serde_json::Map::new();
    for (name, spec) in &file.formats {
        if Dialect::builtin(name).is_some() {
            errors.at(
                &spec.referenced,
                format!("format {name:?} would shadow a built-in dialect"),
            );
            continue;
        }
        let headers: Vec<(&str, &str)> = spec
            .value
            .headers
            .iter()
            .map(|(h, t)| (h.as_str(), t.value.as_str()))
            .collect();
        match TemplateFormat::compile(name, &headers) {
            Ok(format) => {
                for taken in formats.push(format) {
                    errors.at(
                        &spec.referenced,
                        format!("header {:?} is used by two formats", taken.as_str()),
                    );
                }
                let view: BTreeMap<&str, &str> = headers.iter().copied().collect();
                formats_view.insert(name.clone(), json!({ "headers": view }));
            }
            Err(e) => {
                let location = e
                    .header
                    .as_ref()
                    .and_then(|h| spec.value.headers.get(h))
                    .map_or(&spec.referenced, |t| &t.referenced);
                errors.at(location, e.reason);
            }
        }
    }
    if formats.len() > MAX_FORMATS {
        errors.list.push(ConfigError {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            reason: format!("at most {MAX_FORMATS} formats"),
        });
    }

    let resolve =
        |list: &Option<Vec<Spanned<String>>>, errors: &mut Errors<'_>| -> Option<Vec<Dialect>> {
            let list = list.as_ref()?;
            let mut out = Vec::with_capacity(list.len());
            for name in list {
                let dialect = Dialect::builtin(&name.value).or_else(|| {
                    formats
                        .as_slice()
                        .iter()
                        .position(|f| f.name == name.value)
                        .and_then(|i| u16::try_from(i).ok())
                        .map(Dialect::Template)
                });
                match dialect {
                    Some(d) if !out.contains(&d) => out.push(d),
                    Some(_) => {}
                    None => errors.at(
                        &name.referenced,
                        format!("unknown dialect {:?}", name.value),
                    ),
                }
            }
            Some(out)
        };

    let base = Policy::default();
    let defaults = Policy {
        trace: true,
        extract: resolve(&file.extract, &mut errors).unwrap_or(base.extract),
        inject: resolve(&file.inject, &mut errors).unwrap_or(base.inject),
        repair: file.repair.unwrap_or(base.repair),
        orphans: file.orphans.unwrap_or(base.orphans),
        root_ratio: ratio(&file.sampling, &mut errors).unwrap_or(base.root_ratio),
    };

    let mut routes = Vec::with_capacity(file.rules.len());
    let mut rules_view = Vec::with_capacity(file.rules.len());
    for rule in &file.rules {
        let policy = Policy {
            trace: rule.trace.unwrap_or(true),
            extract: resolve(&rule.extract, &mut errors)
                .unwrap_or_else(|| defaults.extract.clone()),
            inject: resolve(&rule.inject, &mut errors).unwrap_or_else(|| defaults.inject.clone()),
            repair: rule.repair.unwrap_or(defaults.repair),
            orphans: rule.orphans.unwrap_or(defaults.orphans),
            root_ratio: ratio(&rule.sampling, &mut errors).unwrap_or(defaults.root_ratio),
        };
        let matcher = compile_matcher(rule, &mut errors);
        rules_view.push(rule_view(rule, &policy, &formats));
        routes.push(Route { matcher, policy });
    }

    if !errors.list.is_empty() {
        errors.list.sort_by_key(|e| (e.line, e.column));
        return Err(ConfigErrors(errors.list));
    }
    let names =
        |list: &[Dialect]| -> Vec<String> { list.iter().map(|d| name_of(*d, &formats)).collect() };
    let view = json!({
        "source": path.display().to_string(),
        "extract": names(&defaults.extract),
        "inject": names(&defaults.inject),
        "formats": formats_view,
        "rules": rules_view,
        "repair": repair_str(defaults.repair),
        "orphans": defaults.orphans.as_str(),
        "sampling": { "root_ratio": defaults.root_ratio },
    });
    Ok(CompiledRules {
        defaults,
        routes,
        formats,
        view,
        inject_labels: Vec::new(),
    }
    .with_inject_labels())
}

fn name_of(d: Dialect, formats: &Formats) -> String {
    formats.dialect_name(d).to_owned()
}

fn repair_str(mode: RepairMode) -> &'static str {
    match mode {
        RepairMode::Strict => "strict",
        RepairMode::Lenient => "lenient",
    }
}

fn rule_view(rule: &RuleSpec, policy: &Policy, formats: &Formats) -> Value {
    let m = &rule.matcher;
    json!({
        "match": {
            "direction": m.direction.map(|d| match d { DirectionSpec::Inbound => "inbound", DirectionSpec::Outbound => "outbound" }),
            "authority": m.authority.as_ref().map(|a| a.value.clone()),
            "path_prefix": m.path_prefix.as_ref().map(|p| p.value.clone()),
            "method": m.method.as_ref().map(|x| x.value.to_ascii_uppercase()),
        },
        "trace": policy.trace,
        "extract": policy.extract.iter().map(|d| name_of(*d, formats)).collect::<Vec<_>>(),
        "inject": policy.inject.iter().map(|d| name_of(*d, formats)).collect::<Vec<_>>(),
        "repair": repair_str(policy.repair),
        "orphans": policy.orphans.as_str(),
        "sampling": { "root_ratio": policy.root_ratio },
    })
}

fn ratio(sampling: &Option<SamplingSpec>, errors: &mut Errors<'_>) -> Option<f64> {
    let spanned = sampling.as_ref()?.root_ratio.as_ref()?;
    if (0.0..=1.0).contains(&spanned.value) {
        Some(spanned.value)
    } else {
        errors.at(
            &spanned.referenced,
            format!("root_ratio {} is outside [0, 1]", spanned.value),
        );
        None
    }
}

fn compile_matcher(rule: &RuleSpec, errors: &mut Errors<'_>) -> Matcher {
    let m = &rule.matcher;
    let authority = m
        .authority
        .as_ref()
        .and_then(|a| match AuthorityGlob::new(&a.value) {
            Ok(glob) => Some(glob),
            Err(reason) => {
                errors.at(&a.referenced, reason);
                None
            }
        });
    let path_prefix = m.path_prefix.as_ref().and_then(|p| {
        if p.value.starts_with('/') {
            Some(p.value.clone())
        } else {
            errors.at(
                &p.referenced,
                format!("path_prefix {:?} must start with '/'", p.value),
            );
            None
        }
    });
    let method = m.method.as_ref().and_then(|x| {
        match Method::from_bytes(x.value.to_ascii_uppercase().as_bytes()) {
            Ok(method) => Some(method),
            Err(_) => {
                errors.at(&x.referenced, format!("bad method {:?}", x.value));
                None
            }
        }
    });
    Matcher {
        direction: m.direction.map(|d| match d {
            DirectionSpec::Inbound => Direction::Inbound,
            DirectionSpec::Outbound => Direction::Outbound,
        }),
        authority,
        path_prefix,
        method,
    }
}

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;
