//! W3C Trace Context (Level 2) `traceparent`.
//!
//! Wire format: `{version:2}-{trace-id:32}-{parent-id:16}-{trace-flags:2}`, lower-case hex.
//! Version `00` is exactly 55 characters; a higher version is read by its first four fields and
//! the 56th character, if any, must be `-` (spec §3.2.4, "Versioning of traceparent"). Version
//! `ff`, all-zero ids and non-lower-hex are invalid. stitch always writes version `00` with only
//! the `sampled` (0x01) and Level 2 `random` (0x02) flags.
//!
//! `tracestate` lives in [`super::tracestate`].

use super::context::{
    FLAG_RANDOM, FLAG_SAMPLED, Invalid, Parsed, RepairKind, RepairMode, Repairs, SQUEEZE_CAPACITY,
    TraceContext, squeeze_whitespace, trim_ows,
};
use super::ids::{HexCase, SpanId, TraceId, decode_hex_exact, encode_hex};

/// Length of a version-00 `traceparent`.
pub const TRACEPARENT_LEN: usize = 55;
/// Length of the 64-bit-trace-id form lenient mode repairs (`00-{16}-{16}-{2}`).
const SHORT_TRACEPARENT_LEN: usize = 39;

/// Parses one `traceparent` value. The caller rejects repeated headers before calling this.
pub fn parse_traceparent(value: &[u8], mode: RepairMode) -> Parsed<TraceContext> {
    let mut repairs = Repairs::NONE;
    let mut buf = [0u8; SQUEEZE_CAPACITY];
    let value = squeeze_whitespace(trim_ows(value), &mut buf, mode, &mut repairs)?;
    let lenient = mode.lenient();
    let mut upper = false;

    if value.len() < 2 {
        return Err(Invalid("traceparent too short"));
    }
    let (version, case) =
        decode_hex_exact::<1>(&value[..2], lenient).ok_or(Invalid("malformed version"))?;
    upper |= case == HexCase::Upper;
    let version = version[0];
    if version == 0xff {
        return Err(Invalid("version ff"));
    }

    if lenient && version == 0 && value.len() == SHORT_TRACEPARENT_LEN {
        return parse_short(value, repairs, upper);
    }
    if version == 0 && value.len() != TRACEPARENT_LEN {
        return Err(Invalid("version 00 traceparent is not 55 characters"));
    }
    if value.len() < TRACEPARENT_LEN {
        return Err(Invalid("traceparent too short"));
    }
    if value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-' {
        return Err(Invalid(
            "future-version traceparent without '-' after the flags",
        ));
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return Err(Invalid("misplaced '-'"));
    }
    let (trace, case) =
        decode_hex_exact::<16>(&value[3..35], lenient).ok_or(Invalid("malformed trace-id"))?;
    upper |= case == HexCase::Upper;
    let (span, case) =
        decode_hex_exact::<8>(&value[36..52], lenient).ok_or(Invalid("malformed parent-id"))?;
    upper |= case == HexCase::Upper;
    let (flags, case) =
        decode_hex_exact::<1>(&value[53..55], lenient).ok_or(Invalid("malformed trace-flags"))?;
    upper |= case == HexCase::Upper;
    if upper {
        repairs.add(RepairKind::UpperCaseHex);
    }
    build(TraceId(trace), SpanId(span), flags[0], false, repairs)
}

/// Lenient: `00-{16 hex trace}-{16 hex span}-{flags}` from SDKs that treat W3C ids as 64-bit.
fn parse_short(value: &[u8], mut repairs: Repairs, mut upper: bool) -> Parsed<TraceContext> {
    if value[2] != b'-' || value[19] != b'-' || value[36] != b'-' {
        return Err(Invalid("misplaced '-'"));
    }
    let (low, case) =
        decode_hex_exact::<8>(&value[3..19], true).ok_or(Invalid("malformed trace-id"))?;
    upper |= case == HexCase::Upper;
    let (span, case) =
        decode_hex_exact::<8>(&value[20..36], true).ok_or(Invalid("malformed parent-id"))?;
    upper |= case == HexCase::Upper;
    let (flags, case) =
        decode_hex_exact::<1>(&value[37..39], true).ok_or(Invalid("malformed trace-flags"))?;
    upper |= case == HexCase::Upper;
    if upper {
        repairs.add(RepairKind::UpperCaseHex);
    }
    repairs.add(RepairKind::ShortTraceId);
    let mut trace = [0u8; 16];
    trace[8..].copy_from_slice(&low);
    build(TraceId(trace), SpanId(span), flags[0], true, repairs)
}

fn build(
    trace_id: TraceId,
    span_id: SpanId,
    flags: u8,
    short_trace_id: bool,
    repairs: Repairs,
) -> Parsed<TraceContext> {
    if !trace_id.is_valid() {
        return Err(Invalid("all-zero trace-id"));
    }
    if !span_id.is_valid() {
        return Err(Invalid("all-zero parent-id"));
    }
    Ok((
        TraceContext {
            trace_id,
            span_id,
            parent_span_id: None,
            sampled: Some(flags & FLAG_SAMPLED != 0),
            debug: false,
            random: flags & FLAG_RANDOM != 0,
            short_trace_id,
        },
        repairs,
    ))
}

/// Writes `ctx` as a version-00 `traceparent` (55 bytes) into `out`.
pub fn write_traceparent(ctx: &TraceContext, out: &mut [u8; TRACEPARENT_LEN]) {
    out[..3].copy_from_slice(b"00-");
    encode_hex(&ctx.trace_id.0, &mut out[3..35]);
    out[35] = b'-';
    encode_hex(&ctx.span_id.0, &mut out[36..52]);
    out[52] = b'-';
    encode_hex(&[ctx.w3c_flags()], &mut out[53..55]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn strict(v: &str) -> Parsed<TraceContext> {
        parse_traceparent(v.as_bytes(), RepairMode::Strict)
    }

    fn lenient(v: &str) -> Parsed<TraceContext> {
        parse_traceparent(v.as_bytes(), RepairMode::Lenient)
    }

    #[test]
    fn parses_the_spec_example() {
        let (ctx, repairs) = strict(VALID).expect("valid");
        assert_eq!(ctx.trace_id.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.span_id.to_hex(), "00f067aa0ba902b7");
        assert_eq!(ctx.sampled, Some(true));
        assert!(!ctx.random);
        assert!(repairs.is_empty());
    }

    #[test]
    fn valid_variants() {
        let cases: &[(&str, bool, bool)] = &[
            (VALID, true, false),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
                false,
                false,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
                true,
                true,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02",
                false,
                true,
            ),
            // Unknown flag bits are ignored.
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",
                true,
                true,
            ),
            // Surrounding spaces and tabs are trimmed.
            (
                " \t00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\t ",
                true,
                false,
            ),
            // A higher version is read by its first four fields.
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                true,
                false,
            ),
            (
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future",
                true,
                false,
            ),
            (
                "fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                true,
                false,
            ),
        ];
        for (value, sampled, random) in cases {
            let (ctx, _) = strict(value).unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(ctx.sampled, Some(*sampled), "{value}");
            assert_eq!(ctx.random, *random, "{value}");
            assert_eq!(ctx.trace_id.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        }
    }

    #[test]
    fn invalid_values_are_rejected() {
        let cases = [
            "",
            "0",
            // Version ff and malformed versions.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "000-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0G-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // Version 00 must be exactly 55 characters: trailing data.
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-010",
            // Too short fields.
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            // Non-lower-hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b.-01",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Wrong separators.
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
            // Future version: 56th character must be '-'.
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            // Inner whitespace in strict mode.
            "00-4bf92f3577b34da6a3ce929d0e0e4736 -00f067aa0ba902b7-01",
            // 64-bit trace id in strict mode.
            "00-a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for value in cases {
            assert!(strict(value).is_err(), "{value:?} should be invalid");
        }
    }

    #[test]
    fn lenient_repairs() {
        let cases: &[(&str, RepairKind, &str)] = &[
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
                RepairKind::UpperCaseHex,
                "4bf92f3577b34da6a3ce929d0e0e4736",
            ),
            (
                "00-a3ce929d0e0e4736-00f067aa0ba902b7-01",
                RepairKind::ShortTraceId,
                "0000000000000000a3ce929d0e0e4736",
            ),
            (
                "00 - 4bf92f3577b34da6a3ce929d0e0e4736 - 00f067aa0ba902b7 - 01",
                RepairKind::Whitespace,
                "4bf92f3577b34da6a3ce929d0e0e4736",
            ),
        ];
        for (value, kind, trace) in cases {
            let (ctx, repairs) = lenient(value).unwrap_or_else(|e| panic!("{value}: {e}"));
            assert!(repairs.contains(*kind), "{value}: {repairs:?}");
            assert_eq!(&ctx.trace_id.to_hex(), trace);
        }
        // Lenient still rejects what is not a known legacy fault.
        assert!(lenient("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_err());
        assert!(lenient("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_err());
        assert!(lenient("00-0000000000000000-00f067aa0ba902b7-01").is_err());
    }

    #[test]
    fn writes_version_00_with_known_flags_only() {
        let (mut ctx, _) =
            strict("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff-x").expect("valid");
        let mut out = [0u8; TRACEPARENT_LEN];
        write_traceparent(&ctx, &mut out);
        assert_eq!(
            &out,
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03"
        );
        ctx.sampled = Some(false);
        ctx.random = false;
        write_traceparent(&ctx, &mut out);
        assert_eq!(
            &out,
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        );
    }

    #[test]
    fn round_trips() {
        for value in [
            VALID,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-02",
        ] {
            let (ctx, _) = strict(value).expect("valid");
            let mut out = [0u8; TRACEPARENT_LEN];
            write_traceparent(&ctx, &mut out);
            assert_eq!(&out[..], value.as_bytes());
        }
    }
}
