//! Engine tests: the W3C Level 2 behaviour when an app merely copies headers, cross-dialect
//! translation, conflicts, repairs, orphans, tracestate restore and rule matching.

use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::*;
use crate::config::{CompiledRules, parse_rules};
use crate::propagation::template::MAX_RENDERED_LEN;
use crate::propagation::{RepairMode, b3, jaeger, w3c};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";
const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn rules(yaml: &str) -> CompiledRules {
    parse_rules(yaml, Path::new("test.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    map
}

fn run(
    rules: &CompiledRules,
    direction: Direction,
    inflight: &Inflight,
    map: &mut HeaderMap,
) -> Outcome {
    routed(
        rules,
        direction,
        inflight,
        &Method::GET,
        Some("svc.local:8080"),
        "/orders",
        map,
    )
}

/// Routes as the trace layer does (the rules pick the policy), then runs the engine.
fn routed(
    rules: &CompiledRules,
    direction: Direction,
    inflight: &Inflight,
    method: &Method,
    authority: Option<&str>,
    path: &str,
    map: &mut HeaderMap,
) -> Outcome {
    let policy = rules.policy_for(direction, authority, path, method);
    propagate(policy, rules.formats(), direction, inflight, map)
}

fn get<'a>(map: &'a HeaderMap, name: &str) -> &'a str {
    map.get(name)
        .unwrap_or_else(|| panic!("{name} missing in {map:?}"))
        .to_str()
        .expect("ascii")
}

fn traceparent_of(map: &HeaderMap) -> TraceContext {
    assert_eq!(map.get_all("traceparent").iter().count(), 1);
    w3c::parse_traceparent(get(map, "traceparent").as_bytes(), RepairMode::Strict)
        .expect("stitch writes a valid traceparent")
        .0
}

#[test]
fn inbound_w3c_child_of_the_caller_with_tracestate_kept() {
    let rules = CompiledRules::default();
    let inflight = Inflight::default();
    let mut map = headers(&[
        ("traceparent", TP),
        ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        ("tracestate", "x@y=1"),
        ("accept", "*/*"),
    ]);
    let out = run(&rules, Direction::Inbound, &inflight, &mut map);
    assert!(out.trace);
    assert_eq!(out.extracted_dialect, Some(Dialect::W3c));
    assert_eq!(out.span.trace_id.to_hex(), TRACE);
    assert_eq!(
        out.span.parent_span_id.map(|s| s.to_hex()).as_deref(),
        Some(SPAN)
    );
    assert_ne!(out.span.span_id.to_hex(), SPAN);
    assert!(out.span.sampled);
    let sent = traceparent_of(&map);
    assert_eq!(sent.trace_id, out.span.trace_id);
    assert_eq!(
        sent.span_id, out.span.span_id,
        "the app sees the server span as parent"
    );
    assert!(!sent.random, "upstream's random flag (unset) is kept");
    let states: Vec<_> = map.get_all("tracestate").iter().collect();
    assert_eq!(
        states,
        ["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "x@y=1"],
        "byte for byte, in order"
    );
    assert_eq!(get(&map, "accept"), "*/*");
    assert_eq!(inflight.len(), 1);
    drop(out);
    assert!(
        inflight.is_empty(),
        "dropping the outcome's guard unregisters the server span"
    );
}

#[test]
fn every_forwarded_request_gets_a_new_span_id() {
    let rules = CompiledRules::default();
    let inflight = Inflight::default();
    let mut inbound = headers(&[("traceparent", TP)]);
    let server = run(&rules, Direction::Inbound, &inflight, &mut inbound);
    // The app copies what it received onto three outbound calls.
    let mut parents = Vec::new();
    for _ in 0..3 {
        let mut outbound = inbound.clone();
        let client = run(&rules, Direction::Outbound, &inflight, &mut outbound);
        assert_eq!(client.span.parent_span_id, Some(server.span.span_id));
        let sent = traceparent_of(&outbound);
        assert_eq!(sent.trace_id.to_hex(), TRACE);
        assert_eq!(sent.span_id, client.span.span_id);
        parents.push(sent.span_id);
    }
    parents.sort();
    parents.dedup();
    assert_eq!(parents.len(), 3, "three calls, three different parent-ids");
}

#[test]
fn invalid_or_repeated_traceparent_restarts_the_trace() {
    let rules = CompiledRules::default();
    let inflight = Inflight::default();
    let invalid = [
        vec![(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        )],
        vec![(
            "traceparent",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
        vec![(
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        )],
        vec![(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        )],
        vec![(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        )],
        vec![("traceparent", TP), ("traceparent", TP)],
    ];
    for mut pairs in invalid {
        pairs.push(("tracestate", "foo=1"));
        let mut map = headers(&pairs);
        let out = run(&rules, Direction::Inbound, &inflight, &mut map);
        assert_eq!(out.invalid.as_slice(), [Dialect::W3c], "{pairs:?}");
        assert_eq!(out.extracted_dialect, None);
        let sent = traceparent_of(&map);
        assert_ne!(
            sent.trace_id.to_hex(),
            TRACE,
            "{pairs:?}: new random trace id"
        );
        assert_eq!(out.span.parent_span_id, None);
        assert!(sent.random, "stitch created the trace id: random flag set");
        assert!(
            map.get("tracestate").is_none(),
            "{pairs:?}: tracestate dropped"
        );
        assert!(out.tracestate_dropped);
    }
}

#[test]
fn future_version_reemitted_as_00_and_flags_follow_the_parent() {
    let rules = CompiledRules::default();
    let inflight = Inflight::default();
    let cases = [
        (
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra",
            "00",
            false,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
            "03",
            true,
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02",
            "02",
            false,
        ),
        (
            "  00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\t",
            "01",
            true,
        ),
    ];
    for (tp, flags, sampled) in cases {
        let mut map = headers(&[("traceparent", tp)]);
        let out = run(&rules, Direction::Outbound, &inflight, &mut map);
        let value = get(&map, "traceparent");
        assert!(
            value.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{value}"
        );
        assert!(value.ends_with(flags), "{tp} -> {value}");
        assert_eq!(out.span.sampled, sampled);
    }
}

#[test]
fn tracestate_rules() {
    let rules = CompiledRules::default();
    let inflight = Inflight::default();
    // Invalid member: the whole header goes, the traceparent stays.
    let mut map = headers(&[("traceparent", TP), ("tracestate", "ok=1,Bad=2")]);
    let out = run(&rules, Direction::Outbound, &inflight, &mut map);
    assert!(out.tracestate_dropped);
    assert!(map.get("tracestate").is_none());
    assert_eq!(traceparent_of(&map).trace_id.to_hex(), TRACE);
    // 33 members: dropped, never truncated.
    let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
    let mut map = headers(&[("traceparent", TP), ("tracestate", &many.join(","))]);
    run(&rules, Direction::Outbound, &inflight, &mut map);
    assert!(map.get("tracestate").is_none());
    // Only empty members: removed, but nothing was lost.
    let mut map = headers(&[("traceparent", TP), ("tracestate", " , ")]);
    let out = run(&rules, Direction::Outbound, &inflight, &mut map);
    assert!(map.get("tracestate").is_none());
    assert!(!out.tracestate_dropped);
    // Valid members around empty ones travel byte for byte.
    let mut map = headers(&[("traceparent", TP), ("tracestate", "a=1,,b=2")]);
    run(&rules, Direction::Outbound, &inflight, &mut map);
    assert_eq!(get(&map, "tracestate"), "a=1,,b=2");
    // Tracestate without traceparent is dropped.
    let mut map = headers(&[("tracestate", "a=1")]);
    run(&rules, Direction::Outbound, &inflight, &mut map);
    assert!(map.get("tracestate").is_none());
}

#[test]
fn tracestate_restored_from_the_inflight_inbound_request() {
    let rules = CompiledRules::default();
    let inflight = Inflight::default();
    let mut inbound = headers(&[("traceparent", TP), ("tracestate", "congo=t61rcWkgMzE")]);
    let server = run(&rules, Direction::Inbound, &inflight, &mut inbound);
    // The app keeps traceparent but drops tracestate (the JMQ story).
    let mut outbound = headers(&[("traceparent", get(&inbound, "traceparent"))]);
    let client = run(&rules, Direction::Outbound, &inflight, &mut outbound);
    assert!(client.tracestate_restored);
    assert_eq!(get(&outbound, "tracestate"), "congo=t61rcWkgMzE");
    // Another trace gets nothing restored.
    let mut other = headers(&[(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )]);
    let unrelated = run(&rules, Direction::Outbound, &inflight, &mut other);
    assert!(!unrelated.tracestate_restored);
    assert!(other.get("tracestate").is_none());
    drop(server);
    let mut later = headers(&[("traceparent", get(&inbound, "traceparent"))]);
    assert!(!run(&rules, Direction::Outbound, &inflight, &mut later).tracestate_restored);
}

#[test]
fn orphan_policies() {
    let new_root = CompiledRules::default();
    let infer = rules("orphans: infer_single_inflight\n");
    let inflight = Inflight::default();

    let mut map = HeaderMap::new();
    let out = run(&infer, Direction::Outbound, &inflight, &mut map);
    assert_eq!(
        out.orphan,
        Some(OrphanOutcome::NewRoot),
        "nothing in flight"
    );

    let mut inbound = headers(&[("traceparent", TP), ("tracestate", "a=1")]);
    let server = run(&infer, Direction::Inbound, &inflight, &mut inbound);
    assert_eq!(server.orphan, None, "orphans are an outbound notion");

    let mut map = HeaderMap::new();
    let out = run(&new_root, Direction::Outbound, &inflight, &mut map);
    assert_eq!(out.orphan, Some(OrphanOutcome::NewRoot));
    assert_ne!(out.span.trace_id.to_hex(), TRACE);

    let mut map = HeaderMap::new();
    let out = run(&infer, Direction::Outbound, &inflight, &mut map);
    assert_eq!(out.orphan, Some(OrphanOutcome::Inferred));
    assert!(out.span.inferred_parent);
    assert_eq!(out.span.trace_id.to_hex(), TRACE);
    assert_eq!(out.span.parent_span_id, Some(server.span.span_id));
    assert_eq!(traceparent_of(&map).span_id, out.span.span_id);
    assert_eq!(
        get(&map, "tracestate"),
        "a=1",
        "the inferred parent's tracestate travels too"
    );

    let mut second = headers(&[(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )]);
    let _other = run(&infer, Direction::Inbound, &inflight, &mut second);
    let mut map = HeaderMap::new();
    let out = run(&infer, Direction::Outbound, &inflight, &mut map);
    assert_eq!(
        out.orphan,
        Some(OrphanOutcome::NewRoot),
        "two in flight: no guessing"
    );
    assert!(!out.span.inferred_parent);
}

#[test]
fn root_sampling_ratio_and_b3_deny() {
    let never = rules("sampling: { root_ratio: 0.0 }\n");
    let inflight = Inflight::default();
    let mut map = HeaderMap::new();
    let out = run(&never, Direction::Inbound, &inflight, &mut map);
    assert!(!out.span.sampled);
    assert!(get(&map, "traceparent").ends_with("-02"));
    // Parent-based: a sampled parent stays sampled even at ratio 0.
    let mut map = headers(&[("traceparent", TP)]);
    assert!(
        run(&never, Direction::Inbound, &inflight, &mut map)
            .span
            .sampled
    );
    // b3: 0 denies sampling of the new root.
    let always = CompiledRules::default();
    let mut map = headers(&[("b3", "0")]);
    let out = run(&always, Direction::Inbound, &inflight, &mut map);
    assert!(!out.span.sampled);
    let (written, _) =
        b3::parse_single(get(&map, "b3").as_bytes(), RepairMode::Strict).expect("valid");
    assert_eq!(
        written,
        b3::B3Value::Context(TraceContext {
            trace_id: out.span.trace_id,
            span_id: out.span.span_id,
            parent_span_id: None,
            sampled: Some(false),
            debug: false,
            random: false,
            short_trace_id: false,
        })
    );
}

/// Input headers of each dialect for the same caller context (trace TRACE, span SPAN, sampled).
fn inputs() -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    vec![
        ("w3c", vec![("traceparent", TP.to_owned())]),
        ("b3", vec![("b3", format!("{TRACE}-{SPAN}-1"))]),
        (
            "b3multi",
            vec![
                ("x-b3-traceid", TRACE.to_owned()),
                ("x-b3-spanid", SPAN.to_owned()),
                ("x-b3-sampled", "1".to_owned()),
            ],
        ),
        (
            "jaeger",
            vec![("uber-trace-id", format!("{TRACE}:{SPAN}:0:1"))],
        ),
        ("jd", vec![("jd-trace-id", format!("t-{TRACE}-{SPAN}-01"))]),
        (
            "mq",
            vec![("trace_id", TRACE.to_owned()), ("span_id", SPAN.to_owned())],
        ),
    ]
}

const TRANSLATION_RULES: &str = r#"
extract: [w3c, b3, jaeger, jd, mq]
formats:
  jd:
    headers:
      jd-trace-id: "t-{trace_id}-{span_id}-{flags}"
  mq:
    headers:
      TRACE_ID: "{trace_id}"
      SPAN_ID: "{span_id}"
"#;

/// Reads what stitch wrote in `dialect` back with that dialect's own parser.
fn read_back(rules: &CompiledRules, dialect: &str, map: &HeaderMap) -> TraceContext {
    let strict = RepairMode::Strict;
    match dialect {
        "w3c" => traceparent_of(map),
        "b3" => match b3::parse_single(get(map, "b3").as_bytes(), strict)
            .expect("valid")
            .0
        {
            b3::B3Value::Context(c) => c,
            other => panic!("{other:?}"),
        },
        "b3multi" => {
            let m = b3::MultiHeaders {
                trace_id: Some(get(map, "x-b3-traceid").as_bytes()),
                span_id: Some(get(map, "x-b3-spanid").as_bytes()),
                parent_span_id: map.get("x-b3-parentspanid").map(|v| v.as_bytes()),
                sampled: map.get("x-b3-sampled").map(|v| v.as_bytes()),
                flags: map.get("x-b3-flags").map(|v| v.as_bytes()),
            };
            match b3::parse_multi(&m, strict)
                .expect("present")
                .expect("valid")
                .0
            {
                b3::B3Value::Context(c) => c,
                other => panic!("{other:?}"),
            }
        }
        "jaeger" => {
            jaeger::parse(get(map, "uber-trace-id").as_bytes(), strict)
                .expect("valid")
                .0
        }
        name => {
            let index = rules
                .formats()
                .as_slice()
                .iter()
                .position(|f| f.name == name)
                .expect("format");
            let format = &rules.formats().as_slice()[index];
            let values: Vec<Option<&[u8]>> = format
                .headers
                .iter()
                .map(|h| map.get(&h.name).map(HeaderValue::as_bytes))
                .collect();
            format
                .parse(&values, strict)
                .expect("present")
                .expect("valid")
                .0
        }
    }
}

#[test]
fn cross_dialect_translation_table() {
    let names = ["w3c", "b3", "b3multi", "jaeger", "jd", "mq"];
    for (input, pairs) in inputs() {
        for output in names {
            let rules = rules(&format!("{TRANSLATION_RULES}inject: [{output}]\n"));
            let inflight = Inflight::default();
            let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let mut map = headers(&pairs);
            let out = run(&rules, Direction::Outbound, &inflight, &mut map);
            assert!(out.invalid.is_empty(), "{input}: {:?}", out.invalid);
            assert_eq!(out.span.trace_id.to_hex(), TRACE, "{input} -> {output}");
            assert_eq!(
                out.span.parent_span_id.map(|s| s.to_hex()).as_deref(),
                Some(SPAN),
                "{input} -> {output}"
            );
            for written in [input, output] {
                let ctx = read_back(&rules, written, &map);
                assert_eq!(
                    ctx.trace_id.to_hex(),
                    TRACE,
                    "{input} -> {output}: {written}"
                );
                assert_eq!(
                    ctx.span_id, out.span.span_id,
                    "{input} -> {output}: {written} carries the new span"
                );
                if ctx.sampled.is_some() {
                    assert_eq!(ctx.sampled, Some(true), "{input} -> {output}: {written}");
                }
            }
        }
    }
}

#[test]
fn present_dialects_are_rewritten_and_conflicts_reported() {
    let rules = CompiledRules::default();
    let inflight = Inflight::default();
    let other_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut map = headers(&[
        ("traceparent", TP),
        ("b3", &format!("{other_trace}-{SPAN}-1")),
        ("uber-trace-id", &format!("{TRACE}:{SPAN}:0:1")),
        ("uberctx-user", "alice"),
    ]);
    let out = run(&rules, Direction::Outbound, &inflight, &mut map);
    assert_eq!(out.extracted_dialect, Some(Dialect::W3c));
    assert_eq!(out.conflicts.as_slice(), [(Dialect::W3c, Dialect::B3)]);
    // No stale header of another dialect travels on: b3 and uber-trace-id carry the winner.
    assert_eq!(read_back(&rules, "b3", &map).trace_id.to_hex(), TRACE);
    assert_eq!(read_back(&rules, "b3", &map).span_id, out.span.span_id);
    assert_eq!(read_back(&rules, "jaeger", &map).span_id, out.span.span_id);
    assert_eq!(
        get(&map, "uberctx-user"),
        "alice",
        "jaeger baggage passes through"
    );
}

#[test]
fn b3_single_wins_over_multi_and_width_is_kept() {
    let rules = CompiledRules::default();
    let inflight = Inflight::default();
    let mut map = headers(&[
        ("b3", &format!("64fe8b2a57d3eff7-{SPAN}-1")),
        ("x-b3-traceid", "0af7651916cd43dd8448eb211c80319c"),
        ("x-b3-spanid", "b7ad6b7169203331"),
        ("x-b3-parentspanid", "b7ad6b7169203332"),
        ("x-b3-flags", "1"),
    ]);
    let out = run(&rules, Direction::Outbound, &inflight, &mut map);
    assert_eq!(out.extracted_dialect, Some(Dialect::B3));
    assert!(
        get(&map, "b3").starts_with("64fe8b2a57d3eff7-"),
        "64-bit width kept"
    );
    assert_eq!(get(&map, "x-b3-traceid"), "64fe8b2a57d3eff7");
    assert_eq!(get(&map, "x-b3-parentspanid"), SPAN);
    assert!(map.get("x-b3-flags").is_none(), "stale debug flag removed");
    assert_eq!(get(&map, "x-b3-sampled"), "1");
    assert_eq!(
        get(&map, "traceparent").get(3..35),
        Some("000000000000000064fe8b2a57d3eff7")
    );
}

#[test]
fn lenient_repairs_are_reported_and_normalized() {
    let strict = CompiledRules::default();
    let lenient = rules("repair: lenient\n");
    let inflight = Inflight::default();
    let upper = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01";
    type Case = (Vec<(&'static str, String)>, Dialect, RepairKind);
    let cases: Vec<Case> = vec![
        (
            vec![("traceparent", upper.to_owned())],
            Dialect::W3c,
            RepairKind::UpperCaseHex,
        ),
        (
            vec![("traceparent", format!("00-a3ce929d0e0e4736-{SPAN}-01"))],
            Dialect::W3c,
            RepairKind::ShortTraceId,
        ),
        (
            vec![("b3", format!("{TRACE}-{SPAN}-1-"))],
            Dialect::B3,
            RepairKind::MissingParent,
        ),
        (
            vec![("uber-trace-id", format!("{TRACE}:{SPAN}:1"))],
            Dialect::Jaeger,
            RepairKind::MissingParent,
        ),
        (
            vec![("uber-trace-id", format!("{TRACE} : {SPAN} : 0 : 1"))],
            Dialect::Jaeger,
            RepairKind::Whitespace,
        ),
    ];
    for (pairs, dialect, kind) in cases {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut map = headers(&pairs);
        let out = run(&strict, Direction::Outbound, &inflight, &mut map);
        assert_eq!(out.invalid.as_slice(), [dialect], "strict: {pairs:?}");
        let mut map = headers(&pairs);
        let out = run(&lenient, Direction::Outbound, &inflight, &mut map);
        assert!(out.invalid.is_empty(), "{pairs:?}");
        assert!(
            out.repairs.contains(&(dialect, kind)),
            "{pairs:?}: {:?}",
            out.repairs
        );
        assert_eq!(out.extracted_dialect, Some(dialect));
        let tp = traceparent_of(&map);
        assert_eq!(tp.trace_id, out.span.trace_id);
        assert!(
            get(&map, "traceparent")
                .bytes()
                .all(|c| !c.is_ascii_uppercase())
        );
    }
}

#[test]
fn rules_route_requests() {
    let rules = rules(
        r#"
formats:
  jd:
    headers:
      jd-trace-id: "t-{trace_id}-{span_id}-{flags}"
rules:
  - match: { direction: inbound, path_prefix: /healthz }
    trace: false
  - match: { direction: outbound, authority: "*.legacy.svc.cluster.local" }
    inject: [b3, jd]
  - match: { method: POST }
    inject: [jaeger]
"#,
    );
    let inflight = Inflight::default();
    let mut map = headers(&[("traceparent", "garbage"), ("b3", "x")]);
    let before = map.clone();
    let out = routed(
        &rules,
        Direction::Inbound,
        &inflight,
        &Method::GET,
        None,
        "/healthz/live",
        &mut map,
    );
    assert!(!out.trace);
    assert_eq!(map, before, "trace: false forwards untouched");
    assert!(inflight.is_empty());

    let mut map = HeaderMap::new();
    routed(
        &rules,
        Direction::Outbound,
        &inflight,
        &Method::GET,
        Some("pay.legacy.svc.cluster.local:80"),
        "/",
        &mut map,
    );
    assert!(map.get("b3").is_some() && map.get("jd-trace-id").is_some());
    assert!(map.get("traceparent").is_none(), "the rule replaced inject");

    let mut map = HeaderMap::new();
    routed(
        &rules,
        Direction::Outbound,
        &inflight,
        &Method::POST,
        Some("other.svc"),
        "/",
        &mut map,
    );
    assert!(map.get("uber-trace-id").is_some());
    let mut map = HeaderMap::new();
    routed(
        &rules,
        Direction::Outbound,
        &inflight,
        &Method::GET,
        Some("other.svc"),
        "/",
        &mut map,
    );
    assert!(map.get("traceparent").is_some());
    assert_eq!(map.len(), 1);
}

#[test]
fn baggage_limits() {
    let rules = CompiledRules::default();
    let inflight = Inflight::default();
    let mut map = headers(&[("baggage", "userId=alice")]);
    let out = run(&rules, Direction::Outbound, &inflight, &mut map);
    assert!(!out.baggage_dropped);
    assert_eq!(get(&map, "baggage"), "userId=alice");
    let many: Vec<String> = (0..65).map(|i| format!("k{i}=v")).collect();
    let mut map = headers(&[("baggage", &many.join(","))]);
    let out = run(&rules, Direction::Outbound, &inflight, &mut map);
    assert!(out.baggage_dropped);
    assert!(map.get("baggage").is_none());
}

#[test]
fn template_writer_fits_its_buffer() {
    // The longest legal template renders within MAX_RENDERED_LEN (checked at compile time).
    let long = format!("{}{{trace_id}}", "x".repeat(MAX_RENDERED_LEN - 32));
    let rules = rules(&format!(
        "inject: [big]\nformats:\n  big:\n    headers:\n      x-big: \"{long}\"\n"
    ));
    let inflight = Inflight::default();
    let mut map = HeaderMap::new();
    run(&rules, Direction::Outbound, &inflight, &mut map);
    assert_eq!(get(&map, "x-big").len(), MAX_RENDERED_LEN);
}

#[test]
fn injected_names_the_rules_dialects_and_those_present() {
    let jd = rules(
        "inject: [jd]\nformats:\n  jd:\n    headers:\n      jd-trace-id: \"t-{trace_id}-{span_id}-{flags}\"\n",
    );
    let inflight = Inflight::default();
    let mut map = headers(&[("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1")]);
    let out = run(&jd, Direction::Inbound, &inflight, &mut map);
    let written: Vec<Dialect> = out.injected.iter().collect();
    assert_eq!(written, [Dialect::B3, Dialect::Template(0)]);
    assert!(map.contains_key("b3") && map.contains_key("jd-trace-id"));
    assert!(
        !map.contains_key("traceparent"),
        "w3c neither present nor injected"
    );
    let untraced = rules("rules:\n  - match: { direction: inbound }\n    trace: false\n");
    let out = run(&untraced, Direction::Inbound, &inflight, &mut headers(&[]));
    assert!(out.injected.is_empty(), "trace: false writes nothing");
}

/// Every id header a hop writes is new on every request: it must reach HTTP/2's encoder
/// marked never-indexed, or it churns the connection's HPACK table. Constant values
/// (`x-b3-sampled`) stay indexable.
#[test]
fn written_id_headers_are_never_indexed_and_constant_ones_are() {
    let rules = rules(&format!(
        "{TRANSLATION_RULES}inject: [w3c, b3, b3multi, jaeger, jd, mq]\n"
    ));
    let inflight = Inflight::default();
    let mut map = headers(&[("traceparent", TP)]);
    let out = run(&rules, Direction::Outbound, &inflight, &mut map);
    assert!(out.trace && out.span.sampled);
    for name in [
        "traceparent",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "uber-trace-id",
        "jd-trace-id",
        "trace_id",
        "span_id",
    ] {
        let value = map
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing in {map:?}"));
        assert!(value.is_sensitive(), "{name} is indexable");
    }
    assert!(!map.get("x-b3-sampled").expect("sampled").is_sensitive());
}
