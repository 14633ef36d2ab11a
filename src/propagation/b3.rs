//! B3 propagation (openzipkin/b3-propagation), single and multi header.
//!
//! - Single: `b3: {trace-id}-{span-id}[-{sampling}[-{parent-span-id}]]`, or `b3: 0` (deny only).
//!   `sampling` is `0`, `1` or `d` (debug). Trace ids are 16 or 32 lower-hex digits, span ids 16.
//! - Multi: `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-ParentSpanId`, `X-B3-Sampled` (`0`/`1`),
//!   `X-B3-Flags` (`1` = debug). `X-B3-Sampled` alone carries only a decision.
//!
//! Both `b3` and `b3multi` read both forms and the single header wins. 64-bit trace ids are
//! left-padded to 128 bits and written back 64-bit when the peer sent them so.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::context::{
    Invalid, Parsed, RepairKind, RepairMode, Repairs, SQUEEZE_CAPACITY, TraceContext,
    squeeze_whitespace, trim_ows,
};
use super::ids::{HexCase, SpanId, TraceId, decode_hex_exact, encode_hex, id_header_value};

/// Longest single `b3` value stitch writes.
pub const SINGLE_MAX_LEN: usize = 32 + 1 + 16 + 1 + 1 + 1 + 16;

/// What a B3 header carried: a context, or only a sampling decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum B3Value {
    /// Full context.
    Context(TraceContext),
    /// Only a sampling decision (`b3: 0`, or `X-B3-Sampled` without ids).
    SamplingOnly(bool),
}

/// The multi-header values present on a request (first value of each).
#[derive(Debug, Clone, Copy, Default)]
pub struct MultiHeaders<'a> {
    /// `X-B3-TraceId`.
    pub trace_id: Option<&'a [u8]>,
    /// `X-B3-SpanId`.
    pub span_id: Option<&'a [u8]>,
    /// `X-B3-ParentSpanId`.
    pub parent_span_id: Option<&'a [u8]>,
    /// `X-B3-Sampled`.
    pub sampled: Option<&'a [u8]>,
    /// `X-B3-Flags`.
    pub flags: Option<&'a [u8]>,
}

impl MultiHeaders<'_> {
    /// True when any multi header is present.
    pub(crate) fn is_present(&self) -> bool {
        self.trace_id.is_some()
            || self.span_id.is_some()
            || self.parent_span_id.is_some()
            || self.sampled.is_some()
            || self.flags.is_some()
    }
}

struct Ids {
    upper: bool,
}

impl Ids {
    fn trace(&mut self, digits: &[u8], lenient: bool) -> Result<(TraceId, bool), Invalid> {
        let (id, short) = match digits.len() {
            32 => {
                let (b, case) =
                    decode_hex_exact::<16>(digits, lenient).ok_or(Invalid("malformed trace id"))?;
                self.upper |= case == HexCase::Upper;
                (TraceId(b), false)
            }
            16 => {
                let (b, case) =
                    decode_hex_exact::<8>(digits, lenient).ok_or(Invalid("malformed trace id"))?;
                self.upper |= case == HexCase::Upper;
                let mut full = [0u8; 16];
                full[8..].copy_from_slice(&b);
                (TraceId(full), true)
            }
            _ => return Err(Invalid("trace id must be 16 or 32 hex digits")),
        };
        if !id.is_valid() {
            return Err(Invalid("all-zero trace id"));
        }
        Ok((id, short))
    }

    fn span(&mut self, digits: &[u8], lenient: bool) -> Result<SpanId, Invalid> {
        let (b, case) =
            decode_hex_exact::<8>(digits, lenient).ok_or(Invalid("malformed span id"))?;
        self.upper |= case == HexCase::Upper;
        let id = SpanId(b);
        if !id.is_valid() {
            return Err(Invalid("all-zero span id"));
        }
        Ok(id)
    }
}

/// Parses the single `b3` header.
pub fn parse_single(value: &[u8], mode: RepairMode) -> Parsed<B3Value> {
    let mut repairs = Repairs::NONE;
    let mut buf = [0u8; SQUEEZE_CAPACITY];
    let value = squeeze_whitespace(trim_ows(value), &mut buf, mode, &mut repairs)?;
    if value == b"0" {
        return Ok((B3Value::SamplingOnly(false), repairs));
    }
    let lenient = mode.lenient();
    let mut fields = value.splitn(5, |c| *c == b'-');
    let trace = fields.next().ok_or(Invalid("empty b3"))?;
    let span = fields.next().ok_or(Invalid("b3 without span id"))?;
    let sampling = fields.next();
    let parent = fields.next();
    if fields.next().is_some() {
        return Err(Invalid("b3 has more than four fields"));
    }
    let mut ids = Ids { upper: false };
    let (trace_id, short) = ids.trace(trace, lenient)?;
    let span_id = ids.span(span, lenient)?;
    let (sampled, debug) = match sampling {
        None => (None, false),
        Some(b"0") => (Some(false), false),
        Some(b"1") => (Some(true), false),
        Some(b"d") => (Some(true), true),
        Some(_) => return Err(Invalid("b3 sampling state must be 0, 1 or d")),
    };
    let parent_span_id = match parent {
        None => None,
        Some(b"") if lenient => {
            repairs.add(RepairKind::MissingParent);
            None
        }
        Some(p) => Some(ids.span(p, lenient)?),
    };
    if ids.upper {
        repairs.add(RepairKind::UpperCaseHex);
    }
    Ok((
        B3Value::Context(TraceContext {
            trace_id,
            span_id,
            parent_span_id,
            sampled,
            debug,
            random: false,
            short_trace_id: short,
        }),
        repairs,
    ))
}

/// Parses the `X-B3-*` headers; `None` when none is present.
pub fn parse_multi(headers: &MultiHeaders<'_>, mode: RepairMode) -> Option<Parsed<B3Value>> {
    if !headers.is_present() {
        return None;
    }
    Some(parse_multi_present(headers, mode))
}

fn parse_multi_present(headers: &MultiHeaders<'_>, mode: RepairMode) -> Parsed<B3Value> {
    let lenient = mode.lenient();
    let mut repairs = Repairs::NONE;
    let debug = match headers.flags.map(trim_ows) {
        None => false,
        Some(b"1") => true,
        Some(b"0") => false,
        Some(_) => return Err(Invalid("X-B3-Flags must be 0 or 1")),
    };
    let sampled = match headers.sampled.map(trim_ows) {
        None => None,
        Some(b"1") => Some(true),
        Some(b"0") => Some(false),
        Some(_) => return Err(Invalid("X-B3-Sampled must be 0 or 1")),
    };
    let sampled = if debug { Some(true) } else { sampled };
    let (trace, span) = match (headers.trace_id, headers.span_id) {
        (None, None) => {
            return match sampled {
                Some(s) => Ok((B3Value::SamplingOnly(s), repairs)),
                None => Err(Invalid("X-B3 headers without ids or sampling state")),
            };
        }
        (Some(t), Some(s)) => (t, s),
        _ => return Err(Invalid("X-B3-TraceId and X-B3-SpanId must come together")),
    };
    let mut ids = Ids { upper: false };
    let mut buf = [0u8; SQUEEZE_CAPACITY];
    let trace = squeeze_whitespace(trim_ows(trace), &mut buf, mode, &mut repairs)?;
    let (trace_id, short) = ids.trace(trace, lenient)?;
    let span = squeeze_whitespace(trim_ows(span), &mut buf, mode, &mut repairs)?;
    let span_id = ids.span(span, lenient)?;
    let parent_span_id = match headers.parent_span_id.map(trim_ows) {
        None => None,
        Some(b"") if lenient => {
            repairs.add(RepairKind::MissingParent);
            None
        }
        Some(p) => {
            let p = squeeze_whitespace(p, &mut buf, mode, &mut repairs)?;
            Some(ids.span(p, lenient)?)
        }
    };
    if ids.upper {
        repairs.add(RepairKind::UpperCaseHex);
    }
    Ok((
        B3Value::Context(TraceContext {
            trace_id,
            span_id,
            parent_span_id,
            sampled,
            debug,
            random: false,
            short_trace_id: short,
        }),
        repairs,
    ))
}

/// Writes the trace id in the width the peer used (16 or 32 digits); returns the digits.
pub(crate) fn write_trace_id<'a>(ctx: &TraceContext, out: &'a mut [u8; 32]) -> &'a [u8] {
    if ctx.writes_short_trace_id() {
        encode_hex(&ctx.trace_id.0[8..], &mut out[..16]);
        &out[..16]
    } else {
        ctx.trace_id.encode_hex(out);
        &out[..]
    }
}

/// The sampling character of the single header (`d` wins over `1`/`0`).
fn sampling_char(ctx: &TraceContext) -> u8 {
    if ctx.debug {
        b'd'
    } else if ctx.sampled.unwrap_or(false) {
        b'1'
    } else {
        b'0'
    }
}

/// Writes the single `b3` header for `ctx`; returns the length used in `out`.
pub fn write_single(ctx: &TraceContext, out: &mut [u8; SINGLE_MAX_LEN]) -> usize {
    let mut trace = [0u8; 32];
    let trace = write_trace_id(ctx, &mut trace);
    let mut len = trace.len();
    out[..len].copy_from_slice(trace);
    out[len] = b'-';
    encode_hex(&ctx.span_id.0, &mut out[len + 1..len + 17]);
    len += 17;
    out[len] = b'-';
    out[len + 1] = sampling_char(ctx);
    len += 2;
    if let Some(parent) = ctx.parent_span_id {
        out[len] = b'-';
        encode_hex(&parent.0, &mut out[len + 1..len + 17]);
        len += 17;
    }
    len
}

/// `X-B3-TraceId`.
pub(crate) static X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
/// `X-B3-SpanId`.
pub(crate) static X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
/// `X-B3-ParentSpanId`.
pub(crate) static X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
/// `X-B3-Sampled`.
pub(crate) static X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
/// `X-B3-Flags`.
pub(crate) static X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// Writes the `X-B3-*` headers for `ctx`, removing stale parent/flags/sampled headers.
pub fn write_multi(next: &TraceContext, headers: &mut HeaderMap) {
    let mut trace = [0u8; 32];
    let trace = write_trace_id(next, &mut trace);
    headers.insert(X_B3_TRACEID.clone(), id_header_value(trace));
    let mut span = [0u8; 16];
    next.span_id.encode_hex(&mut span);
    headers.insert(X_B3_SPANID.clone(), id_header_value(&span));
    match next.parent_span_id {
        Some(parent) => {
            parent.encode_hex(&mut span);
            headers.insert(X_B3_PARENTSPANID.clone(), id_header_value(&span));
        }
        None => {
            headers.remove(&X_B3_PARENTSPANID);
        }
    }
    if next.debug {
        // Debug implies accept; the spec says not to send X-B3-Sampled with it.
        headers.remove(&X_B3_SAMPLED);
        headers.insert(X_B3_FLAGS.clone(), HeaderValue::from_static("1"));
    } else {
        let sampled = if next.sampled.unwrap_or(false) {
            "1"
        } else {
            "0"
        };
        headers.insert(X_B3_SAMPLED.clone(), HeaderValue::from_static(sampled));
        headers.remove(&X_B3_FLAGS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "80f198ee56343ba864fe8b2a57d3eff7";
    const SPAN: &str = "e457b5a2e4d86bd1";
    const PARENT: &str = "05e3ac9a4f6e3b90";

    fn single(v: &str, mode: RepairMode) -> Parsed<B3Value> {
        parse_single(v.as_bytes(), mode)
    }

    fn ctx_of(v: Parsed<B3Value>) -> (TraceContext, Repairs) {
        match v {
            Ok((B3Value::Context(c), r)) => (c, r),
            other => panic!("expected a context, got {other:?}"),
        }
    }

    #[test]
    fn single_valid() {
        let (c, _) = ctx_of(single(
            &format!("{TRACE}-{SPAN}-1-{PARENT}"),
            RepairMode::Strict,
        ));
        assert_eq!(c.trace_id.to_hex(), TRACE);
        assert_eq!(c.span_id.to_hex(), SPAN);
        assert_eq!(
            c.parent_span_id.map(|p| p.to_hex()).as_deref(),
            Some(PARENT)
        );
        assert_eq!(c.sampled, Some(true));

        let (c, _) = ctx_of(single(&format!("{TRACE}-{SPAN}"), RepairMode::Strict));
        assert_eq!(c.sampled, None);
        let (c, _) = ctx_of(single(&format!("{TRACE}-{SPAN}-0"), RepairMode::Strict));
        assert_eq!(c.sampled, Some(false));
        let (c, _) = ctx_of(single(&format!("{TRACE}-{SPAN}-d"), RepairMode::Strict));
        assert!(c.debug);
        assert_eq!(c.sampled, Some(true));

        let (c, _) = ctx_of(single(
            &format!("64fe8b2a57d3eff7-{SPAN}-1"),
            RepairMode::Strict,
        ));
        assert_eq!(c.trace_id.to_hex(), "000000000000000064fe8b2a57d3eff7");
        assert!(c.short_trace_id);

        assert_eq!(
            single("0", RepairMode::Strict),
            Ok((B3Value::SamplingOnly(false), Repairs::NONE))
        );
    }

    #[test]
    fn single_invalid() {
        let cases = [
            String::new(),
            "1".to_owned(),
            "d".to_owned(),
            TRACE.to_owned(),
            format!("{TRACE}-"),
            format!("{TRACE}-{SPAN}-"),
            format!("{TRACE}-{SPAN}-2"),
            format!("{TRACE}-{SPAN}-true"),
            format!("{TRACE}-{SPAN}-1-"),
            format!("{TRACE}-{SPAN}-1-{PARENT}-x"),
            format!("{TRACE}-{SPAN}-1-{PARENT}0"),
            format!("{}-{SPAN}-1", "0".repeat(32)),
            format!("{TRACE}-{}-1", "0".repeat(16)),
            format!("{TRACE}-{}-1", SPAN.to_uppercase()),
            format!("{}-{SPAN}-1", &TRACE[..20]),
            format!("{TRACE}-{SPAN} -1"),
        ];
        for v in cases {
            assert!(single(&v, RepairMode::Strict).is_err(), "{v:?}");
        }
    }

    #[test]
    fn single_lenient_repairs() {
        let cases = [
            (
                format!("{}-{SPAN}-1", TRACE.to_uppercase()),
                RepairKind::UpperCaseHex,
            ),
            (format!("{TRACE}-{SPAN}-1-"), RepairKind::MissingParent),
            (format!("{TRACE} - {SPAN} - 1"), RepairKind::Whitespace),
        ];
        for (v, kind) in cases {
            let (c, r) = ctx_of(single(&v, RepairMode::Lenient));
            assert!(r.contains(kind), "{v}");
            assert_eq!(c.trace_id.to_hex(), TRACE);
        }
    }

    #[test]
    fn multi_forms() {
        let mut h = MultiHeaders {
            trace_id: Some(TRACE.as_bytes()),
            span_id: Some(SPAN.as_bytes()),
            parent_span_id: Some(PARENT.as_bytes()),
            sampled: Some(b"1"),
            flags: None,
        };
        let (c, _) = ctx_of(parse_multi(&h, RepairMode::Strict).expect("present"));
        assert_eq!(c.trace_id.to_hex(), TRACE);
        assert_eq!(
            c.parent_span_id.map(|p| p.to_hex()).as_deref(),
            Some(PARENT)
        );
        h.flags = Some(b"1");
        h.sampled = None;
        let (c, _) = ctx_of(parse_multi(&h, RepairMode::Strict).expect("present"));
        assert!(c.debug);
        assert_eq!(c.sampled, Some(true));

        let only_sampled = MultiHeaders {
            sampled: Some(b"0"),
            ..MultiHeaders::default()
        };
        assert_eq!(
            parse_multi(&only_sampled, RepairMode::Strict),
            Some(Ok((B3Value::SamplingOnly(false), Repairs::NONE)))
        );
        assert!(parse_multi(&MultiHeaders::default(), RepairMode::Strict).is_none());

        let invalid = [
            MultiHeaders {
                trace_id: Some(TRACE.as_bytes()),
                ..MultiHeaders::default()
            },
            MultiHeaders {
                trace_id: Some(TRACE.as_bytes()),
                span_id: Some(SPAN.as_bytes()),
                sampled: Some(b"true"),
                ..MultiHeaders::default()
            },
            MultiHeaders {
                trace_id: Some(TRACE.as_bytes()),
                span_id: Some(SPAN.as_bytes()),
                parent_span_id: Some(b""),
                ..MultiHeaders::default()
            },
            MultiHeaders {
                flags: Some(b"2"),
                ..MultiHeaders::default()
            },
        ];
        for h in invalid {
            assert!(
                matches!(parse_multi(&h, RepairMode::Strict), Some(Err(_))),
                "{h:?}"
            );
        }
        let empty_parent = MultiHeaders {
            trace_id: Some(TRACE.as_bytes()),
            span_id: Some(SPAN.as_bytes()),
            parent_span_id: Some(b""),
            ..MultiHeaders::default()
        };
        let (_, r) = ctx_of(parse_multi(&empty_parent, RepairMode::Lenient).expect("present"));
        assert!(r.contains(RepairKind::MissingParent));
    }

    #[test]
    fn single_round_trips_in_the_peer_width() {
        for v in [
            format!("{TRACE}-{SPAN}-1-{PARENT}"),
            format!("64fe8b2a57d3eff7-{SPAN}-0"),
            format!("{TRACE}-{SPAN}-d"),
        ] {
            let (c, _) = ctx_of(single(&v, RepairMode::Strict));
            let mut out = [0u8; SINGLE_MAX_LEN];
            let len = write_single(&c, &mut out);
            assert_eq!(&out[..len], v.as_bytes());
        }
    }
}
