//! Jaeger native propagation: `uber-trace-id: {trace-id}:{span-id}:{parent-span-id}:{flags}`.
//!
//! Ids are 1–32 (trace) and 1–16 (span, parent) hex digits, zero-padded on the left; parent
//! `0` means none (the field is deprecated). `flags` is one byte in 1–2 hex digits: 0x01 sampled,
//! 0x02 debug. The value may arrive URL-encoded (`%3A` for `:`). `uberctx-*` baggage headers
//! are never touched by stitch, so they pass through.

use super::context::{
    Invalid, Parsed, RepairKind, RepairMode, Repairs, SQUEEZE_CAPACITY, TraceContext,
    squeeze_whitespace, trim_ows,
};
use super::ids::{HexCase, SpanId, TraceId, decode_hex_padded, encode_hex};

/// Longest `uber-trace-id` stitch writes.
pub const MAX_LEN: usize = 32 + 1 + 16 + 1 + 16 + 1 + 2;

const FLAG_SAMPLED: u8 = 0x01;
const FLAG_DEBUG: u8 = 0x02;

/// Replaces `%3A`/`%3a` with `:` into `buf`; any other `%` escape is invalid.
fn percent_decode<'a>(
    value: &'a [u8],
    buf: &'a mut [u8; SQUEEZE_CAPACITY],
) -> Result<&'a [u8], Invalid> {
    if !value.contains(&b'%') {
        return Ok(value);
    }
    let mut len = 0;
    let mut i = 0;
    while i < value.len() {
        if len == buf.len() {
            return Err(Invalid("uber-trace-id too long"));
        }
        if value[i] == b'%' {
            match value.get(i + 1..i + 3) {
                Some(b"3A") | Some(b"3a") => buf[len] = b':',
                _ => return Err(Invalid("bad percent escape in uber-trace-id")),
            }
            i += 3;
        } else {
            buf[len] = value[i];
            i += 1;
        }
        len += 1;
    }
    Ok(&buf[..len])
}

/// Parses one `uber-trace-id` value.
pub fn parse(value: &[u8], mode: RepairMode) -> Parsed<TraceContext> {
    let lenient = mode.lenient();
    let mut repairs = Repairs::NONE;
    let mut decoded = [0u8; SQUEEZE_CAPACITY];
    let value = percent_decode(trim_ows(value), &mut decoded)?;
    let mut squeezed = [0u8; SQUEEZE_CAPACITY];
    let value = squeeze_whitespace(value, &mut squeezed, mode, &mut repairs)?;

    let mut fields = value.splitn(5, |c| *c == b':');
    let (Some(trace), Some(span), Some(third)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(Invalid("uber-trace-id needs four ':'-separated fields"));
    };
    let (parent, flags) = match (fields.next(), fields.next()) {
        (Some(flags), None) => (Some(third), flags),
        // Legacy clients that drop the deprecated parent field.
        (None, None) if lenient => {
            repairs.add(RepairKind::MissingParent);
            (None, third)
        }
        _ => return Err(Invalid("uber-trace-id needs four ':'-separated fields")),
    };
    let mut upper = false;
    let (trace_id, case) =
        decode_hex_padded::<16>(trace, lenient).ok_or(Invalid("malformed trace id"))?;
    upper |= case == HexCase::Upper;
    let trace_id = TraceId(trace_id);
    let (span_id, case) =
        decode_hex_padded::<8>(span, lenient).ok_or(Invalid("malformed span id"))?;
    upper |= case == HexCase::Upper;
    let span_id = SpanId(span_id);
    let parent_span_id = match parent {
        None => None,
        Some(b"") if lenient => {
            repairs.add(RepairKind::MissingParent);
            None
        }
        Some(p) => {
            let (id, case) =
                decode_hex_padded::<8>(p, lenient).ok_or(Invalid("malformed parent id"))?;
            upper |= case == HexCase::Upper;
            Some(SpanId(id)).filter(SpanId::is_valid)
        }
    };
    let (flags, case) = decode_hex_padded::<1>(flags, lenient).ok_or(Invalid("malformed flags"))?;
    upper |= case == HexCase::Upper;
    if upper {
        repairs.add(RepairKind::UpperCaseHex);
    }
    if !trace_id.is_valid() {
        return Err(Invalid("all-zero trace id"));
    }
    if !span_id.is_valid() {
        return Err(Invalid("all-zero span id"));
    }
    let debug = flags[0] & FLAG_DEBUG != 0;
    Ok((
        TraceContext {
            trace_id,
            span_id,
            parent_span_id,
            sampled: Some(flags[0] & FLAG_SAMPLED != 0 || debug),
            debug,
            random: false,
            short_trace_id: trace.len() <= 16,
        },
        repairs,
    ))
}

/// Writes `ctx` as `uber-trace-id`; returns the length used in `out`.
pub fn write(ctx: &TraceContext, out: &mut [u8; MAX_LEN]) -> usize {
    let mut len = if ctx.writes_short_trace_id() {
        encode_hex(&ctx.trace_id.0[8..], &mut out[..16]);
        16
    } else {
        encode_hex(&ctx.trace_id.0, &mut out[..32]);
        32
    };
    out[len] = b':';
    encode_hex(&ctx.span_id.0, &mut out[len + 1..len + 17]);
    len += 17;
    out[len] = b':';
    len += 1;
    match ctx.parent_span_id {
        Some(parent) => {
            encode_hex(&parent.0, &mut out[len..len + 16]);
            len += 16;
        }
        None => {
            out[len] = b'0';
            len += 1;
        }
    }
    out[len] = b':';
    let mut flags = 0;
    if ctx.sampled.unwrap_or(false) || ctx.debug {
        flags |= FLAG_SAMPLED;
    }
    if ctx.debug {
        flags |= FLAG_DEBUG;
    }
    out[len + 1] = b'0' + flags;
    len + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict(v: &str) -> Parsed<TraceContext> {
        parse(v.as_bytes(), RepairMode::Strict)
    }

    #[test]
    fn valid_values() {
        let (c, _) = strict("80f198ee56343ba864fe8b2a57d3eff7:e457b5a2e4d86bd1:05e3ac9a4f6e3b90:1")
            .expect("valid");
        assert_eq!(c.trace_id.to_hex(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(
            c.parent_span_id.map(|p| p.to_hex()).as_deref(),
            Some("05e3ac9a4f6e3b90")
        );
        assert_eq!(c.sampled, Some(true));
        assert!(!c.short_trace_id);

        // Short, unpadded ids; parent 0 = none; URL-encoded separators; debug flag.
        let (c, _) = strict("abc%3A1f%3a0%3A3").expect("valid");
        assert_eq!(c.trace_id.to_hex(), "00000000000000000000000000000abc");
        assert_eq!(c.span_id.to_hex(), "000000000000001f");
        assert_eq!(c.parent_span_id, None);
        assert!(c.debug);
        assert!(c.short_trace_id);
        let (c, _) = strict("64fe8b2a57d3eff7:e457b5a2e4d86bd1:0:00").expect("valid");
        assert_eq!(c.sampled, Some(false));
    }

    #[test]
    fn invalid_values() {
        for v in [
            "",
            "a:b:c",
            "a:b:c:d:e",
            "0:1:0:1",
            "1:0:0:1",
            ":1:0:1",
            "1::0:1",
            "1:1:0:",
            "1:1:0:100",
            "1:1:zz:1",
            "123456789012345678901234567890123:1:0:1",
            "1:12345678901234567:0:1",
            "ABC:1:0:1",
            "1%3B1:0:1",
            "1%3:1:0:1",
            "1 :1:0:1",
        ] {
            assert!(strict(v).is_err(), "{v:?}");
        }
    }

    #[test]
    fn lenient_repairs() {
        let cases = [
            ("ABC:1F:0:1", RepairKind::UpperCaseHex),
            ("abc:1f:1", RepairKind::MissingParent),
            ("abc:1f::1", RepairKind::MissingParent),
            ("abc : 1f : 0 : 1", RepairKind::Whitespace),
        ];
        for (v, kind) in cases {
            let (c, r) =
                parse(v.as_bytes(), RepairMode::Lenient).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert!(r.contains(kind), "{v}");
            assert_eq!(c.span_id.to_hex(), "000000000000001f");
        }
    }

    #[test]
    fn writes_normalized_and_round_trips() {
        let (c, _) = strict("abc%3A1f%3A0%3A3").expect("valid");
        let mut out = [0u8; MAX_LEN];
        let len = write(&c, &mut out);
        assert_eq!(&out[..len], b"0000000000000abc:000000000000001f:0:3");
        assert_eq!(
            strict(std::str::from_utf8(&out[..len]).expect("ascii")),
            Ok((c, Repairs::NONE))
        );
    }
}
