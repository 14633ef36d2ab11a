//! W3C Trace Context Level 2 through real sockets: a client → stitch inbound → an app that only
//! copies `traceparent`/`tracestate` → stitch outbound → a recording upstream. Each test asserts
//! what the app and the upstream received (issue 7, "Dialects" → W3C).

use std::collections::HashSet;

use http::{HeaderName, HeaderValue};

use crate::support::fetch;
use crate::support::metrics::{metric, scrape};
use crate::support::trace::{
    Pick, Seen, Setup, Tp, copy_w3c, raw_get, replay_out, setup, spans_of_kind, trace_with,
};

const T: &str = "0af7651916cd43dd8448eb211c80319c";
const P: &str = "b7ad6b7169203331";

fn tp(flags: &str) -> String {
    format!("00-{T}-{P}-{flags}")
}

/// Sends one request with `headers` through stitch inbound; returns what the app saw and the
/// upstream requests the app's calls produced.
async fn through(s: &Setup, headers: &[(&str, &str)]) -> (Seen, Vec<Seen>) {
    let before = s.upstream.len();
    let apps_before = s.app.len();
    let status = raw_get(s.stitch.inbound, "/orders/1", headers).await;
    assert_eq!(status, 200, "request with {headers:?} succeeded end to end");
    assert_eq!(s.app.len(), apps_before + 1, "the app saw the request");
    (s.app.last(), s.upstream.all()[before..].to_vec())
}

fn joined(seen: &Seen) -> Option<String> {
    let lines = seen.all("tracestate");
    (!lines.is_empty()).then(|| lines.join(","))
}

#[tokio::test]
async fn three_calls_get_three_parent_ids_in_one_trace() {
    let s = setup(None, 3, copy_w3c()).await;
    let (app, up) = through(&s, &[("traceparent", &tp("01"))]).await;
    let app_tp = app.tp();
    assert_eq!(app_tp.trace_id, T, "the app continues the caller's trace");
    assert_eq!(app_tp.version, "00");
    assert_ne!(
        app_tp.parent_id, P,
        "the app sees stitch's server span, not the caller's span"
    );
    assert_eq!(up.len(), 3, "three forwarded calls");
    let parents: HashSet<String> = up.iter().map(|u| u.tp().parent_id).collect();
    assert_eq!(parents.len(), 3, "three different parent-ids: {up:?}");
    for u in &up {
        let t = u.tp();
        assert_eq!(t.trace_id, T, "one trace id");
        assert_ne!(
            t.parent_id, app_tp.parent_id,
            "a new span id per forwarded request"
        );
        assert_ne!(t.parent_id, P);
        assert!(t.sampled());
    }
}

#[tokio::test]
async fn upstream_parent_is_the_client_span_and_app_parent_is_the_server_span() {
    let s = setup(None, 2, copy_w3c()).await;
    let (app, up) = through(&s, &[("traceparent", &tp("01"))]).await;
    let trace = trace_with(s.stitch.admin, T, 3)
        .await
        .expect("server + two client spans reach /traces");
    let servers = spans_of_kind(&trace, "server");
    let clients = spans_of_kind(&trace, "client");
    assert_eq!(servers.len(), 1, "{trace}");
    assert_eq!(clients.len(), 2, "{trace}");
    let server = servers[0];
    assert_eq!(
        server["parent_span_id"], P,
        "server span's parent is the caller's span"
    );
    assert_eq!(
        server["span_id"],
        app.tp().parent_id,
        "the app's parent-id is stitch's server span id"
    );
    let client_ids: HashSet<String> = clients
        .iter()
        .map(|c| {
            assert_eq!(
                c["parent_span_id"], server["span_id"],
                "client under server"
            );
            c["span_id"].as_str().expect("span id").to_owned()
        })
        .collect();
    let upstream_parents: HashSet<String> = up.iter().map(|u| u.tp().parent_id).collect();
    assert_eq!(
        upstream_parents, client_ids,
        "each upstream parent-id is one of stitch's client span ids"
    );
}

#[tokio::test]
async fn surrounding_spaces_and_tabs_are_trimmed() {
    // The app pads what it copies with spaces and tabs as well.
    let padded: Pick = std::sync::Arc::new(|h: &http::HeaderMap, _| {
        let tp = h.get("traceparent").expect("app got a traceparent");
        let tp = format!(" \t{}\t ", tp.to_str().expect("ascii"));
        vec![(
            HeaderName::from_static("traceparent"),
            HeaderValue::from_str(&tp).expect("tabs and spaces are valid in a value"),
        )]
    });
    let s = setup(None, 1, padded).await;
    let (app, up) = through(
        &s,
        &[
            ("traceparent", &format!(" \t {}\t ", tp("01"))),
            ("tracestate", "\t congo=t61rcWkgMzE \t"),
        ],
    )
    .await;
    let app_tp = app.tp();
    assert_eq!(app_tp.trace_id, T, "padded traceparent accepted inbound");
    assert_eq!(joined(&app).as_deref(), Some("congo=t61rcWkgMzE"));
    assert_eq!(up.len(), 1);
    let up_tp = up[0].tp();
    assert_eq!(up_tp.trace_id, T, "padded traceparent accepted outbound");
    assert_ne!(up_tp.parent_id, app_tp.parent_id);
}

#[tokio::test]
async fn missing_traceparent_restarts_with_a_random_trace_and_no_tracestate() {
    let s = setup(None, 1, copy_w3c()).await;
    let (a1, up1) = through(&s, &[("tracestate", "congo=t61rcWkgMzE")]).await;
    let (a2, _) = through(&s, &[]).await;
    let (t1, t2) = (a1.tp(), a2.tp());
    assert_ne!(
        t1.trace_id, t2.trace_id,
        "each restart gets its own random trace id"
    );
    assert!(
        t1.random() && t2.random(),
        "stitch-made trace ids carry the random flag"
    );
    assert!(t1.sampled(), "new roots sampled at root_ratio 1.0");
    assert_eq!(joined(&a1), None, "tracestate dropped without traceparent");
    assert_eq!(up1[0].tp().trace_id, t1.trace_id);
    assert_eq!(joined(&up1[0]), None);
}

#[tokio::test]
async fn invalid_traceparent_restarts_the_trace_on_both_sides() {
    let upper = T.to_ascii_uppercase();
    let zeros32 = "0".repeat(32);
    let zeros16 = "0".repeat(16);
    let cases: Vec<(&str, String)> = vec![
        ("version-00 value of 54 chars", format!("00-{T}-{P}-1")),
        ("version-00 value of 56 chars", format!("00-{T}-{P}-011")),
        ("version-00 with trailing dash", format!("00-{T}-{P}-01-")),
        (
            "version-00 with trailing data",
            format!("00-{T}-{P}-01-extra"),
        ),
        ("upper-case trace id", format!("00-{upper}-{P}-01")),
        ("upper-case version", format!("0A-{T}-{P}-01")),
        ("non-hex in trace id", format!("00-{}g-{P}-01", &T[..31])),
        ("non-hex in parent id", format!("00-{T}-{}z-01", &P[..15])),
        ("non-hex flags", format!("00-{T}-{P}-0g")),
        ("all-zero trace id", format!("00-{zeros32}-{P}-01")),
        ("all-zero parent id", format!("00-{T}-{zeros16}-01")),
        ("version ff", format!("ff-{T}-{P}-01")),
        ("one-digit version", format!("0-{T}-{P}-01")),
        ("three-digit version", format!("000-{T}-{P}-01")),
        ("non-hex version", format!("xy-{T}-{P}-01")),
        ("64-bit trace id", format!("00-{}-{P}-01", &T[16..])),
        ("short parent id", format!("00-{T}-{}-01", &P[1..])),
        ("wrong separators", format!("00_{T}_{P}_01")),
        ("inner whitespace", format!("00- {}-{P}-01", &T[1..])),
        ("empty value", String::new()),
        (
            "higher version, 56th char not a dash",
            format!("cc-{T}-{P}-01.what"),
        ),
        ("higher version, three fields", format!("cc-{T}-{P}")),
    ];
    let s = setup(None, 1, replay_out()).await;
    let mut failures = Vec::new();
    for (what, value) in &cases {
        let (app, up) = through(
            &s,
            &[
                ("traceparent", value),
                ("tracestate", "congo=t61rcWkgMzE"),
                ("x-out-traceparent", value),
                ("x-out-tracestate", "congo=t61rcWkgMzE"),
            ],
        )
        .await;
        // In front of the app: the trace restarts.
        let a = app.tp();
        if a.trace_id == T || !a.random() || joined(&app).is_some() {
            failures.push(format!(
                "{what} ({value:?}) inbound: app got {a:?} tracestate {:?}",
                joined(&app)
            ));
        }
        // Behind the app: the app sent the same invalid value; stitch restarts again.
        let u = up[0].tp();
        if u.trace_id == T || u.trace_id == a.trace_id || !u.random() || joined(&up[0]).is_some() {
            failures.push(format!(
                "{what} ({value:?}) outbound: upstream got {u:?} tracestate {:?}",
                joined(&up[0])
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "not restarted:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn repeated_traceparent_restarts_the_trace() {
    let s = setup(None, 1, copy_w3c()).await;
    let other = format!("00-{}-{P}-01", "1".repeat(32));
    for (what, second) in [("same value twice", tp("01")), ("two values", other)] {
        let (app, up) = through(
            &s,
            &[
                ("traceparent", &tp("01")),
                ("traceparent", &second),
                ("tracestate", "congo=t61rcWkgMzE"),
            ],
        )
        .await;
        let a = app.tp();
        assert_ne!(a.trace_id, T, "{what}: restarted");
        assert_ne!(a.trace_id, "1".repeat(32), "{what}: restarted");
        assert!(a.random(), "{what}: stitch-made trace id");
        assert_eq!(joined(&app), None, "{what}: no tracestate on a restart");
        assert_eq!(up[0].tp().trace_id, a.trace_id);
    }
}

#[tokio::test]
async fn higher_version_is_parsed_by_four_fields_and_reemitted_as_00() {
    let s = setup(None, 1, replay_out()).await;
    for value in [
        format!("cc-{T}-{P}-01"),
        format!("cc-{T}-{P}-01-what-the-future-will-be-like"),
    ] {
        let (app, up) = through(
            &s,
            &[
                ("traceparent", &value),
                ("tracestate", "congo=t61rcWkgMzE"),
                ("x-out-traceparent", &value),
            ],
        )
        .await;
        let a = app.tp();
        assert_eq!(a.version, "00", "{value}: re-emitted as version 00");
        assert_eq!(a.trace_id, T, "{value}: trace continued inbound");
        assert!(a.sampled(), "{value}: flags read from the fourth field");
        assert_eq!(joined(&app).as_deref(), Some("congo=t61rcWkgMzE"));
        let u = up[0].tp();
        assert_eq!(u.version, "00", "{value}: re-emitted as 00 outbound");
        assert_eq!(u.trace_id, T, "{value}: trace continued outbound");
    }
}

#[tokio::test]
async fn sampled_flag_follows_the_parent() {
    let s = setup(None, 1, copy_w3c()).await;
    for (flags, sampled) in [("00", false), ("01", true)] {
        let (app, up) = through(&s, &[("traceparent", &tp(flags))]).await;
        assert_eq!(app.tp().sampled(), sampled, "inbound, parent flags {flags}");
        assert_eq!(
            up[0].tp().sampled(),
            sampled,
            "outbound, parent flags {flags}"
        );
        assert_eq!(up[0].tp().trace_id, T);
    }
}

#[tokio::test]
async fn random_flag_is_kept_from_upstream_and_set_on_new_trace_ids() {
    let s = setup(None, 1, copy_w3c()).await;
    for (flags, random) in [("00", false), ("01", false), ("02", true), ("03", true)] {
        let (app, up) = through(&s, &[("traceparent", &tp(flags))]).await;
        let (a, u) = (app.tp(), up[0].tp());
        assert_eq!(a.trace_id, T);
        assert_eq!(a.random(), random, "inbound, parent flags {flags}: {a:?}");
        assert_eq!(u.random(), random, "outbound, parent flags {flags}: {u:?}");
        assert_eq!(a.sampled(), flags == "01" || flags == "03");
    }
    let (app, _) = through(&s, &[]).await;
    assert!(app.tp().random(), "a trace id stitch made is random");
}

#[tokio::test]
async fn tracestate_lines_are_joined_in_order() {
    let s = setup(None, 1, copy_w3c()).await;
    let (app, up) = through(
        &s,
        &[
            ("traceparent", &tp("01")),
            ("tracestate", "rojo=00f067aa0ba902b7"),
            ("tracestate", "congo=t61rcWkgMzE,a@b=1"),
        ],
    )
    .await;
    let expect = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE,a@b=1";
    assert_eq!(joined(&app).as_deref(), Some(expect), "app");
    assert_eq!(joined(&up[0]).as_deref(), Some(expect), "upstream");
}

fn members(seen: &Seen) -> Option<Vec<String>> {
    joined(seen).map(|j| {
        j.split(',')
            .map(|m| m.trim_matches([' ', '\t']).to_owned())
            .filter(|m| !m.is_empty())
            .collect()
    })
}

#[tokio::test]
async fn tracestate_empty_members_are_ignored() {
    let s = setup(None, 1, copy_w3c()).await;
    let (app, up) = through(
        &s,
        &[
            ("traceparent", &tp("01")),
            ("tracestate", "a=1,, ,\t,b=2,"),
            ("tracestate", ",c=3"),
        ],
    )
    .await;
    let expect = vec!["a=1".to_owned(), "b=2".to_owned(), "c=3".to_owned()];
    assert_eq!(members(&app), Some(expect.clone()), "app kept the members");
    assert_eq!(members(&up[0]), Some(expect), "upstream kept the members");
}

#[tokio::test]
async fn tracestate_is_dropped_without_a_valid_traceparent() {
    let s = setup(None, 1, replay_out()).await;
    let (app, up) = through(
        &s,
        &[
            ("traceparent", &format!("00-{T}-{P}-0x")),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("x-out-tracestate", "congo=t61rcWkgMzE"),
        ],
    )
    .await;
    assert_eq!(joined(&app), None, "inbound: invalid traceparent");
    assert_eq!(joined(&up[0]), None, "outbound: no traceparent at all");
}

#[tokio::test]
async fn tracestate_invalid_member_drops_the_whole_header() {
    let long_key = "k".repeat(257);
    let long_value = "v".repeat(257);
    let cases: Vec<(&str, String)> = vec![
        ("upper-case key", "a=1,Bad=2".to_owned()),
        ("key starting with _", "a=1,_k=2".to_owned()),
        ("key with a dot", "a=1,k.x=2".to_owned()),
        ("key of 257 chars", format!("a=1,{long_key}=2")),
        ("member without =", "a=1,novalue".to_owned()),
        ("empty value", "a=1,k=".to_owned()),
        ("value with =", "a=1,k=x=y".to_owned()),
        ("value with a tab inside", "a=1,k=x\ty".to_owned()),
        ("value of 257 chars", format!("a=1,k={long_value}")),
        ("value with a non-ASCII byte", "a=1,k=caf\u{e9}".to_owned()),
        ("empty key", "a=1,=2".to_owned()),
        ("space inside a key", "foo =1".to_owned()),
        ("key starting with @", "@foo=1,bar=2".to_owned()),
        ("empty value before a member", "foo=,bar=3".to_owned()),
    ];
    let s = setup(None, 1, replay_out()).await;
    let mut failures = Vec::new();
    for (what, value) in &cases {
        let (app, up) = through(
            &s,
            &[
                ("traceparent", &tp("01")),
                ("tracestate", value),
                ("x-out-traceparent", &tp("01")),
                ("x-out-tracestate", value),
            ],
        )
        .await;
        if app.tp().trace_id != T || joined(&app).is_some() {
            failures.push(format!("{what} inbound: {:?}", app.headers));
        }
        if up[0].tp().trace_id != T || joined(&up[0]).is_some() {
            failures.push(format!("{what} outbound: {:?}", up[0].headers));
        }
    }
    assert!(
        failures.is_empty(),
        "tracestate not dropped (or trace not kept):\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn tracestate_over_32_members_is_dropped_and_32_are_kept() {
    let list = |n: usize| {
        (0..n)
            .map(|i| format!("k{i}=v{i}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let s = setup(None, 1, copy_w3c()).await;
    let (app, up) = through(&s, &[("traceparent", &tp("01")), ("tracestate", &list(32))]).await;
    assert_eq!(joined(&app), Some(list(32)), "32 members kept inbound");
    assert_eq!(joined(&up[0]), Some(list(32)), "32 members kept outbound");
    let (app, up) = through(&s, &[("traceparent", &tp("01")), ("tracestate", &list(33))]).await;
    assert_eq!(joined(&app), None, "33 members: dropped, never truncated");
    assert_eq!(joined(&up[0]), None);
    // 33 members spread over two lines count together.
    let (app, _) = through(
        &s,
        &[
            ("traceparent", &tp("01")),
            ("tracestate", &list(20)),
            (
                "tracestate",
                &(20..33)
                    .map(|i| format!("k{i}=v{i}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ],
    )
    .await;
    assert_eq!(joined(&app), None, "33 members over two lines: dropped");
}

#[tokio::test]
async fn tracestate_valid_members_are_forwarded_byte_for_byte_in_order() {
    let long_key = format!("a{}", "z".repeat(255));
    let long_value = "v".repeat(256);
    let values = [
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".to_owned(),
        // The 2024+ key grammar: digits first, `_ - * / @` anywhere after the first char.
        "t@abcdefghijklmnopqrstuvwxyz0123=old-limits-gone,1tenant@sys=x,a_b-c*d/e@f=!\"#$%&'()*+-./:;<>?@[\\]^_`{|}~,zz=val ue".to_owned(),
        format!("{long_key}={long_value},b=1"),
        // The W3C test suite's "all allowed characters" members, and `@` anywhere after the
        // first character of a key (2024+ grammar).
        format!(
            "abcdefghijklmnopqrstuvwxyz0123456789_-*/={},abcdefghijklmnopqrstuvwxyz0123456789_-*/@a-z0-9_-*/=x,foo@@bar=1,foo@=2",
            (0x20u8..=0x7e)
                .filter(|c| !matches!(c, b',' | b'=' | b' '))
                .map(char::from)
                .collect::<String>()
        ),
        // Duplicate keys are kept (or de-duplicated), never the header dropped.
        "dup=1,other=2,dup=3".to_owned(),
    ];
    let s = setup(None, 1, copy_w3c()).await;
    for value in &values {
        let (app, up) = through(&s, &[("traceparent", &tp("01")), ("tracestate", value)]).await;
        if value.starts_with("dup=") {
            let m = members(&app).expect("duplicate keys: header kept");
            assert!(m.iter().any(|m| m.starts_with("dup=")) && m.contains(&"other=2".to_owned()));
            continue;
        }
        assert_eq!(
            joined(&app).as_deref(),
            Some(value.as_str()),
            "app got it byte for byte"
        );
        assert_eq!(
            joined(&up[0]).as_deref(),
            Some(value.as_str()),
            "upstream got it byte for byte"
        );
        assert_eq!(up[0].tp().trace_id, T);
    }
}

#[tokio::test]
async fn tp_helper_rejects_what_stitch_must_never_write() {
    // The assertions above lean on `Tp::parse`; make sure it fails on a bad value.
    let bad = std::panic::catch_unwind(|| Tp::parse(&format!("00-{T}-{P}-01-x")));
    assert!(bad.is_err());
    assert_eq!(Tp::parse(&tp("03")).flags, 3);
}

#[tokio::test]
async fn unknown_flags_are_zeroed_and_known_ones_kept() {
    let s = setup(None, 1, copy_w3c()).await;
    let (app, up) = through(&s, &[("traceparent", &tp("ff"))]).await;
    let (a, u) = (app.tp(), up[0].tp());
    assert_eq!(a.trace_id, T);
    assert_eq!(
        a.flags, 0x03,
        "reserved flag bits set to zero, sampled + random kept: {a:?}"
    );
    assert_eq!(u.flags, 0x03, "outbound too: {u:?}");
}

#[tokio::test]
async fn unsampled_parent_propagates_headers_but_records_no_span() {
    let s = setup(None, 1, copy_w3c()).await;
    let (app, up) = through(&s, &[("traceparent", &tp("00"))]).await;
    assert_eq!(app.tp().trace_id, T, "headers propagated, sampled or not");
    assert_eq!(up[0].tp().trace_id, T);
    // A sampled request afterwards: once its spans are in the ring, the unsampled one's would
    // be too, had it recorded any.
    let t2 = "22222222222222223333333333333333";
    through(&s, &[("traceparent", &format!("00-{t2}-{P}-01"))]).await;
    assert!(trace_with(s.stitch.admin, t2, 2).await.is_some());
    let (status, _, _) = fetch(s.stitch.admin, &format!("/traces/{T}")).await;
    assert_eq!(
        status,
        http::StatusCode::NOT_FOUND,
        "no span for an unsampled trace"
    );
}

#[tokio::test]
async fn http2_client_gets_the_same_w3c_handling() {
    let s = setup(None, 2, copy_w3c()).await;
    let stream = tokio::net::TcpStream::connect(s.stitch.inbound)
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2c handshake");
    tokio::spawn(conn);
    let mut req = http::Request::get(format!("http://{}/h2", s.stitch.inbound))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .expect("request");
    let h = req.headers_mut();
    h.insert(
        "traceparent",
        HeaderValue::from_str(&tp("01")).expect("value"),
    );
    h.append(
        "tracestate",
        HeaderValue::from_static("rojo=00f067aa0ba902b7"),
    );
    h.append("tracestate", HeaderValue::from_static("congo=t61rcWkgMzE"));
    let resp = sender.send_request(req).await.expect("h2 response");
    assert_eq!(resp.status(), 200);
    let app = s.app.last();
    assert_eq!(app.tp().trace_id, T);
    assert_ne!(app.tp().parent_id, P);
    let expect = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
    assert_eq!(
        joined(&app).as_deref(),
        Some(expect),
        "field lines kept in order over h2"
    );
    let up = s.upstream.all();
    assert_eq!(up.len(), 2);
    assert_ne!(up[0].tp().parent_id, up[1].tp().parent_id);
    assert!(up.iter().all(|u| joined(u).as_deref() == Some(expect)));
}

#[tokio::test]
async fn dropped_tracestate_is_counted_as_an_invalid_header() {
    let s = setup(None, 0, copy_w3c()).await;
    let (app, _) = through(
        &s,
        &[("traceparent", &tp("01")), ("tracestate", "a=1,Bad=2")],
    )
    .await;
    assert_eq!(joined(&app), None, "dropped");
    let m = scrape(s.stitch.admin).await;
    assert_eq!(
        metric(&m, "stitch_propagation_invalid_headers_total", &[]),
        1.0,
        "issue 4 counts invalid headers; an invalid tracestate is one:\n{}",
        m.lines()
            .filter(|l| l.contains("invalid_headers"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test]
async fn header_names_match_case_insensitively() {
    let s = setup(None, 1, copy_w3c()).await;
    let (app, up) = through(
        &s,
        &[
            ("TraceParent", &tp("01")),
            ("TRACESTATE", "congo=t61rcWkgMzE"),
        ],
    )
    .await;
    assert_eq!(app.tp().trace_id, T);
    assert_eq!(joined(&app).as_deref(), Some("congo=t61rcWkgMzE"));
    assert_eq!(up[0].tp().trace_id, T);
    // A near miss is not the header.
    let (app, _) = through(&s, &[("trace-parent", &tp("01"))]).await;
    assert_ne!(app.tp().trace_id, T);
}
