//! Template dialects: trace headers defined in the rules file's `formats`.
//!
//! A format is one or more headers, each a template such as `t-{trace_id}-{span_id}-{flags}`.
//! Placeholders and their fixed widths:
//!
//! | placeholder | written as |
//! | --- | --- |
//! | `{trace_id}` | 32 lower-case hex |
//! | `{span_id}` | 16 lower-case hex |
//! | `{parent_span_id}` | 16 lower-case hex, all zeros when there is none |
//! | `{flags}` | 2 hex, W3C `trace-flags` (sampled 0x01, random 0x02) |
//! | `{sampled}` | `0` or `1` |
//!
//! Templates are compiled once at load into literal and placeholder segments; the parser walks
//! the segments and the writer fills a stack buffer. A format must contain `{trace_id}`; a
//! placeholder may appear only once per format and two placeholders need a literal between them,
//! so every value can be split back without guessing. A format without `{span_id}` carries the
//! trace only (the parsed span id is all-zero and the hop's span gets no parent span id).

use http::HeaderName;

use super::context::{
    FLAG_RANDOM, FLAG_SAMPLED, Invalid, Parsed, RepairKind, RepairMode, Repairs, TRACE_HEADERS,
    TraceContext, trim_ows,
};
use super::ids::{HexCase, SpanId, TraceId, decode_hex_exact, encode_hex};

/// Longest rendered template value; longer templates are a config error.
pub const MAX_RENDERED_LEN: usize = 256;

/// Whether a built-in dialect (or W3C baggage) owns the header `lower`: a template may not
/// claim it.
fn reserved(lower: &str) -> bool {
    TRACE_HEADERS.contains(&lower) || lower == "baggage"
}

/// A template variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// `{trace_id}`.
    TraceId,
    /// `{span_id}`.
    SpanId,
    /// `{parent_span_id}`.
    ParentSpanId,
    /// `{flags}`.
    Flags,
    /// `{sampled}`.
    Sampled,
}

impl Placeholder {
    fn from_name(name: &str) -> Option<Placeholder> {
        match name {
            "trace_id" => Some(Placeholder::TraceId),
            "span_id" => Some(Placeholder::SpanId),
            "parent_span_id" => Some(Placeholder::ParentSpanId),
            "flags" => Some(Placeholder::Flags),
            "sampled" => Some(Placeholder::Sampled),
            _ => None,
        }
    }

    fn width(self) -> usize {
        match self {
            Placeholder::TraceId => 32,
            Placeholder::SpanId | Placeholder::ParentSpanId => 16,
            Placeholder::Flags => 2,
            Placeholder::Sampled => 1,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Placeholder::TraceId => 1,
            Placeholder::SpanId => 2,
            Placeholder::ParentSpanId => 4,
            Placeholder::Flags => 8,
            Placeholder::Sampled => 16,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<[u8]>),
    Field(Placeholder),
}

/// One header of a template format, compiled.
#[derive(Debug, Clone)]
pub struct HeaderTemplate {
    /// Lower-case header name.
    pub name: HeaderName,
    segments: Vec<Segment>,
}

/// A compiled template format (a user-defined dialect).
#[derive(Debug, Clone)]
pub struct TemplateFormat {
    /// The format's name in the rules file.
    pub name: String,
    /// Its headers, in the order the rules file lists them.
    pub headers: Vec<HeaderTemplate>,
}

/// Why a template does not compile; `header` is `None` for format-wide problems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// The header whose template is wrong, as written in the rules file.
    pub header: Option<String>,
    /// What is wrong.
    pub reason: String,
}

fn err(header: &str, reason: impl Into<String>) -> TemplateError {
    TemplateError {
        header: Some(header.to_owned()),
        reason: reason.into(),
    }
}

impl TemplateFormat {
    /// Compiles `headers` (name, template) into a format named `name`.
    pub fn compile(name: &str, headers: &[(&str, &str)]) -> Result<TemplateFormat, TemplateError> {
        if headers.is_empty() {
            return Err(TemplateError {
                header: None,
                reason: format!("format {name:?} has no headers"),
            });
        }
        let mut seen = 0u8;
        let mut compiled = Vec::with_capacity(headers.len());
        for (header, template) in headers {
            let lower = header.to_ascii_lowercase();
            if reserved(&lower) {
                return Err(err(
                    header,
                    format!("header {header:?} belongs to a built-in dialect"),
                ));
            }
            let name = HeaderName::from_bytes(lower.as_bytes())
                .map_err(|_| err(header, format!("{header:?} is not a valid header name")))?;
            if compiled.iter().any(|h: &HeaderTemplate| h.name == name) {
                return Err(err(header, format!("header {header:?} is listed twice")));
            }
            let segments = compile_segments(header, template, &mut seen)?;
            compiled.push(HeaderTemplate { name, segments });
        }
        if seen & Placeholder::TraceId.bit() == 0 {
            return Err(TemplateError {
                header: None,
                reason: format!("format {name:?} has no {{trace_id}} placeholder"),
            });
        }
        Ok(TemplateFormat {
            name: name.to_owned(),
            headers: compiled,
        })
    }

    /// Parses the format from the first value of each of its headers (`values[i]` belongs to
    /// `headers[i]`). `None` when none of its headers is present.
    pub fn parse(
        &self,
        values: &[Option<&[u8]>],
        mode: RepairMode,
    ) -> Option<Parsed<TraceContext>> {
        if values.iter().all(Option::is_none) {
            return None;
        }
        Some(self.parse_present(values, mode))
    }

    fn parse_present(&self, values: &[Option<&[u8]>], mode: RepairMode) -> Parsed<TraceContext> {
        let lenient = mode.lenient();
        let mut ctx = TraceContext {
            trace_id: TraceId::INVALID,
            span_id: SpanId::INVALID,
            parent_span_id: None,
            sampled: None,
            debug: false,
            random: false,
            short_trace_id: false,
        };
        let mut upper = false;
        for (header, value) in self.headers.iter().zip(values) {
            let value =
                trim_ows(value.ok_or(Invalid("a header of the template format is missing"))?);
            let mut rest = value;
            for segment in &header.segments {
                match segment {
                    Segment::Literal(lit) => {
                        rest = rest
                            .strip_prefix(&lit[..])
                            .ok_or(Invalid("template literal does not match"))?;
                    }
                    Segment::Field(field) => {
                        if rest.len() < field.width() {
                            return Err(Invalid("template value too short"));
                        }
                        let (digits, tail) = rest.split_at(field.width());
                        rest = tail;
                        upper |= read_field(*field, digits, lenient, &mut ctx)?;
                    }
                }
            }
            if !rest.is_empty() {
                return Err(Invalid("trailing data after the template"));
            }
        }
        if !ctx.trace_id.is_valid() {
            return Err(Invalid("all-zero trace id"));
        }
        let mut repairs = Repairs::NONE;
        if upper {
            repairs.add(RepairKind::UpperCaseHex);
        }
        Ok((ctx, repairs))
    }

    /// True when the format carries the span id (and so can name a parent); the tests use it
    /// to check what a template compiled to.
    #[cfg(test)]
    pub(crate) fn carries_span(&self) -> bool {
        self.headers
            .iter()
            .any(|h| h.segments.contains(&Segment::Field(Placeholder::SpanId)))
    }
}

impl HeaderTemplate {
    /// Renders this header for `ctx` into `out`; returns the length used.
    pub fn write(&self, ctx: &TraceContext, out: &mut [u8; MAX_RENDERED_LEN]) -> usize {
        let mut len = 0;
        for segment in &self.segments {
            match segment {
                Segment::Literal(lit) => {
                    out[len..len + lit.len()].copy_from_slice(lit);
                    len += lit.len();
                }
                Segment::Field(field) => {
                    let dst = &mut out[len..len + field.width()];
                    match field {
                        Placeholder::TraceId => encode_hex(&ctx.trace_id.0, dst),
                        Placeholder::SpanId => encode_hex(&ctx.span_id.0, dst),
                        Placeholder::ParentSpanId => {
                            encode_hex(&ctx.parent_span_id.unwrap_or(SpanId::INVALID).0, dst)
                        }
                        Placeholder::Flags => encode_hex(&[ctx.w3c_flags()], dst),
                        Placeholder::Sampled => {
                            dst[0] = if ctx.w3c_flags() & FLAG_SAMPLED != 0 {
                                b'1'
                            } else {
                                b'0'
                            }
                        }
                    }
                    len += field.width();
                }
            }
        }
        len
    }
}

/// Reads one placeholder into `ctx`; returns whether upper-case hex was accepted.
fn read_field(
    field: Placeholder,
    digits: &[u8],
    lenient: bool,
    ctx: &mut TraceContext,
) -> Result<bool, Invalid> {
    let upper = match field {
        Placeholder::TraceId => {
            let (id, case) =
                decode_hex_exact::<16>(digits, lenient).ok_or(Invalid("malformed trace id"))?;
            ctx.trace_id = TraceId(id);
            case == HexCase::Upper
        }
        Placeholder::SpanId => {
            let (id, case) =
                decode_hex_exact::<8>(digits, lenient).ok_or(Invalid("malformed span id"))?;
            ctx.span_id = SpanId(id);
            if !ctx.span_id.is_valid() {
                return Err(Invalid("all-zero span id"));
            }
            case == HexCase::Upper
        }
        Placeholder::ParentSpanId => {
            let (id, case) = decode_hex_exact::<8>(digits, lenient)
                .ok_or(Invalid("malformed parent span id"))?;
            ctx.parent_span_id = Some(SpanId(id)).filter(SpanId::is_valid);
            case == HexCase::Upper
        }
        Placeholder::Flags => {
            let (flags, case) =
                decode_hex_exact::<1>(digits, lenient).ok_or(Invalid("malformed flags"))?;
            ctx.sampled = Some(flags[0] & FLAG_SAMPLED != 0);
            ctx.random = flags[0] & FLAG_RANDOM != 0;
            case == HexCase::Upper
        }
        Placeholder::Sampled => {
            ctx.sampled = Some(match digits {
                b"1" => true,
                b"0" => false,
                _ => return Err(Invalid("sampled must be 0 or 1")),
            });
            false
        }
    };
    Ok(upper)
}

fn compile_segments(
    header: &str,
    template: &str,
    seen: &mut u8,
) -> Result<Vec<Segment>, TemplateError> {
    let mut segments = Vec::new();
    let mut literal = Vec::new();
    let mut rendered_len = 0;
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if c == '{' {
            let close = rest
                .find('}')
                .ok_or_else(|| err(header, format!("unclosed '{{' in template {template:?}")))?;
            let name = &rest[1..close];
            let field = Placeholder::from_name(name).ok_or_else(|| {
                err(
                    header,
                    format!("unknown placeholder {{{name}}} in template {template:?}"),
                )
            })?;
            if *seen & field.bit() != 0 {
                return Err(err(
                    header,
                    format!(
                        "ambiguous template {template:?}: {{{name}}} appears more than once in the format"
                    ),
                ));
            }
            *seen |= field.bit();
            if literal.is_empty() && matches!(segments.last(), Some(Segment::Field(_))) {
                return Err(err(
                    header,
                    format!(
                        "ambiguous template {template:?}: placeholders need a literal between them"
                    ),
                ));
            }
            if !literal.is_empty() {
                segments.push(Segment::Literal(
                    std::mem::take(&mut literal).into_boxed_slice(),
                ));
            }
            segments.push(Segment::Field(field));
            rendered_len += field.width();
            rest = &rest[close + 1..];
        } else if c == '}' {
            return Err(err(
                header,
                format!("unmatched '}}' in template {template:?}"),
            ));
        } else {
            if !(c == ' ' || c.is_ascii_graphic()) {
                return Err(err(
                    header,
                    format!("template {template:?} has a character not allowed in a header value"),
                ));
            }
            literal.push(c as u8);
            rendered_len += 1;
            rest = &rest[1..];
        }
    }
    if !literal.is_empty() {
        segments.push(Segment::Literal(literal.into_boxed_slice()));
    }
    if segments.is_empty() {
        return Err(err(header, "empty template"));
    }
    if template.starts_with(' ') || template.ends_with(' ') {
        // Header values lose surrounding whitespace on the wire; the value could not be read back.
        return Err(err(
            header,
            format!("template {template:?} starts or ends with a space"),
        ));
    }
    if rendered_len > MAX_RENDERED_LEN {
        return Err(err(
            header,
            format!("template renders longer than {MAX_RENDERED_LEN} bytes"),
        ));
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jd() -> TemplateFormat {
        TemplateFormat::compile("jd", &[("JD-Trace-ID", "t-{trace_id}-{span_id}-{flags}")])
            .expect("compiles")
    }

    fn pair() -> TemplateFormat {
        TemplateFormat::compile(
            "mq",
            &[("TRACE_ID", "{trace_id}"), ("SPAN_ID", "{span_id}")],
        )
        .expect("compiles")
    }

    #[test]
    fn compile_errors() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("x", "{span_id}")], "no {trace_id}"),
            (&[("x", "{trace_id}{span_id}")], "ambiguous"),
            (&[("x", "{trace_id}"), ("y", "{trace_id}")], "ambiguous"),
            (&[("x", "{trace}")], "unknown placeholder"),
            (&[("x", "{trace_id")], "unclosed"),
            (&[("x", "trace_id}")], "unmatched"),
            (&[("x", "")], "empty"),
            (&[("x", " {trace_id}")], "space"),
            (&[("traceparent", "{trace_id}")], "built-in"),
            (&[("bad header", "{trace_id}")], "not a valid header name"),
            (&[("x", "é{trace_id}")], "not allowed"),
            (&[], "no headers"),
        ];
        for (headers, reason) in cases {
            let e = TemplateFormat::compile("f", headers).expect_err("must fail");
            assert!(e.reason.contains(reason), "{headers:?}: {}", e.reason);
        }
        let long = format!("{}{{trace_id}}", "x".repeat(230));
        assert!(TemplateFormat::compile("f", &[("x", &long)]).is_err());
    }

    #[test]
    fn parses_and_writes_single_header_format() {
        let f = jd();
        assert_eq!(f.headers[0].name.as_str(), "jd-trace-id");
        let v = b"t-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (ctx, r) = f
            .parse(&[Some(v)], RepairMode::Strict)
            .expect("present")
            .expect("valid");
        assert!(r.is_empty());
        assert_eq!(ctx.trace_id.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.sampled, Some(true));
        let mut out = [0u8; MAX_RENDERED_LEN];
        let len = f.headers[0].write(&ctx, &mut out);
        assert_eq!(&out[..len], v);
        assert!(f.carries_span());
    }

    #[test]
    fn header_pairs() {
        let f = pair();
        let (ctx, _) = f
            .parse(
                &[
                    Some(b"4bf92f3577b34da6a3ce929d0e0e4736"),
                    Some(b"00f067aa0ba902b7"),
                ],
                RepairMode::Strict,
            )
            .expect("present")
            .expect("valid");
        assert_eq!(ctx.span_id.to_hex(), "00f067aa0ba902b7");
        assert_eq!(ctx.sampled, None);
        // One of the pair missing is invalid, both missing is absent.
        assert!(matches!(
            f.parse(
                &[Some(b"4bf92f3577b34da6a3ce929d0e0e4736"), None],
                RepairMode::Strict
            ),
            Some(Err(_))
        ));
        assert!(f.parse(&[None, None], RepairMode::Strict).is_none());
    }

    #[test]
    fn invalid_values() {
        let f = jd();
        for v in [
            "",
            "t-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "t-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "t-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "t-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "t-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "t-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(
                matches!(
                    f.parse(&[Some(v.as_bytes())], RepairMode::Strict),
                    Some(Err(_))
                ),
                "{v:?}"
            );
        }
        let (_, r) = f
            .parse(
                &[Some(
                    b"t-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                )],
                RepairMode::Lenient,
            )
            .expect("present")
            .expect("lenient accepts upper case");
        assert!(r.contains(RepairKind::UpperCaseHex));
    }

    #[test]
    fn trace_only_format() {
        let f = TemplateFormat::compile("log", &[("x-request-trace", "{trace_id}")]).expect("ok");
        assert!(!f.carries_span());
        let (ctx, _) = f
            .parse(
                &[Some(b"4bf92f3577b34da6a3ce929d0e0e4736")],
                RepairMode::Strict,
            )
            .expect("present")
            .expect("valid");
        assert!(!ctx.span_id.is_valid());
    }
}
