//! `POST /v1/traces`: an OTLP/HTTP receiver into the ring, so several stitch instances and
//! OTel-SDK apps can send here and `/traces` shows whole traces with no collector.
//!
//! Answers per the OTLP/HTTP spec: 200 with an `ExportTraceServiceResponse` in the request's
//! encoding (partial success when spans were rejected), 400 for an undecodable body, 413
//! beyond the size limit (before and after gunzip, a bomb costing no memory), 415 for another content type or an
//! encoding other than `gzip`/`identity`.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};

use super::{AdminState, respond, text};
use crate::telemetry::receive::{self, OtlpFormat};

pub(super) async fn receive(state: &AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let reject = |status, msg| {
        state.metrics.otlp_rejected();
        text(status, msg)
    };
    let Some(format) = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(OtlpFormat::from_content_type)
    else {
        return reject(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type must be application/x-protobuf or application/json\n",
        );
    };
    let gzip = match req
        .headers()
        .get(http::header::CONTENT_ENCODING)
        .map(|v| v.to_str().map(str::trim))
    {
        None => false,
        Some(Ok(v)) if v.eq_ignore_ascii_case("identity") => false,
        Some(Ok(v)) if v.eq_ignore_ascii_case("gzip") => true,
        Some(_) => {
            return reject(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "content-encoding must be gzip or identity\n",
            );
        }
    };
    let declared_too_large = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > state.max_otlp_body_bytes);
    if declared_too_large {
        return reject(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
    }
    let body = match Limited::new(req.into_body(), state.max_otlp_body_bytes)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return reject(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
        }
        Err(e) => {
            tracing::debug!(error = %e, "OTLP receiver body read failed");
            return reject(StatusCode::BAD_REQUEST, "cannot read the body\n");
        }
    };
    let body = if gzip {
        match gunzip(&body, state.max_otlp_body_bytes) {
            Ok(b) => b,
            Err(Gunzip::TooLarge) => {
                return reject(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
            }
            Err(Gunzip::Invalid) => return reject(StatusCode::BAD_REQUEST, "invalid gzip body\n"),
        }
    } else {
        body
    };
    let decoded = match receive::decode(format, &body) {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %e, "OTLP receiver rejected a body");
            state.metrics.otlp_rejected();
            return respond(
                StatusCode::BAD_REQUEST,
                "text/plain; charset=utf-8",
                format!("{e}\n"),
            );
        }
    };
    let mut accepted = 0u64;
    for group in decoded.resources {
        accepted += group.spans.len() as u64;
        state
            .ring
            .insert_from(&group.service, &group.resource, group.spans);
    }
    state.metrics.otlp_received(format.as_str(), accepted);
    let response = ExportTraceServiceResponse {
        partial_success: (decoded.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: i64::try_from(decoded.rejected).unwrap_or(i64::MAX),
            error_message: "spans with malformed trace or span ids were rejected".to_owned(),
        }),
    };
    match format {
        OtlpFormat::Protobuf => respond(
            StatusCode::OK,
            "application/x-protobuf",
            prost::Message::encode_to_vec(&response),
        ),
        OtlpFormat::Json => respond(
            StatusCode::OK,
            "application/json",
            serde_json::to_vec(&response).unwrap_or_else(|_| b"{}".to_vec()),
        ),
    }
}

enum Gunzip {
    TooLarge,
    Invalid,
}

/// Inflates a gzip body, refusing to produce more than `limit` bytes. A small body may
/// inflate enormously (a gzip bomb), so the inflated size is measured first through a small
/// scratch buffer, and only a body within the limit is inflated again into a buffer of
/// exactly its size: a bomb costs CPU up to the limit, never memory (inflating once into a
/// growing buffer raised the peak RSS by 9 MiB for bombs refused at 4 MiB). Inflating runs at
/// several hundred MB/s, so the second pass costs about a millisecond per MiB.
fn gunzip(body: &[u8], limit: usize) -> Result<Bytes, Gunzip> {
    use std::io::Read;
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let inflated = std::io::copy(
        &mut flate2::read::GzDecoder::new(body).take(cap),
        &mut std::io::sink(),
    )
    .map_err(|_| Gunzip::Invalid)?;
    let inflated = usize::try_from(inflated).map_err(|_| Gunzip::TooLarge)?;
    if inflated > limit {
        return Err(Gunzip::TooLarge);
    }
    let mut out = Vec::with_capacity(inflated);
    flate2::read::GzDecoder::new(body)
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|_| Gunzip::Invalid)?;
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn a_body_within_the_limit_inflates_exactly() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let out = gunzip(&gzip(&data), data.len())
            .ok()
            .expect("within the limit");
        assert_eq!(&out[..], &data[..]);
    }

    #[test]
    fn a_bomb_is_refused_and_broken_gzip_is_invalid() {
        let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
        assert!(bomb.len() < 128 * 1024, "{} bytes", bomb.len());
        assert!(matches!(
            gunzip(&bomb, 4 * 1024 * 1024),
            Err(Gunzip::TooLarge)
        ));
        assert!(matches!(
            gunzip(&bomb[..bomb.len() / 2], 1 << 30),
            Err(Gunzip::Invalid)
        ));
        assert!(matches!(gunzip(b"not gzip", 1024), Err(Gunzip::Invalid)));
    }
}
