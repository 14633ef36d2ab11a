//! Property tests: parse(write(ctx)) == ctx for every dialect, and proptest-driven fuzzing of
//! every parser and of the whole engine (arbitrary bytes: no panic, bounded output). Case
//! counts are bounded so the suite runs in seconds in CI.

use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use proptest::prelude::*;
use stitch::config::{CompiledRules, parse_rules};
use stitch::direction::Direction;
use stitch::propagation::b3::{self, B3Value, MultiHeaders};
use stitch::propagation::template::{MAX_RENDERED_LEN, TemplateFormat};
use stitch::propagation::{
    Dialect, Inflight, RepairMode, SpanId, TRACE_HEADERS, TraceContext, TraceId, jaeger, propagate,
    tracestate, w3c,
};

fn trace_id() -> impl Strategy<Value = TraceId> {
    any::<[u8; 16]>()
        .prop_map(TraceId)
        .prop_filter("valid", TraceId::is_valid)
}

fn span_id() -> impl Strategy<Value = SpanId> {
    any::<[u8; 8]>()
        .prop_map(SpanId)
        .prop_filter("valid", SpanId::is_valid)
}

fn trace_id_any_width() -> impl Strategy<Value = (TraceId, bool)> {
    prop_oneof![
        trace_id().prop_map(|t| (t, false)),
        any::<[u8; 8]>()
            .prop_filter("valid", |b| *b != [0; 8])
            .prop_map(|low| {
                let mut t = [0u8; 16];
                t[8..].copy_from_slice(&low);
                (TraceId(t), true)
            }),
    ]
}

fn strict_and_lenient() -> impl Strategy<Value = RepairMode> {
    prop_oneof![Just(RepairMode::Strict), Just(RepairMode::Lenient)]
}

/// Header-value bytes: visible ASCII, space, tab and obs-text (what `HeaderValue` admits).
fn header_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 1 => 0x80u8..=0xff],
        0..max,
    )
}

/// Near-valid trace-header text: hex, separators, case and whitespace faults.
fn near_valid(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[0-9a-fA-F:%3-]{{0,{max}}}")).expect("regex")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn w3c_round_trip(trace in trace_id(), span in span_id(), sampled: bool, random: bool) {
        let ctx = TraceContext { sampled: Some(sampled), random, ..TraceContext::new(trace, span) };
        let mut buf = [0u8; w3c::TRACEPARENT_LEN];
        w3c::write_traceparent(&ctx, &mut buf);
        let (parsed, repairs) = w3c::parse_traceparent(&buf, RepairMode::Strict).expect("valid");
        prop_assert_eq!(parsed, ctx);
        prop_assert!(repairs.is_empty());
    }

    #[test]
    fn b3_single_round_trip(
        (trace, short) in trace_id_any_width(), span in span_id(),
        parent in proptest::option::of(span_id()), sampled: bool, debug: bool,
    ) {
        let ctx = TraceContext {
            parent_span_id: parent,
            sampled: Some(sampled || debug),
            debug,
            short_trace_id: short,
            ..TraceContext::new(trace, span)
        };
        let mut buf = [0u8; b3::SINGLE_MAX_LEN];
        let len = b3::write_single(&ctx, &mut buf);
        let parsed = b3::parse_single(&buf[..len], RepairMode::Strict).expect("valid").0;
        prop_assert_eq!(parsed, B3Value::Context(ctx));
    }

    #[test]
    fn b3_multi_round_trip(
        (trace, short) in trace_id_any_width(), span in span_id(),
        parent in proptest::option::of(span_id()), sampled: bool, debug: bool,
    ) {
        let ctx = TraceContext {
            parent_span_id: parent,
            sampled: Some(sampled || debug),
            debug,
            short_trace_id: short,
            ..TraceContext::new(trace, span)
        };
        let mut map = HeaderMap::new();
        b3::write_multi(&ctx, &mut map);
        let m = MultiHeaders {
            trace_id: map.get("x-b3-traceid").map(HeaderValue::as_bytes),
            span_id: map.get("x-b3-spanid").map(HeaderValue::as_bytes),
            parent_span_id: map.get("x-b3-parentspanid").map(HeaderValue::as_bytes),
            sampled: map.get("x-b3-sampled").map(HeaderValue::as_bytes),
            flags: map.get("x-b3-flags").map(HeaderValue::as_bytes),
        };
        let parsed = b3::parse_multi(&m, RepairMode::Strict).expect("present").expect("valid").0;
        prop_assert_eq!(parsed, B3Value::Context(ctx));
    }

    #[test]
    fn jaeger_round_trip(
        (trace, short) in trace_id_any_width(), span in span_id(),
        parent in proptest::option::of(span_id()), sampled: bool, debug: bool,
    ) {
        let ctx = TraceContext {
            parent_span_id: parent,
            sampled: Some(sampled || debug),
            debug,
            short_trace_id: short,
            ..TraceContext::new(trace, span)
        };
        let mut buf = [0u8; jaeger::MAX_LEN];
        let len = jaeger::write(&ctx, &mut buf);
        let parsed = jaeger::parse(&buf[..len], RepairMode::Strict).expect("valid").0;
        prop_assert_eq!(parsed, ctx);
    }

    #[test]
    fn template_round_trip(
        trace in trace_id(), span in span_id(), parent in proptest::option::of(span_id()),
        sampled: bool, random: bool,
    ) {
        let formats = [
            TemplateFormat::compile("jd", &[("jd-trace-id", "t-{trace_id}-{span_id}-{flags}")]),
            TemplateFormat::compile(
                "full",
                &[("x-ids", "{trace_id}/{span_id}/{parent_span_id}"), ("x-sampled", "s={sampled}")],
            ),
        ];
        for format in formats {
            let format = format.expect("compiles");
            let with_flags = format.name == "jd";
            let ctx = TraceContext {
                parent_span_id: if with_flags { None } else { parent },
                sampled: Some(sampled),
                random: with_flags && random,
                ..TraceContext::new(trace, span)
            };
            let mut rendered = Vec::new();
            for header in &format.headers {
                let mut buf = [0u8; MAX_RENDERED_LEN];
                let len = header.write(&ctx, &mut buf);
                rendered.push(buf[..len].to_vec());
            }
            let values: Vec<Option<&[u8]>> = rendered.iter().map(|v| Some(&v[..])).collect();
            let parsed = format.parse(&values, RepairMode::Strict).expect("present").expect("valid").0;
            prop_assert_eq!(parsed, ctx);
        }
    }
}

/// Whatever a parser accepts, stitch writes back as something its own strict parser accepts.
fn rewrites_cleanly(ctx: &TraceContext) -> bool {
    let mut buf = [0u8; w3c::TRACEPARENT_LEN];
    w3c::write_traceparent(ctx, &mut buf);
    w3c::parse_traceparent(&buf, RepairMode::Strict).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn fuzz_traceparent(bytes in header_bytes(120), text in near_valid(70), mode in strict_and_lenient()) {
        for input in [&bytes[..], text.as_bytes()] {
            if let Ok((ctx, _)) = w3c::parse_traceparent(input, mode) {
                prop_assert!(ctx.trace_id.is_valid() && ctx.span_id.is_valid());
                prop_assert!(rewrites_cleanly(&ctx));
            }
        }
    }

    #[test]
    fn fuzz_tracestate(lines in prop::collection::vec(header_bytes(300), 0..4)) {
        if let Ok(members) = tracestate::validate(lines.iter().map(|l| &l[..])) {
            prop_assert!(members <= tracestate::MAX_MEMBERS);
        }
    }

    #[test]
    fn fuzz_b3(
        single in header_bytes(120), text in near_valid(90),
        t in proptest::option::of(near_valid(40)), s in proptest::option::of(near_valid(20)),
        p in proptest::option::of(near_valid(20)), sampled in proptest::option::of(header_bytes(3)),
        flags in proptest::option::of(header_bytes(3)), mode in strict_and_lenient(),
    ) {
        for input in [&single[..], text.as_bytes()] {
            if let Ok((B3Value::Context(ctx), _)) = b3::parse_single(input, mode) {
                prop_assert!(rewrites_cleanly(&ctx));
            }
        }
        let m = MultiHeaders {
            trace_id: t.as_deref().map(str::as_bytes),
            span_id: s.as_deref().map(str::as_bytes),
            parent_span_id: p.as_deref().map(str::as_bytes),
            sampled: sampled.as_deref(),
            flags: flags.as_deref(),
        };
        if let Some(Ok((B3Value::Context(ctx), _))) = b3::parse_multi(&m, mode) {
            prop_assert!(rewrites_cleanly(&ctx));
        }
    }

    #[test]
    fn fuzz_jaeger(bytes in header_bytes(200), text in near_valid(100), mode in strict_and_lenient()) {
        for input in [&bytes[..], text.as_bytes()] {
            if let Ok((ctx, _)) = jaeger::parse(input, mode) {
                prop_assert!(rewrites_cleanly(&ctx));
            }
        }
    }

    #[test]
    fn fuzz_template(bytes in header_bytes(120), text in near_valid(60), mode in strict_and_lenient()) {
        let format = TemplateFormat::compile("jd", &[("jd-trace-id", "t-{trace_id}-{span_id}-{flags}")])
            .expect("compiles");
        for input in [&bytes[..], text.as_bytes()] {
            let prefixed = [b"t-".as_slice(), input].concat();
            for value in [input, &prefixed[..]] {
                if let Some(Ok((ctx, _))) = format.parse(&[Some(value)], mode) {
                    prop_assert!(rewrites_cleanly(&ctx));
                }
            }
        }
    }

    #[test]
    fn fuzz_template_compiler(template in "[{}a-z_ -]{0,60}") {
        // Any template text either compiles or is a config error; never a panic.
        let _ = TemplateFormat::compile("f", &[("x-f", &template)]);
    }
}

const ENGINE_RULES: &str = r#"
extract: [w3c, b3, jaeger, jd]
inject: [w3c, jd]
formats:
  jd:
    headers:
      jd-trace-id: "t-{trace_id}-{span_id}-{flags}"
"#;

/// The headers the engine fuzz writes: every built-in dialect's, the template header of
/// `ENGINE_RULES`, and `baggage`.
fn fuzzed_headers() -> Vec<&'static str> {
    TRACE_HEADERS
        .iter()
        .copied()
        .chain(["jd-trace-id", "baggage"])
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fuzz_engine(
        values in prop::collection::vec((0..fuzzed_headers().len(), header_bytes(100)), 0..12),
        inbound: bool, lenient: bool,
    ) {
        let yaml = format!("{ENGINE_RULES}repair: {}\n", if lenient { "lenient" } else { "strict" });
        let rules: CompiledRules = parse_rules(&yaml, Path::new("fuzz.yaml")).expect("valid");
        let inflight = Inflight::new(16);
        let mut map = HeaderMap::new();
        let fuzzed = fuzzed_headers();
        for (i, v) in &values {
            if let Ok(value) = HeaderValue::from_bytes(v) {
                map.append(HeaderName::from_static(fuzzed[*i]), value);
            }
        }
        let before = map.len();
        let direction = if inbound { Direction::Inbound } else { Direction::Outbound };
        let policy = rules.policy_for(direction, Some("a.svc"), "/", &Method::GET);
        let out = propagate(policy, rules.formats(), direction, &inflight, &mut map);
        prop_assert!(out.trace);
        // Bounded output: at most every known trace header once, plus what was there.
        prop_assert!(map.len() <= before + fuzzed.len());
        prop_assert_eq!(map.get_all("traceparent").iter().count(), 1);
        let tp = map.get("traceparent").expect("w3c always injected").as_bytes();
        let (ctx, _) = w3c::parse_traceparent(tp, RepairMode::Strict).expect("stitch writes valid W3C");
        prop_assert_eq!(ctx.trace_id, out.span.trace_id);
        prop_assert_eq!(ctx.span_id, out.span.span_id);
        prop_assert!(out.span.parent_span_id != Some(out.span.span_id));
        if let Some(d) = out.extracted_dialect {
            prop_assert!(!out.invalid.contains(&d) || matches!(d, Dialect::B3 | Dialect::B3Multi));
        }
        prop_assert!(out.repairs.len() <= 16 && out.conflicts.len() <= 4);
    }
}
