//! Dialects through real sockets (issue 7, "Integration"): B3 single and multi, Jaeger, template
//! formats from the rules file, mixed and conflicting inputs, translation by `inject`, orphan
//! inference, tracestate restore and `trace: false`, each asserted on what the app and the
//! upstream received (and on `/metrics` and `/traces` where the issue names a count or an
//! attribute).

use std::collections::HashSet;
use std::sync::Arc;

use http::{HeaderMap, StatusCode};

use crate::support::metrics::{metric, scrape};
use crate::support::trace::{
    Handler, Seen, Setup, copy, copy_w3c, copying_app, drop_all, proxy_get, raw_get, ring_only,
    rules_file, serve_app, setup, spans_of_kind, trace_with, upstream,
};
use crate::support::{DEADLINE, Loopback, eventually, listener};

const T: &str = "0af7651916cd43dd8448eb211c80319c";
const T64: &str = "8448eb211c80319c";
const T2: &str = "11111111111111112222222222222222";
const P: &str = "b7ad6b7169203331";

const JD_RULES: &str = r#"
extract: [w3c, b3, jaeger, jd, rmq]
inject: [w3c]
formats:
  jd:
    headers:
      jd-trace-id: "t-{trace_id}-{span_id}-{flags}"
  rmq:
    headers:
      TRACE_ID: "{trace_id}"
      SPAN_ID: "{span_id}"
"#;

fn split(value: &str, sep: char) -> Vec<String> {
    value.split(sep).map(str::to_owned).collect()
}

#[tokio::test]
async fn b3_single_is_continued_and_rewritten_on_both_sides() {
    let s = setup(None, 1, copy(&["b3"])).await;
    let (app, up) = s.send("/", &[("b3", &format!("{T}-{P}-1"))]).await;
    let b3 = split(&app.one("b3"), '-');
    assert_eq!(b3.len(), 4, "{b3:?}: trace-span-sampled-parent");
    assert_eq!(b3[0], T);
    assert_ne!(b3[1], P, "a new server span id");
    assert_eq!(
        (b3[2].as_str(), b3[3].as_str()),
        ("1", P),
        "sampled, parent = caller"
    );
    assert_eq!(app.tp().trace_id, T, "inject: [w3c] adds traceparent");
    assert_eq!(
        app.tp().parent_id,
        b3[1],
        "both dialects name the same server span"
    );

    let ub3 = split(&up[0].one("b3"), '-');
    assert_eq!(ub3[0], T, "outbound: trace kept");
    assert_eq!(
        ub3[3], b3[1],
        "outbound: parent = the server span the app copied"
    );
    assert_ne!(ub3[1], b3[1], "outbound: a new client span id");
    assert_eq!(up[0].tp().parent_id, ub3[1]);

    // Deny-only `b3: 0`: a new trace, not sampled; debug `d` is kept.
    let (app, _) = s.send("/", &[("b3", "0")]).await;
    let b3 = split(&app.one("b3"), '-');
    assert_ne!(b3[0], T);
    assert_eq!(b3[2], "0", "deny decision followed");
    assert!(!app.tp().sampled());
    let (app, _) = s.send("/", &[("b3", &format!("{T}-{P}-d"))]).await;
    assert_eq!(split(&app.one("b3"), '-')[2], "d", "debug kept");
}

#[tokio::test]
async fn b3_multi_keeps_the_64_bit_width_and_pads_for_w3c() {
    let s = setup(
        None,
        1,
        copy(&[
            "x-b3-traceid",
            "x-b3-spanid",
            "x-b3-parentspanid",
            "x-b3-sampled",
        ]),
    )
    .await;
    let (app, up) = s
        .send(
            "/",
            &[
                ("X-B3-TraceId", T64),
                ("X-B3-SpanId", P),
                ("X-B3-Sampled", "1"),
            ],
        )
        .await;
    assert_eq!(
        app.one("x-b3-traceid"),
        T64,
        "written back in the width the peer used"
    );
    let span = app.one("x-b3-spanid");
    assert_ne!(span, P);
    assert_eq!(app.one("x-b3-parentspanid"), P);
    assert_eq!(app.one("x-b3-sampled"), "1");
    assert_eq!(
        app.get("b3"),
        None,
        "multi in, multi out (no single header invented)"
    );
    let tp = app.tp();
    assert_eq!(
        tp.trace_id,
        format!("{}{T64}", "0".repeat(16)),
        "left-padded to 128 bits"
    );
    assert_eq!(tp.parent_id, span);

    assert_eq!(up[0].one("x-b3-traceid"), T64);
    assert_eq!(
        up[0].one("x-b3-parentspanid"),
        span,
        "outbound parent = server span"
    );
    assert_ne!(up[0].one("x-b3-spanid"), span);
}

#[tokio::test]
async fn b3_single_wins_over_multi() {
    let s = setup(None, 1, copy_w3c()).await;
    let (app, _) = s
        .send(
            "/",
            &[
                ("b3", &format!("{T}-{P}-1")),
                ("X-B3-TraceId", T2),
                ("X-B3-SpanId", P),
            ],
        )
        .await;
    assert_eq!(app.tp().trace_id, T, "the single header wins");
    assert_eq!(
        app.one("x-b3-traceid"),
        T,
        "the stale multi headers are rewritten too"
    );
}

#[tokio::test]
async fn jaeger_is_continued_plain_and_percent_encoded_with_baggage_untouched() {
    let s = setup(None, 1, copy(&["uber-trace-id", "uberctx-user"])).await;
    for value in [format!("{T}:{P}:0:1"), format!("{T}%3A{P}%3A0%3A1")] {
        let (app, up) = s
            .send(
                "/",
                &[("uber-trace-id", &value), ("uberctx-user", "alice%20b")],
            )
            .await;
        let j = split(&app.one("uber-trace-id"), ':');
        assert_eq!(j.len(), 4, "{value}: {j:?}");
        assert_eq!(j[0], T, "{value}");
        assert_ne!(j[1], P);
        assert_eq!(
            (j[2].as_str(), j[3].as_str()),
            (P, "1"),
            "{value}: parent, flags"
        );
        assert_eq!(
            app.one("uberctx-user"),
            "alice%20b",
            "uberctx-* passed through"
        );
        assert_eq!(app.tp().parent_id, j[1]);
        let u = split(&up[0].one("uber-trace-id"), ':');
        assert_eq!(
            (u[0].as_str(), u[2].as_str()),
            (T, j[1].as_str()),
            "outbound"
        );
        assert_eq!(up[0].one("uberctx-user"), "alice%20b");
    }
    // A 64-bit Jaeger trace id is written back 64 bits wide.
    let (app, _) = s
        .send("/", &[("uber-trace-id", &format!("{T64}:{P}:0:1"))])
        .await;
    assert_eq!(split(&app.one("uber-trace-id"), ':')[0], T64);
}

#[tokio::test]
async fn template_dialects_from_the_rules_file_are_read_and_written() {
    let (_dir, path) = rules_file(JD_RULES);
    let s = setup(Some(path), 1, copy(&["jd-trace-id", "trace_id", "span_id"])).await;
    let (app, up) = s
        .send("/", &[("jd-trace-id", &format!("t-{T}-{P}-01"))])
        .await;
    let jd = split(&app.one("jd-trace-id"), '-');
    assert_eq!(jd.len(), 4, "{jd:?}");
    assert_eq!(
        (jd[0].as_str(), jd[1].as_str(), jd[3].as_str()),
        ("t", T, "01")
    );
    assert_ne!(jd[2], P, "a new server span id");
    assert_eq!(app.tp().trace_id, T, "jd in → w3c out");
    assert_eq!(app.tp().parent_id, jd[2]);
    let ujd = split(&up[0].one("jd-trace-id"), '-');
    assert_eq!(ujd[1], T, "outbound: jd continued");
    assert_eq!(
        up[0].tp().parent_id,
        ujd[2],
        "outbound: same client span in both"
    );

    // The plain-pair format.
    let (app, up) = s.send("/", &[("TRACE_ID", T2), ("SPAN_ID", P)]).await;
    assert_eq!(app.one("trace_id"), T2);
    assert_ne!(app.one("span_id"), P);
    assert_eq!(app.tp().trace_id, T2);
    assert_eq!(up[0].one("trace_id"), T2);
}

#[tokio::test]
async fn mixed_agreeing_dialects_are_all_rewritten_to_one_span() {
    let s = setup(None, 1, copy_w3c()).await;
    let (app, _) = s
        .send(
            "/",
            &[
                ("traceparent", &format!("00-{T}-{P}-01")),
                ("b3", &format!("{T}-{P}-1")),
                ("uber-trace-id", &format!("{T}:{P}:0:1")),
            ],
        )
        .await;
    let span = app.tp().parent_id;
    assert_eq!(split(&app.one("b3"), '-')[1], span);
    assert_eq!(split(&app.one("uber-trace-id"), ':')[1], span);
    let m = scrape(s.stitch.admin).await;
    assert_eq!(
        metric(&m, "stitch_propagation_conflicts_total", &[]),
        0.0,
        "agreeing dialects are no conflict"
    );
    assert_eq!(
        metric(
            &m,
            "stitch_propagation_requests_total",
            &[("direction", "inbound"), ("dialect", "w3c")]
        ),
        1.0
    );
}

#[tokio::test]
async fn conflicting_dialects_first_in_priority_wins_and_the_conflict_is_counted() {
    let s = setup(None, 1, copy_w3c()).await;
    let (app, _) = s
        .send(
            "/",
            &[
                ("traceparent", &format!("00-{T}-{P}-01")),
                ("b3", &format!("{T2}-{P}-1")),
            ],
        )
        .await;
    assert_eq!(app.tp().trace_id, T, "w3c is first in extract");
    assert_eq!(
        split(&app.one("b3"), '-')[0],
        T,
        "the losing dialect is rewritten, no stale trace id travels on"
    );
    let m = scrape(s.stitch.admin).await;
    assert_eq!(
        metric(
            &m,
            "stitch_propagation_conflicts_total",
            &[("winner", "w3c"), ("loser", "b3")]
        ),
        1.0,
        "{m}"
    );
    let trace = trace_with(s.stitch.admin, T, 2)
        .await
        .expect("trace in the ring");
    let server = spans_of_kind(&trace, "server")[0];
    // The loser is named (the semconv doc says `winner>loser`, the layer writes the loser).
    let conflict = server["attributes"]["stitch.propagation.conflict"]
        .as_str()
        .expect("conflict attribute");
    assert!(conflict.ends_with("b3"), "{conflict}");
}

#[tokio::test]
async fn w3c_in_is_translated_to_b3_and_a_template_by_inject() {
    let rules = format!(
        "{JD_RULES}rules:\n  - match: {{ direction: outbound }}\n    inject: [w3c, b3, jd]\n"
    );
    let (_dir, path) = rules_file(&rules);
    let s = setup(Some(path), 1, copy(&["traceparent"])).await;
    let (app, up) = s
        .send("/", &[("traceparent", &format!("00-{T}-{P}-01"))])
        .await;
    assert_eq!(app.get("b3"), None, "inbound inject is only w3c");
    assert_eq!(app.get("jd-trace-id"), None);
    let u = &up[0];
    let client = u.tp().parent_id;
    let b3 = split(&u.one("b3"), '-');
    assert_eq!(
        (b3[0].as_str(), b3[1].as_str(), b3[2].as_str()),
        (T, client.as_str(), "1")
    );
    assert_eq!(b3[3], app.tp().parent_id, "b3 parent = the server span");
    assert_eq!(u.one("jd-trace-id"), format!("t-{T}-{client}-01"));
}

/// Rules with orphan inference.
const INFER: &str = "orphans: infer_single_inflight\n";

#[tokio::test]
async fn orphan_with_one_inbound_in_flight_gets_the_server_span_as_inferred_parent() {
    let (_dir, path) = rules_file(INFER);
    let s = setup(Some(path), 1, drop_all()).await;
    let (app, up) = s
        .send("/", &[("traceparent", &format!("00-{T}-{P}-01"))])
        .await;
    let server_span = app.tp().parent_id;
    let u = up[0].tp();
    assert_eq!(u.trace_id, T, "the orphan joined the in-flight trace");
    assert_ne!(
        u.parent_id, server_span,
        "the upstream sees the client span"
    );
    let trace = trace_with(s.stitch.admin, T, 2).await.expect("both spans");
    let client = spans_of_kind(&trace, "client")[0];
    assert_eq!(
        client["parent_span_id"], server_span,
        "client span under the server span"
    );
    assert_eq!(client["span_id"], u.parent_id);
    assert_eq!(client["attributes"]["stitch.parent.inferred"], true);
    let findings = trace["verdict"]["findings"].as_array().expect("findings");
    assert!(
        findings.iter().any(|f| f["kind"] == "inferred_parent"),
        "the guess is never silent: {trace}"
    );
    let m = scrape(s.stitch.admin).await;
    assert_eq!(
        metric(
            &m,
            "stitch_propagation_orphans_total",
            &[("outcome", "inferred")]
        ),
        1.0
    );
}

#[tokio::test]
async fn orphan_is_a_new_root_by_default_and_with_several_in_flight() {
    // Default policy.
    let s = setup(None, 1, drop_all()).await;
    let (app, up) = s
        .send("/", &[("traceparent", &format!("00-{T}-{P}-01"))])
        .await;
    assert_eq!(app.tp().trace_id, T);
    assert_ne!(
        up[0].tp().trace_id,
        T,
        "new_root: the orphan starts a new trace"
    );
    let m = scrape(s.stitch.admin).await;
    assert_eq!(
        metric(
            &m,
            "stitch_propagation_orphans_total",
            &[("outcome", "new_root")]
        ),
        1.0
    );

    // infer_single_inflight with two inbound requests in flight: ambiguous, new roots.
    let (_dir, path) = rules_file(INFER);
    let (up_addr, up_log) = upstream().await;
    let (app_listener, app_addr) = listener().await;
    let stitch = Loopback::to(app_addr)
        .rules(Some(path))
        .telemetry(ring_only("two-in-flight"))
        .start()
        .await;
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let inner = copying_app(stitch.outbound, up_addr, 1, drop_all());
    let handler: Handler = Arc::new(move |h: HeaderMap| {
        let (barrier, inner) = (barrier.clone(), inner.clone());
        Box::pin(async move {
            barrier.wait().await; // both inbound requests are in flight now
            inner(h).await
        })
    });
    let _app = serve_app(app_listener, handler);
    let send = |trace: &'static str| async move {
        raw_get(
            stitch.inbound,
            "/",
            &[("traceparent", &format!("00-{trace}-{P}-01"))],
        )
        .await
    };
    let (a, b) = tokio::join!(send(T), send(T2));
    assert_eq!((a, b), (200, 200));
    let traces: HashSet<String> = up_log.all().iter().map(|u| u.tp().trace_id).collect();
    assert_eq!(traces.len(), 2);
    assert!(
        !traces.contains(T) && !traces.contains(T2),
        "with two in flight nothing is inferred: {traces:?}"
    );
    let m = scrape(stitch.admin).await;
    assert_eq!(
        metric(
            &m,
            "stitch_propagation_orphans_total",
            &[("outcome", "inferred")]
        ),
        0.0
    );
}

#[tokio::test]
async fn tracestate_dropped_by_the_app_is_restored() {
    let s = setup(None, 1, copy(&["traceparent"])).await;
    let ts = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
    let (app, up) = s
        .send(
            "/",
            &[
                ("traceparent", &format!("00-{T}-{P}-01")),
                ("tracestate", ts),
            ],
        )
        .await;
    assert_eq!(app.one("tracestate"), ts);
    assert_eq!(up[0].tp().trace_id, T);
    assert_eq!(
        up[0].get("tracestate").as_deref(),
        Some(ts),
        "restored from the inbound request of the same trace"
    );
    let m = scrape(s.stitch.admin).await;
    assert_eq!(
        metric(&m, "stitch_propagation_tracestate_restores_total", &[]),
        1.0
    );
    let trace = trace_with(s.stitch.admin, T, 2).await.expect("spans");
    let client = spans_of_kind(&trace, "client")[0];
    assert_eq!(
        client["attributes"]["stitch.propagation.tracestate_restored"],
        true
    );
}

#[tokio::test]
async fn trace_false_rule_forwards_untouched() {
    let (_dir, path) = rules_file(
        "rules:\n  - match: { direction: inbound, path_prefix: /healthz }\n    trace: false\n",
    );
    let s = setup(Some(path), 1, copy_w3c()).await;
    let tp = format!("00-{T}-{P}-01");
    let (app, _) = s
        .send(
            "/healthz/live",
            &[
                ("traceparent", &tp),
                ("tracestate", "A=bad"),
                ("b3", "garbage"),
            ],
        )
        .await;
    assert_eq!(app.one("traceparent"), tp, "untouched");
    assert_eq!(app.one("tracestate"), "A=bad", "not even validated");
    assert_eq!(app.one("b3"), "garbage");
    let m = scrape(s.stitch.admin).await;
    assert_eq!(
        metric(
            &m,
            "stitch_propagation_requests_total",
            &[("direction", "inbound")]
        ),
        0.0,
        "no propagation on the untraced route"
    );
    // Other paths are still traced.
    let (app, _) = s.send("/orders", &[("traceparent", &tp)]).await;
    assert_ne!(app.tp().parent_id, P);
}

#[tokio::test]
async fn setup_sanity_the_upstream_really_records() {
    // A guard for the helpers the tests above rely on.
    let s: Setup = setup(None, 2, copy_w3c()).await;
    let (_, up): (Seen, Vec<Seen>) = s.send("/", &[]).await;
    assert_eq!(up.len(), 2);
    assert!(up.iter().all(|u| u.path.starts_with("/call/")));
}

#[tokio::test]
async fn per_route_rules_match_authority_glob_path_and_method() {
    let (up2_addr, up2_log) = upstream().await;
    let rules = format!(
        "rules:\n  - match: {{ direction: outbound, authority: \"127.0.0.1:{}\" }}\n    inject: [w3c, b3]\n  - match: {{ direction: inbound, path_prefix: /legacy, method: get }}\n    inject: [w3c, jaeger]\n",
        up2_addr.port()
    );
    let (_dir, path) = rules_file(&rules);
    let s = setup(Some(path), 1, copy_w3c()).await;
    // Outbound to the default upstream: no rule matches, w3c only.
    let (app, up) = s
        .send("/legacy/x", &[("traceparent", &format!("00-{T}-{P}-01"))])
        .await;
    assert!(
        app.get("uber-trace-id").is_some(),
        "inbound rule matched path + method"
    );
    assert_eq!(
        up[0].get("b3"),
        None,
        "the outbound rule names another authority"
    );
    let (app, _) = s
        .send("/orders", &[("traceparent", &format!("00-{T}-{P}-01"))])
        .await;
    assert_eq!(app.get("uber-trace-id"), None, "path prefix not matched");
    // Outbound to the matching authority.
    let tp = app.one("traceparent");
    let status = proxy_get(
        s.stitch.outbound,
        &format!("http://{up2_addr}/x"),
        &[(
            http::HeaderName::from_static("traceparent"),
            http::HeaderValue::from_str(&tp).expect("value"),
        )],
    )
    .await;
    assert_eq!(status, Ok(StatusCode::OK));
    let b3 = up2_log.last().one("b3");
    assert!(b3.starts_with(T), "authority glob matched: b3 {b3}");
}

#[tokio::test]
async fn baggage_passes_untouched_within_limits_and_is_dropped_over_them() {
    let s = setup(None, 1, copy(&["traceparent", "baggage"])).await;
    let ok = (0..64)
        .map(|i| format!("k{i}=v%20{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let (app, up) = s.send("/", &[("baggage", &ok)]).await;
    assert_eq!(app.one("baggage"), ok, "64 members: byte for byte");
    assert_eq!(up[0].one("baggage"), ok);
    let over = (0..65)
        .map(|i| format!("k{i}=v"))
        .collect::<Vec<_>>()
        .join(",");
    let (app, _) = s.send("/", &[("baggage", &over)]).await;
    assert_eq!(app.get("baggage"), None, "65 members: dropped");
    let big = format!("k={}", "v".repeat(8191));
    let (app, _) = s.send("/", &[("baggage", &big)]).await;
    assert_eq!(app.get("baggage"), None, "8193 bytes: dropped");
    let m = scrape(s.stitch.admin).await;
    assert!(
        metric(&m, "stitch_propagation_baggage_dropped_total", &[]) >= 2.0,
        "counted"
    );
}

#[tokio::test]
async fn lenient_repair_fixes_legacy_faults_and_counts_them() {
    let upper = T.to_ascii_uppercase();
    // Strict: upper-case hex is invalid, the trace restarts.
    let s = setup(None, 1, copy_w3c()).await;
    let (app, _) = s
        .send("/", &[("traceparent", &format!("00-{upper}-{P}-01"))])
        .await;
    assert_ne!(app.tp().trace_id, T);
    // Lenient: repaired, continued, written back normalized, counted.
    let (_dir, path) = rules_file("repair: lenient\n");
    let s = setup(Some(path), 1, copy(&["b3"])).await;
    let (app, _) = s
        .send("/", &[("traceparent", &format!("00-{upper}-{P}-01"))])
        .await;
    assert_eq!(app.tp().trace_id, T, "upper-case hex repaired");
    let (app, up) = s.send("/", &[("b3", &format!("{T}-{P}-1-"))]).await;
    assert_eq!(split(&app.one("b3"), '-')[0], T, "missing parent repaired");
    assert_eq!(split(&up[0].one("b3"), '-')[0], T);
    let trace = trace_with(s.stitch.admin, T, 2).await.expect("spans");
    let repairs = spans_of_kind(&trace, "server")
        .iter()
        .filter_map(|s| s["attributes"]["stitch.propagation.repairs"].as_str())
        .collect::<Vec<_>>()
        .join(",");
    assert!(
        repairs.contains("upper_case_hex"),
        "repair on the span: {trace}"
    );
    assert!(
        repairs.contains("missing_parent"),
        "repair on the span: {trace}"
    );
    let m = scrape(s.stitch.admin).await;
    assert_eq!(
        metric(
            &m,
            "stitch_propagation_repairs_total",
            &[("dialect", "w3c"), ("kind", "upper_case_hex")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "stitch_propagation_repairs_total",
            &[("kind", "missing_parent")]
        ),
        1.0
    );
}

#[tokio::test]
async fn root_ratio_zero_leaves_new_roots_unsampled_but_propagated() {
    let (_dir, path) = rules_file("sampling: { root_ratio: 0.0 }\n");
    let s = setup(Some(path), 1, copy_w3c()).await;
    let (app, up) = s.send("/", &[]).await;
    let tp = app.tp();
    assert!(!tp.sampled(), "new root not sampled");
    assert_eq!(up[0].tp().trace_id, tp.trace_id, "headers still propagated");
    assert!(!up[0].tp().sampled());
    // A sampled parent is still followed.
    let (app, _) = s
        .send("/", &[("traceparent", &format!("00-{T}-{P}-01"))])
        .await;
    assert!(app.tp().sampled());
}

#[tokio::test]
async fn inflight_entry_is_released_when_the_response_ends_or_the_client_goes_away() {
    use tokio::io::AsyncWriteExt;
    let (_dir, path) = rules_file(INFER);
    let (up_addr, up_log) = upstream().await;
    let (app_listener, app_addr) = listener().await;
    let stitch = Loopback::to(app_addr)
        .rules(Some(path))
        .telemetry(ring_only("inflight"))
        .start()
        .await;
    let calls = copying_app(stitch.outbound, up_addr, 1, drop_all());
    let handler: Handler = Arc::new(move |h: HeaderMap| {
        let calls = calls.clone();
        Box::pin(async move {
            if h.contains_key("x-hang") {
                std::future::pending::<()>().await;
            }
            calls(h).await
        })
    });
    let app = serve_app(app_listener, handler);
    let orphan = || async {
        let before = up_log.len();
        let status = proxy_get(stitch.outbound, &format!("http://{up_addr}/o"), &[]).await;
        assert_eq!(status, Ok(StatusCode::OK));
        up_log.all()[before].tp().trace_id
    };

    // A finished request leaves nothing in flight.
    let status = raw_get(
        stitch.inbound,
        "/",
        &[("traceparent", &format!("00-{T}-{P}-01"))],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(up_log.last().tp().trace_id, T, "inferred while in flight");
    assert_ne!(orphan().await, T, "released at the end of the response");

    // A hanging request is in flight until its client goes away.
    let mut client = tokio::net::TcpStream::connect(stitch.inbound)
        .await
        .expect("connect");
    let head = format!(
        "GET /hang HTTP/1.1\r\nHost: app\r\nx-hang: 1\r\ntraceparent: 00-{T2}-{P}-01\r\n\r\n"
    );
    client.write_all(head.as_bytes()).await.expect("write");
    eventually("the app got the hanging request", async || app.len() == 2).await;
    assert_eq!(orphan().await, T2, "one inbound in flight: inferred");
    drop(client);
    eventually(
        "the in-flight entry is released when the client goes away",
        async || orphan().await != T2,
    )
    .await;
    let trace = trace_with(stitch.admin, T2, 1)
        .await
        .expect("the cancelled span");
    let server = spans_of_kind(&trace, "server")[0];
    assert_eq!(server["status"], "error", "{server}");
    assert_eq!(server["attributes"]["error.type"], "cancelled", "{server}");
}

#[tokio::test]
async fn invalid_traceparent_with_valid_b3_continues_b3_and_rewrites_traceparent() {
    let s = setup(None, 1, copy_w3c()).await;
    let (app, up) = s
        .send(
            "/",
            &[
                ("traceparent", &format!("00-{T2}-{P}-0x")),
                ("tracestate", "congo=t61rcWkgMzE"),
                ("b3", &format!("{T}-{P}-1")),
            ],
        )
        .await;
    let tp = app.tp();
    assert_eq!(
        tp.trace_id, T,
        "b3 won; the invalid traceparent was replaced"
    );
    assert_eq!(split(&app.one("b3"), '-')[1], tp.parent_id);
    assert_eq!(
        app.get("tracestate"),
        None,
        "tracestate went with the invalid traceparent"
    );
    assert_eq!(up[0].tp().trace_id, T);
    let m = scrape(s.stitch.admin).await;
    assert_eq!(
        metric(
            &m,
            "stitch_propagation_invalid_headers_total",
            &[("dialect", "w3c")]
        ),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn inferred_orphan_carries_the_inbound_tracestate() {
    let (_dir, path) = rules_file(INFER);
    let s = setup(Some(path), 1, drop_all()).await;
    let ts = "rojo=00f067aa0ba902b7";
    let (_, up) = s
        .send(
            "/",
            &[
                ("traceparent", &format!("00-{T}-{P}-01")),
                ("tracestate", ts),
            ],
        )
        .await;
    assert_eq!(up[0].tp().trace_id, T);
    assert_eq!(
        up[0].get("tracestate").as_deref(),
        Some(ts),
        "same trace, same tracestate"
    );
}

#[tokio::test]
async fn outbound_origin_form_with_host_header_is_traced_and_routed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (up_addr, up_log) = upstream().await;
    let (_dir, path) = rules_file(&format!(
        "rules:\n  - match: {{ direction: outbound, authority: \"127.0.0.1:{}\" }}\n    inject: [jaeger]\n",
        up_addr.port()
    ));
    let (app_listener, app_addr) = listener().await;
    let stitch = Loopback::to(app_addr)
        .rules(Some(path))
        .telemetry(ring_only("host-header"))
        .start()
        .await;
    drop(app_listener);
    let mut s = tokio::net::TcpStream::connect(stitch.outbound)
        .await
        .expect("connect");
    let head = format!(
        "GET /by-host HTTP/1.1\r\nHost: {up_addr}\r\ntraceparent: 00-{T}-{P}-01\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut buf))
        .await
        .expect("in time")
        .expect("read");
    assert!(
        buf.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    let seen = up_log.last();
    assert_eq!(seen.path, "/by-host");
    assert_eq!(seen.tp().trace_id, T);
    let j = split(&seen.one("uber-trace-id"), ':');
    assert_eq!(
        (j[0].as_str(), j[1].as_str(), j[2].as_str()),
        (T, seen.tp().parent_id.as_str(), P)
    );
}

#[tokio::test]
async fn baggage_limit_counts_the_commas_joining_header_lines() {
    let s = setup(None, 0, copy(&["baggage"])).await;
    // Two lines of 4096 bytes: 8193 bytes once joined with `,` (the spec's limit counts the
    // list-member delimiters), so one over 8192.
    let line = |k: &str| format!("{k}={}", "v".repeat(4094));
    let (app, _) = s
        .send("/", &[("baggage", &line("a")), ("baggage", &line("b"))])
        .await;
    let lines: Vec<usize> = app.all("baggage").iter().map(String::len).collect();
    assert_eq!(
        lines,
        Vec::<usize>::new(),
        "8193 bytes joined: dropped (line lengths shown)"
    );
    // One byte less fits.
    let short = format!("b={}", "v".repeat(4093));
    let (app, _) = s
        .send("/", &[("baggage", &line("a")), ("baggage", &short)])
        .await;
    assert_eq!(app.all("baggage").len(), 2, "8192 bytes joined: kept");
}

#[tokio::test]
async fn b3_keeps_its_64_bit_width_when_w3c_wins_with_the_same_trace() {
    let s = setup(None, 1, copy(&["traceparent", "b3"])).await;
    let padded = format!("{}{T64}", "0".repeat(16));
    let (app, up) = s
        .send(
            "/",
            &[
                ("traceparent", &format!("00-{padded}-{P}-01")),
                ("b3", &format!("{T64}-{P}-1")),
            ],
        )
        .await;
    assert_eq!(app.tp().trace_id, padded);
    let m = scrape(s.stitch.admin).await;
    assert_eq!(
        metric(&m, "stitch_propagation_conflicts_total", &[]),
        0.0,
        "the same trace in two widths is no conflict"
    );
    // "written back in the width the peer used": the B3 peer used 64 bits.
    assert_eq!(
        split(&app.one("b3"), '-')[0],
        T64,
        "b3 keeps its width inbound"
    );
    assert_eq!(
        split(&up[0].one("b3"), '-')[0],
        T64,
        "b3 keeps its width outbound"
    );
}

#[tokio::test]
async fn template_with_every_placeholder_round_trips_through_the_app() {
    let (_dir, path) = rules_file(
        r#"
extract: [w3c, ctx]
inject: [w3c, ctx]
formats:
  ctx:
    headers:
      x-ctx: "{trace_id};{span_id};{parent_span_id};{sampled}"
"#,
    );
    let s = setup(Some(path), 1, copy(&["x-ctx"])).await;
    // A root: stitch writes the template with no parent; the app copies only x-ctx, so the
    // outbound side must be able to read back what the inbound side wrote.
    let (app, up) = s.send("/", &[]).await;
    let written = app.one("x-ctx");
    let f = split(&written, ';');
    assert_eq!(f.len(), 4, "{written}");
    assert_eq!(f[0], app.tp().trace_id);
    assert_eq!(f[1], app.tp().parent_id);
    assert_eq!(f[3], "1");
    let out = split(&up[0].one("x-ctx"), ';');
    assert_eq!(
        out[0],
        f[0],
        "outbound continued the trace from the template stitch wrote ({written} → {})",
        up[0].one("x-ctx")
    );
    assert_eq!(out[2], f[1], "outbound parent = the server span");
    // And with a parent.
    let (app, _) = s
        .send("/", &[("x-ctx", &format!("{T};{P};{};1", "a".repeat(16)))])
        .await;
    let f = split(&app.one("x-ctx"), ';');
    assert_eq!((f[0].as_str(), f[2].as_str()), (T, P));
}

#[tokio::test]
async fn concurrent_requests_of_one_trace_are_all_registered_and_all_released() {
    const N: usize = 8;
    let (_dir, path) = rules_file(INFER);
    let (up_addr, up_log) = upstream().await;
    let (app_listener, app_addr) = listener().await;
    let stitch = Loopback::to(app_addr)
        .rules(Some(path))
        .telemetry(ring_only("fan-in"))
        .start()
        .await;
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let inner = copying_app(stitch.outbound, up_addr, 1, drop_all());
    let handler: Handler = Arc::new(move |h: HeaderMap| {
        let (barrier, inner) = (barrier.clone(), inner.clone());
        Box::pin(async move {
            if h.contains_key("x-together") {
                barrier.wait().await; // all N in flight at once
            }
            inner(h).await
        })
    });
    let _app = serve_app(app_listener, handler);
    let tp = format!("00-{T}-{P}-01");
    let headers = [("traceparent", tp.as_str()), ("x-together", "1")];
    let sends = (0..N).map(|_| raw_get(stitch.inbound, "/", &headers));
    let statuses = futures::future::join_all(sends).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let orphans: Vec<String> = up_log.all().iter().map(|u| u.tp().trace_id).collect();
    assert_eq!(orphans.len(), N);
    assert!(
        orphans.iter().all(|t| t != T),
        "N requests of one trace in flight are N, not one: nothing inferred ({orphans:?})"
    );
    // All N released: a single new in-flight request is inferred again.
    let status = raw_get(
        stitch.inbound,
        "/",
        &[("traceparent", &format!("00-{T2}-{P}-01"))],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        up_log.last().tp().trace_id,
        T2,
        "exactly one in flight after the fan-in"
    );
}
