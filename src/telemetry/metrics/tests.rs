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
