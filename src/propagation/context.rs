//! The dialect-neutral trace context, dialect names, repair kinds and the small helpers every
//! parser shares.

use std::fmt;

use super::ids::{SpanId, TraceId};

/// W3C `trace-flags` bit: the caller recorded (sampled) its span.
pub(crate) const FLAG_SAMPLED: u8 = 0x01;
/// W3C Level 2 `trace-flags` bit: the trace id's right-most 7 bytes are random.
pub(crate) const FLAG_RANDOM: u8 = 0x02;

/// What one dialect's headers said about the caller's span, in dialect-neutral form.
///
/// Writers emit `span_id` as the span the receiver must use as its parent, so the engine builds
/// a context for the new hop and hands it to each writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace this span belongs to.
    pub trace_id: TraceId,
    /// The sender's span. All-zero only for template formats that carry no `{span_id}`: the
    /// trace is known but its parent span is not.
    pub span_id: SpanId,
    /// The sender's own parent (B3/Jaeger carry it; W3C does not).
    pub parent_span_id: Option<SpanId>,
    /// The sampling decision; `None` when the sender deferred it (B3 without a sampling state).
    pub sampled: Option<bool>,
    /// B3 `d` / `X-B3-Flags: 1`, Jaeger flag 0x02: record regardless of sampling.
    pub debug: bool,
    /// W3C Level 2 random flag: kept when the trace id came from upstream.
    pub random: bool,
    /// The peer wrote a 64-bit trace id; B3 and Jaeger write it back in that width.
    pub short_trace_id: bool,
}

impl TraceContext {
    /// A context with only the ids set (sampled, no parent, no flags); tests and writers start
    /// from it.
    pub fn new(trace_id: TraceId, span_id: SpanId) -> TraceContext {
        TraceContext {
            trace_id,
            span_id,
            parent_span_id: None,
            sampled: Some(true),
            debug: false,
            random: false,
            short_trace_id: false,
        }
    }

    /// The W3C `trace-flags` byte for this context (only the bits stitch understands).
    pub(crate) fn w3c_flags(&self) -> u8 {
        let mut flags = 0;
        if self.sampled.unwrap_or(false) || self.debug {
            flags |= FLAG_SAMPLED;
        }
        if self.random {
            flags |= FLAG_RANDOM;
        }
        flags
    }

    /// True when B3/Jaeger should write the trace id in 16 hex digits.
    pub(crate) fn writes_short_trace_id(&self) -> bool {
        self.short_trace_id && self.trace_id.fits_64_bits()
    }
}

/// Every header the built-in dialects read and write, lower case: the one list of them.
/// `baggage` is not among them (stitch checks its limits, never writes it). A template format
/// may claim none of these nor `baggage`; the transparency tests leave exactly these out of
/// their byte-for-byte comparison.
pub const TRACE_HEADERS: &[&str] = &[
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "uber-trace-id",
];

/// A trace-header dialect. Templates are numbered in the order of the rules file's `formats`;
/// the rules' `dialect_name` gives their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// W3C Trace Context: `traceparent` + `tracestate`.
    W3c,
    /// B3, written as the single `b3` header (reads both forms).
    B3,
    /// B3, written as the `X-B3-*` headers (reads both forms).
    B3Multi,
    /// Jaeger `uber-trace-id`.
    Jaeger,
    /// A template format from the rules file, by index.
    Template(u16),
}

impl Dialect {
    /// The built-in name (`w3c`, `b3`, `b3multi`, `jaeger`); `None` for templates, whose names
    /// live in the rules.
    pub(crate) fn builtin_name(self) -> Option<&'static str> {
        match self {
            Dialect::W3c => Some("w3c"),
            Dialect::B3 => Some("b3"),
            Dialect::B3Multi => Some("b3multi"),
            Dialect::Jaeger => Some("jaeger"),
            Dialect::Template(_) => None,
        }
    }

    /// The built-in dialect of that name, as spelled in the rules file and `OTEL_PROPAGATORS`.
    pub(crate) fn builtin(name: &str) -> Option<Dialect> {
        match name {
            "w3c" | "tracecontext" => Some(Dialect::W3c),
            "b3" => Some(Dialect::B3),
            "b3multi" => Some(Dialect::B3Multi),
            "jaeger" => Some(Dialect::Jaeger),
            _ => None,
        }
    }
}

/// A legacy fault that `repair: lenient` accepted and wrote back normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RepairKind {
    /// `A-F` in a hex field.
    UpperCaseHex,
    /// A 64-bit trace id where W3C requires 128 bits (left-padded with zeros).
    ShortTraceId,
    /// B3/Jaeger value without its parent-span field.
    MissingParent,
    /// Spaces or tabs inside the value.
    Whitespace,
}

impl RepairKind {
    /// Static label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RepairKind::UpperCaseHex => "upper_case_hex",
            RepairKind::ShortTraceId => "short_trace_id",
            RepairKind::MissingParent => "missing_parent",
            RepairKind::Whitespace => "whitespace",
        }
    }

    const ALL: [RepairKind; 4] = [
        RepairKind::UpperCaseHex,
        RepairKind::ShortTraceId,
        RepairKind::MissingParent,
        RepairKind::Whitespace,
    ];

    fn bit(self) -> u8 {
        match self {
            RepairKind::UpperCaseHex => 1,
            RepairKind::ShortTraceId => 2,
            RepairKind::MissingParent => 4,
            RepairKind::Whitespace => 8,
        }
    }
}

impl fmt::Display for RepairKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The repairs applied to one header value, as a bit set (parsers report it without allocating).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Repairs(u8);

impl Repairs {
    /// No repair.
    pub(crate) const NONE: Repairs = Repairs(0);

    /// Records `kind`.
    pub fn add(&mut self, kind: RepairKind) {
        self.0 |= kind.bit();
    }

    /// True when `kind` was applied.
    pub fn contains(self, kind: RepairKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// True when nothing was repaired.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds applied, in a fixed order.
    pub fn iter(self) -> impl Iterator<Item = RepairKind> {
        RepairKind::ALL
            .into_iter()
            .filter(move |k| self.contains(*k))
    }
}

/// How parsers treat values that break the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairMode {
    /// Invalid means absent, as the specs require.
    #[default]
    Strict,
    /// Also accept the known legacy faults of [`RepairKind`] and write them back normalized.
    Lenient,
}

impl RepairMode {
    pub(crate) fn lenient(self) -> bool {
        self == RepairMode::Lenient
    }
}

/// Why a header value was rejected; a static reason for debug logs (never an error on the
/// request path: invalid means absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// A parsed value together with the repairs lenient mode applied to it.
pub(crate) type Parsed<T> = Result<(T, Repairs), Invalid>;

/// Trims HTTP optional whitespace (spaces and tabs) on both ends, as every spec allows.
pub(crate) fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|c| *c != b' ' && *c != b'\t')
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|c| *c != b' ' && *c != b'\t')
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// Longest value lenient mode copies to squeeze out inner whitespace; longer values with
/// whitespace are rejected (no trace header of any dialect is that long).
pub(crate) const SQUEEZE_CAPACITY: usize = 160;

/// In lenient mode, copies `value` without inner spaces/tabs into `buf` and reports the repair;
/// otherwise returns `value` unchanged. Never allocates.
pub(crate) fn squeeze_whitespace<'a>(
    value: &'a [u8],
    buf: &'a mut [u8; SQUEEZE_CAPACITY],
    mode: RepairMode,
    repairs: &mut Repairs,
) -> Result<&'a [u8], Invalid> {
    if !mode.lenient() || !value.iter().any(|c| *c == b' ' || *c == b'\t') {
        return Ok(value);
    }
    let mut len = 0;
    for &c in value {
        if c == b' ' || c == b'\t' {
            continue;
        }
        if len == buf.len() {
            return Err(Invalid("value too long"));
        }
        buf[len] = c;
        len += 1;
    }
    repairs.add(RepairKind::Whitespace);
    Ok(&buf[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_spaces_and_tabs_only() {
        assert_eq!(trim_ows(b" \tab c\t "), b"ab c");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b""), b"");
        assert_eq!(trim_ows(b"\nx"), b"\nx");
    }

    #[test]
    fn squeezes_only_when_lenient() {
        let mut buf = [0; SQUEEZE_CAPACITY];
        let mut repairs = Repairs::NONE;
        let out = squeeze_whitespace(b"a b", &mut buf, RepairMode::Strict, &mut repairs);
        assert_eq!(out, Ok(&b"a b"[..]));
        assert!(repairs.is_empty());
        let out = squeeze_whitespace(b"a b\tc", &mut buf, RepairMode::Lenient, &mut repairs);
        assert_eq!(out, Ok(&b"abc"[..]));
        assert!(repairs.contains(RepairKind::Whitespace));
        let long = [b' '; 400];
        let mut long = long.to_vec();
        long.extend_from_slice(&[b'a'; 200]);
        assert!(squeeze_whitespace(&long, &mut buf, RepairMode::Lenient, &mut repairs).is_err());
    }

    #[test]
    fn repair_set_lists_kinds() {
        let mut r = Repairs::NONE;
        r.add(RepairKind::Whitespace);
        r.add(RepairKind::UpperCaseHex);
        assert_eq!(
            r.iter().collect::<Vec<_>>(),
            vec![RepairKind::UpperCaseHex, RepairKind::Whitespace]
        );
    }

    #[test]
    fn dialect_names() {
        assert_eq!(Dialect::builtin("b3multi"), Some(Dialect::B3Multi));
        assert_eq!(Dialect::builtin("jd"), None);
        assert_eq!(Dialect::Jaeger.builtin_name(), Some("jaeger"));
    }
}
