//! Rules-file validation: each error kind with its line and column, defaults, overrides.

use std::path::Path;

use http::Method;

use super::*;
use crate::propagation::OrphanPolicy;

fn errors(yaml: &str) -> Vec<ConfigError> {
    parse_rules(yaml, Path::new("rules.yaml"))
        .map(|_| ())
        .expect_err("must be rejected")
        .0
}

fn one_error(yaml: &str) -> ConfigError {
    let mut list = errors(yaml);
    assert_eq!(list.len(), 1, "{list:?}");
    list.remove(0)
}

#[test]
fn defaults_without_a_file() {
    let rules = CompiledRules::default();
    let p = rules.defaults();
    assert_eq!(p.extract, [Dialect::W3c, Dialect::B3, Dialect::Jaeger]);
    assert_eq!(p.inject, [Dialect::W3c]);
    assert_eq!(p.repair, RepairMode::Strict);
    assert_eq!(p.orphans, OrphanPolicy::NewRoot);
    assert_eq!(p.root_ratio, 1.0);
    // An empty file and a file that leaves keys out get the same defaults.
    let empty = parse_rules("", Path::new("x")).expect("empty is fine");
    assert_eq!(empty.defaults(), p);
    let partial = parse_rules("repair: lenient\n", Path::new("x")).expect("valid");
    assert_eq!(partial.defaults().repair, RepairMode::Lenient);
    assert_eq!(partial.defaults().extract, p.extract);
}

#[test]
fn design_example_compiles() {
    let yaml = r#"
extract: [w3c, b3, jaeger, jd]   # dialects read, in priority order
inject: [w3c]                    # dialects written on every forwarded request
formats:                         # user-defined (template) dialects
  jd:
    headers:
      jd-trace-id: "t-{trace_id}-{span_id}-{flags}"
rules:                           # first match wins; unset fields keep the defaults
  - match: { direction: outbound, authority: "*.legacy.svc.cluster.local" }
    inject: [b3, jd]
  - match: { direction: inbound, path_prefix: /healthz }
    trace: false
repair: strict
orphans: new_root
sampling: { root_ratio: 1.0 }
"#;
    let rules = parse_rules(yaml, Path::new("x")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rules.defaults().extract.last(), Some(&Dialect::Template(0)));
    assert_eq!(rules.dialect_name(Dialect::Template(0)), "jd");
    let legacy = rules.policy_for(
        Direction::Outbound,
        Some("a.legacy.svc.cluster.local"),
        "/",
        &Method::GET,
    );
    assert_eq!(legacy.inject, [Dialect::B3, Dialect::Template(0)]);
    assert_eq!(
        legacy.extract,
        rules.defaults().extract,
        "unset keys keep the defaults"
    );
    let health = rules.policy_for(Direction::Inbound, None, "/healthz", &Method::GET);
    assert!(!health.trace);
    let other = rules.policy_for(Direction::Outbound, None, "/healthz", &Method::GET);
    assert!(other.trace, "direction must match too");
    let view = rules.to_json();
    assert_eq!(view["rules"][0]["inject"], serde_json::json!(["b3", "jd"]));
    assert_eq!(
        view["formats"]["jd"]["headers"]["jd-trace-id"],
        "t-{trace_id}-{span_id}-{flags}"
    );
}

#[test]
fn unknown_key_has_line_and_column() {
    let e = one_error("extract: [w3c]\nsampling:\n  root_ratoi: 0.5\n");
    assert_eq!((e.line, e.column), (3, 3), "{e}");
    assert!(e.reason.contains("root_ratoi"), "{e}");
    let e = one_error("inject: [w3c]\nbogus: 1\n");
    assert_eq!(e.line, 2, "{e}");
    assert!(e.reason.contains("bogus"), "{e}");
}

#[test]
fn unknown_dialect() {
    let list = errors("extract: [w3c, zipkin]\ninject:\n  - b3\n  - nope\n");
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!((list[0].line, list[0].column), (1, 16));
    assert_eq!(list[0].reason, "unknown dialect \"zipkin\"");
    assert_eq!((list[1].line, list[1].column), (4, 5));
    assert_eq!(
        list[1].to_string(),
        "rules.yaml:4:5: unknown dialect \"nope\""
    );
}

#[test]
fn template_errors() {
    let e = one_error("formats:\n  jd:\n    headers:\n      jd-trace-id: \"t-{span_id}\"\n");
    assert!(e.reason.contains("no {trace_id}"), "{e}");
    assert_eq!(
        e.line, 3,
        "format-wide errors point at the format body: {e}"
    );
    let e =
        one_error("formats:\n  jd:\n    headers:\n      jd-trace-id: \"{trace_id}{span_id}\"\n");
    assert!(e.reason.contains("ambiguous"), "{e}");
    assert_eq!((e.line, e.column), (4, 20), "{e}");
    let e = one_error("formats:\n  w3c:\n    headers:\n      x: \"{trace_id}\"\n");
    assert!(e.reason.contains("shadow"), "{e}");
}

#[test]
fn bad_glob_method_path_and_ratio() {
    let yaml = "rules:\n  - match: { authority: \"a b\" }\n    inject: [b3]\n  - match: { method: \"G T\", path_prefix: healthz }\n    sampling: { root_ratio: 1.5 }\n";
    let list = errors(yaml);
    let reasons: Vec<_> = list.iter().map(|e| (e.line, e.reason.as_str())).collect();
    assert_eq!(list.len(), 4, "{reasons:?}");
    assert!(list[0].reason.starts_with("bad glob"), "{reasons:?}");
    assert_eq!(list[0].line, 2);
    assert!(
        list.iter()
            .any(|e| e.line == 4 && e.reason.contains("bad method")),
        "{reasons:?}"
    );
    assert!(
        list.iter()
            .any(|e| e.line == 4 && e.reason.contains("path_prefix")),
        "{reasons:?}"
    );
    assert!(
        list.iter()
            .any(|e| e.line == 5 && e.reason.contains("outside [0, 1]")),
        "{reasons:?}"
    );
    let e = one_error("sampling: { root_ratio: -0.1 }\n");
    assert_eq!(e.line, 1);
}

#[test]
fn bad_enum_value_and_yaml_syntax() {
    let e = one_error("repair: sloppy\n");
    assert_eq!(e.line, 1, "{e}");
    assert!(e.reason.contains("sloppy"), "{e}");
    let e = one_error("extract: [w3c\n");
    assert!(e.line >= 1, "{e}");
}

#[test]
fn dialect_lists_name_sets_in_canonical_order() {
    let yaml = "formats:\n  jd:\n    headers:\n      jd-trace-id: \"t-{trace_id}\"\n  rq:\n    headers:\n      rq-id: \"{trace_id}\"\ninject: [jd, w3c]\n";
    let rules = parse_rules(yaml, Path::new("x")).unwrap_or_else(|e| panic!("{e}"));
    let (jd, rq) = (Dialect::Template(0), Dialect::Template(1));
    // The policy's own set (precomputed), a set seen only at a seam (joined), built-ins only.
    let list = |d: &[Dialect]| rules.dialect_list(DialectSet::of(d.iter().copied()));
    assert_eq!(list(&[jd, Dialect::W3c]), "w3c,jd");
    assert_eq!(list(&[rq, Dialect::B3, jd]), "b3,jd,rq");
    assert_eq!(list(&[Dialect::Jaeger, Dialect::W3c]), "w3c,jaeger");
    assert_eq!(list(&[]), "");
}
