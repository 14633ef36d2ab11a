use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Request, StatusCode};

use super::*;
use crate::telemetry::span::{SpanKind, SpanRecord};

fn parts(req: Request<()>) -> http::request::Parts {
    req.into_parts().0
}

fn open(kind: SpanKind, p: &http::request::Parts) -> SpanRecord {
    SpanRecord::for_request(
        [1; 16],
        [2; 8],
        Some([3; 8]),
        kind,
        &RequestFacts::from_parts(p),
        SystemTime::UNIX_EPOCH,
    )
}

#[test]
fn http_span_is_named_by_method_and_carries_request_attributes() {
    let p = parts(
        Request::get("http://orders.svc:8080/orders/42?secret=1")
            .header("user-agent", "curl/8")
            .body(())
            .expect("valid request"),
    );
    let s = open(SpanKind::Server, &p);
    assert_eq!(s.name, "GET");
    assert_eq!(s.attr(HTTP_REQUEST_METHOD), Some(AttrValue::from("GET")));
    assert_eq!(
        s.attr(URL_PATH),
        Some(AttrValue::from("/orders/42".to_owned()))
    );
    assert_eq!(s.attr(URL_QUERY), None, "query is off by default");
    assert_eq!(
        s.attr(SERVER_ADDRESS),
        Some(AttrValue::from("orders.svc".to_owned()))
    );
    assert_eq!(s.attr(SERVER_PORT), Some(AttrValue::Int(8080)));
    assert_eq!(
        s.attr(USER_AGENT_ORIGINAL),
        Some(AttrValue::from("curl/8".to_owned()))
    );
    assert_eq!(
        s.attr(NETWORK_PROTOCOL_VERSION),
        Some(AttrValue::from("1.1"))
    );
}

#[test]
fn host_header_names_the_server_for_origin_form_requests() {
    let p = parts(
        Request::get("/x")
            .header("host", "inventory:9000")
            .body(())
            .expect("valid request"),
    );
    let s = open(SpanKind::Client, &p);
    assert_eq!(
        s.attr(SERVER_ADDRESS),
        Some(AttrValue::from("inventory".to_owned()))
    );
    assert_eq!(s.attr(SERVER_PORT), Some(AttrValue::Int(9000)));
}

#[test]
fn unknown_method_is_other_and_keeps_original() {
    let p = parts(
        Request::builder()
            .method("PURGE")
            .uri("/")
            .body(())
            .expect("valid request"),
    );
    let s = open(SpanKind::Server, &p);
    assert_eq!(s.name, "HTTP");
    assert_eq!(s.attr(HTTP_REQUEST_METHOD), Some(AttrValue::from("_OTHER")));
    assert_eq!(
        s.attr(HTTP_REQUEST_METHOD_ORIGINAL),
        Some(AttrValue::from("PURGE".to_owned()))
    );
}

#[test]
fn grpc_span_is_named_service_slash_method() {
    let p = parts(
        Request::post("/shop.v1.Inventory/Reserve")
            .header("content-type", "application/grpc+proto")
            .version(http::Version::HTTP_2)
            .body(())
            .expect("valid request"),
    );
    let s = open(SpanKind::Client, &p);
    assert_eq!(s.name, "shop.v1.Inventory/Reserve");
    assert_eq!(s.attr(RPC_SYSTEM), Some(AttrValue::from("grpc")));
    assert_eq!(
        s.attr(RPC_SERVICE),
        Some(AttrValue::from("shop.v1.Inventory".to_owned()))
    );
    assert_eq!(
        s.attr(RPC_METHOD),
        Some(AttrValue::from("Reserve".to_owned()))
    );
}

#[test]
fn grpc_path_parsing_rejects_malformed_paths() {
    assert_eq!(grpc_service_method("/a.B/C"), Some(("a.B", "C")));
    assert_eq!(grpc_service_method("/a.B/"), None);
    assert_eq!(grpc_service_method("a.B/C"), None);
    assert_eq!(grpc_service_method("/a.B/C/D"), None);
}

fn grpc_trailers(code: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("grpc-status", HeaderValue::from_static(code));
    h
}

#[test]
fn non_ok_grpc_status_in_trailers_is_an_error() {
    let p = parts(
        Request::post("/a.B/C")
            .header("content-type", "application/grpc")
            .body(())
            .expect("valid request"),
    );
    let mut s = open(SpanKind::Server, &p);
    s.record_response_head(StatusCode::OK, &HeaderMap::new());
    s.record_trailers(&grpc_trailers("14"));
    let s = s.finish(SystemTime::UNIX_EPOCH + Duration::from_millis(5));
    assert_eq!(s.attr(RPC_GRPC_STATUS_CODE), Some(AttrValue::Int(14)));
    assert_eq!(s.attr(ERROR_TYPE), Some(AttrValue::from("UNAVAILABLE")));
    assert!(s.status.is_error());
    assert_eq!(s.duration(), Duration::from_millis(5));
}

#[test]
fn ok_grpc_status_in_trailers_only_head_is_not_an_error() {
    let p = parts(
        Request::post("/a.B/C")
            .header("content-type", "application/grpc")
            .body(())
            .expect("valid request"),
    );
    let mut s = open(SpanKind::Client, &p);
    s.record_response_head(StatusCode::OK, &grpc_trailers("0"));
    let s = s.finish(SystemTime::UNIX_EPOCH);
    assert_eq!(s.attr(RPC_GRPC_STATUS_CODE), Some(AttrValue::Int(0)));
    assert!(!s.status.is_error());
    assert_eq!(s.attr(ERROR_TYPE), None);
}

#[test]
fn error_rule_differs_by_side_for_4xx_and_agrees_on_5xx() {
    let p = parts(Request::get("/").body(()).expect("valid request"));
    let cases = [
        (SpanKind::Server, 404, false),
        (SpanKind::Client, 404, true),
        (SpanKind::Server, 503, true),
        (SpanKind::Client, 503, true),
        (SpanKind::Client, 200, false),
    ];
    for (kind, code, failed) in cases {
        let mut s = open(kind, &p);
        s.record_response_head(
            StatusCode::from_u16(code).expect("valid code"),
            &HeaderMap::new(),
        );
        let s = s.finish(SystemTime::UNIX_EPOCH);
        assert_eq!(s.status.is_error(), failed, "{kind:?} {code}");
        if failed {
            assert_eq!(s.attr(ERROR_TYPE), Some(AttrValue::from(code.to_string())));
        }
    }
}

#[test]
fn upstream_failure_marks_error_type() {
    let p = parts(Request::get("/").body(()).expect("valid request"));
    let mut s = open(SpanKind::Client, &p);
    s.record_failure("connect_error");
    let s = s.finish(SystemTime::UNIX_EPOCH);
    assert_eq!(s.attr(ERROR_TYPE), Some(AttrValue::from("connect_error")));
    assert!(s.status.is_error());
}

#[test]
fn host_values_split_into_host_and_port_like_an_authority() {
    let cases = [
        ("orders.svc:8080", Some(("orders.svc", Some(8080)))),
        ("orders.svc", Some(("orders.svc", None))),
        ("[::1]:9000", Some(("[::1]", Some(9000)))),
        ("[fe80::1]", Some(("[fe80::1]", None))),
        ("10.0.0.7:80", Some(("10.0.0.7", Some(80)))),
        ("host:99999", None),
        ("host:abc", None),
        (":80", None),
        ("", None),
        ("user@host:80", None),
        ("::1", None),
    ];
    for (value, expected) in cases {
        assert_eq!(split_host_port(value), expected, "{value:?}");
        if let Some((host, port)) = expected {
            // Agrees with the http crate's own parse where that accepts the value.
            let a: http::uri::Authority = value.parse().expect("valid authority");
            assert_eq!((a.host(), a.port_u16()), (host, port), "{value:?}");
        }
    }
}

#[test]
fn client_addresses_render_like_display() {
    let ips = [
        "0.0.0.0",
        "9.8.7.6",
        "10.20.30.40",
        "100.200.255.1",
        "255.255.255.255",
        "::1",
        "fe80::1:2",
        "::ffff:10.0.0.1",
    ];
    for ip in ips {
        let ip: std::net::IpAddr = ip.parse().expect("valid ip");
        assert_eq!(ip_text(ip), AttrValue::from(ip.to_string()));
    }
}

/// A URI's authority (HTTP/2's `:authority`, an absolute-form HTTP/1 target) names the server
/// as the http crate reads it, including the spellings the hand split refuses.
#[test]
fn uri_authorities_name_the_server_as_the_http_crate_reads_them() {
    for uri in [
        "http://orders.svc:8080/x",
        "http://orders.svc/x",
        "http://[::1]:9000/x",
        "http://10.0.0.7:80/x",
        "http://user@orders.svc:8080/x",
        "http://user:pw@[fe80::1]/x",
        "http://orders.svc:/x",
    ] {
        let p = parts(Request::get(uri).body(()).expect("valid request"));
        let a = p.uri.authority().expect("authority");
        let s = open(SpanKind::Client, &p);
        assert_eq!(
            s.attr(SERVER_ADDRESS),
            Some(AttrValue::text(a.host())),
            "{uri}"
        );
        assert_eq!(
            s.attr(SERVER_PORT),
            a.port_u16().map(|p| AttrValue::Int(i64::from(p))),
            "{uri}"
        );
    }
}

/// A hop's facts read back as the attribute list the conventions give, in their order, with
/// the rare ones (query) after; the materialised span says the same and has no facts left.
#[test]
fn hop_facts_read_back_as_the_conventional_attribute_list() {
    let p = parts(
        Request::post("/shop.v1.Cart/Add?debug=1")
            .header("host", "cart.svc:7000")
            .header("content-type", "application/grpc")
            .header("user-agent", "grpc-go/1.60")
            .body(())
            .expect("valid request"),
    );
    let mut facts = RequestFacts::from_parts(&p);
    facts.client_address = Some("10.0.0.9".parse().expect("valid ip"));
    facts.record_query = true;
    let mut s = SpanRecord::for_request(
        [1; 16],
        [2; 8],
        None,
        SpanKind::Server,
        &facts,
        SystemTime::UNIX_EPOCH,
    );
    if let Some(hop) = &mut s.hop {
        hop.dialect = Some("w3c".into());
        hop.injected = Some("w3c,b3".into());
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("5"));
    s.record_response_head(StatusCode::OK, &HeaderMap::new());
    s.record_trailers(&trailers);
    let s = s.finish(SystemTime::UNIX_EPOCH + Duration::from_millis(1));
    let expected: Vec<(&str, AttrValue)> = vec![
        (HTTP_REQUEST_METHOD, "POST".into()),
        (URL_PATH, "/shop.v1.Cart/Add".into()),
        (URL_SCHEME, "http".into()),
        (SERVER_ADDRESS, "cart.svc".into()),
        (SERVER_PORT, AttrValue::Int(7000)),
        (CLIENT_ADDRESS, "10.0.0.9".into()),
        (NETWORK_PROTOCOL_VERSION, "1.1".into()),
        (USER_AGENT_ORIGINAL, "grpc-go/1.60".into()),
        (RPC_SYSTEM, "grpc".into()),
        (RPC_SERVICE, "shop.v1.Cart".into()),
        (RPC_METHOD, "Add".into()),
        (STITCH_PROPAGATION_DIALECT, "w3c".into()),
        (STITCH_PROPAGATION_INJECTED, "w3c,b3".into()),
        (HTTP_RESPONSE_STATUS_CODE, AttrValue::Int(200)),
        (RPC_GRPC_STATUS_CODE, AttrValue::Int(5)),
        (ERROR_TYPE, "NOT_FOUND".into()),
        (URL_QUERY, "debug=1".into()),
    ];
    let listed = |span: &SpanRecord| -> Vec<(String, AttrValue)> {
        span.all_attributes()
            .iter()
            .map(|a| (a.key.to_string(), a.value.clone()))
            .collect()
    };
    let expected: Vec<(String, AttrValue)> = expected
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    assert_eq!(listed(&s), expected);
    assert_eq!(s.name, "shop.v1.Cart/Add");
    let plain = s.materialized();
    assert!(plain.hop.is_none());
    assert_eq!(listed(&plain), expected);
    assert_eq!(plain.attributes.len(), expected.len());
}
