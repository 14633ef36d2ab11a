use super::*;

#[test]
fn fixed_handles_show_up_in_exposition() {
    let m = Metrics::new();
    m.request_finished(
        Direction::Inbound,
        WireProtocol::Grpc,
        StatusClass::from_status(503),
        Duration::from_millis(3),
    );
    let text = m.encode();
    assert!(text.contains(
        "stitch_requests_total{direction=\"inbound\",protocol=\"grpc\",status_class=\"5xx\"} 1"
    ));
    assert!(text.contains("stitch_root_sampling_factor 1.0"));
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn wire_protocol_of_request() {
    assert_eq!(WireProtocol::of_request(false, false), WireProtocol::Http1);
    assert_eq!(WireProtocol::of_request(true, false), WireProtocol::H2);
    assert_eq!(WireProtocol::of_request(true, true), WireProtocol::Grpc);
    assert_eq!(WireProtocol::of_request(false, true), WireProtocol::Http1);
}

#[test]
fn connection_guard_decrements_on_drop() {
    let m = Metrics::new();
    let g = m.connection_opened(Direction::Outbound);
    assert!(
        m.encode()
            .contains("stitch_open_connections{direction=\"outbound\"} 1")
    );
    drop(g);
    assert!(
        m.encode()
            .contains("stitch_open_connections{direction=\"outbound\"} 0")
    );
}

#[test]
fn open_ended_labels_are_capped() {
    let m = Metrics::new();
    for i in 0..(MAX_DYNAMIC_LABEL_VALUES + 10) {
        m.invalid_header(&format!("tmpl{i}"));
    }
    m.invalid_header("bad value with spaces");
    let text = m.encode();
    let distinct = text
        .lines()
        .filter(|l| l.starts_with("stitch_propagation_invalid_headers_total{"))
        .count();
    assert_eq!(
        distinct,
        MAX_DYNAMIC_LABEL_VALUES + 1,
        "capped plus `other`"
    );
    assert!(text.contains("stitch_propagation_invalid_headers_total{dialect=\"other\"} 11"));
}

#[test]
fn dialect_requests_count_through_cached_and_interned_handles() {
    let m = Metrics::new();
    assert!(
        !m.encode().contains("stitch_propagation_requests_total{"),
        "no series before a request: handles are resolved on first use"
    );
    for _ in 0..3 {
        m.request_dialect(Direction::Inbound, "w3c");
    }
    m.request_dialect(Direction::Outbound, "w3c");
    m.request_dialect(Direction::Inbound, "none");
    m.request_dialect(Direction::Inbound, "corp");
    m.request_dialect(Direction::Inbound, "corp");
    let text = m.encode();
    for line in [
        "stitch_propagation_requests_total{direction=\"inbound\",dialect=\"w3c\"} 3",
        "stitch_propagation_requests_total{direction=\"outbound\",dialect=\"w3c\"} 1",
        "stitch_propagation_requests_total{direction=\"inbound\",dialect=\"none\"} 1",
        "stitch_propagation_requests_total{direction=\"inbound\",dialect=\"corp\"} 2",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    assert!(
        !text.contains("dialect=\"b3\""),
        "unused dialects stay absent"
    );
}
