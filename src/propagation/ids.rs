//! Trace and span identifiers as fixed-size arrays, with hex encoding that never allocates.
//!
//! Ids are `Copy` so the hot path never clones heap memory for them; the all-zero value is
//! the "invalid" id of every dialect's spec.

use std::cell::RefCell;
use std::fmt;

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

thread_local! {
    /// The generator of new ids: a fast non-cryptographic PRNG per thread, seeded from the
    /// OS-seeded `ThreadRng` — what the OpenTelemetry SDK's `RandomIdGenerator` uses too. Ids
    /// must be unique and unpredictable enough to spread over hash buckets and samplers (W3C
    /// Level 2: "randomly or pseudo-randomly generated"), not secret; `ThreadRng` (ChaCha12
    /// with reseeding) cost about 400 instructions per request for 24 bytes.
    static ID_RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

/// A header value carrying ids a writer just rendered (hex, dashes, colons: visible ASCII),
/// marked "never indexed" for HPACK. Such a value is new on every request (it carries this
/// hop's span id); left indexable, h2's encoder would insert each one into the connection's
/// 4 KiB dynamic table, evicting the entries that do repeat (`user-agent`, `content-type`, …)
/// so those are Huffman-coded in full again — about 3,000 instructions per HTTP/2 request. A
/// never-indexed literal is encoded once and evicts nothing; HTTP/1 ignores the mark.
pub(crate) fn id_header_value(rendered: &[u8]) -> http::HeaderValue {
    let mut value =
        http::HeaderValue::from_bytes(rendered).expect("id writers emit only visible ASCII");
    value.set_sensitive(true);
    value
}

/// `N` bytes from this thread's id generator.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    ID_RNG.with(|rng| rng.borrow_mut().fill_bytes(&mut out));
    out
}

/// A uniform sample in `[0, 1)` from the id generator (root sampling decisions).
pub(crate) fn random_unit() -> f64 {
    ID_RNG.with(|rng| rng.borrow_mut().random::<f64>())
}

/// A 128-bit trace id (W3C `trace-id`, B3/Jaeger ids left-padded to 128 bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

/// A 64-bit span id (W3C `parent-id`, B3 `SpanId`, Jaeger `span-id`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// The all-zero id every spec calls invalid.
    pub(crate) const INVALID: TraceId = TraceId([0; 16]);

    /// True unless all bytes are zero (the specs' "invalid" trace id).
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 16]
    }

    /// True when the upper 64 bits are zero, i.e. the id fits the 64-bit width older B3 and
    /// Jaeger peers use.
    pub(crate) fn fits_64_bits(&self) -> bool {
        self.0[..8] == [0; 8]
    }

    /// Writes 32 lower-case hex digits into `out`.
    pub(crate) fn encode_hex(&self, out: &mut [u8; 32]) {
        encode_hex(&self.0, out);
    }

    /// Lower-case hex as an owned string, for logs and JSON (not for the hot path).
    pub fn to_hex(&self) -> String {
        let mut buf = [0u8; 32];
        self.encode_hex(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// A random trace id, never all-zero (W3C Level 2 "random" trace ids).
    pub fn random() -> TraceId {
        loop {
            let id = TraceId(random_bytes());
            if id.is_valid() {
                return id;
            }
        }
    }
}

impl SpanId {
    /// The all-zero id every spec calls invalid.
    pub(crate) const INVALID: SpanId = SpanId([0; 8]);

    /// True unless all bytes are zero.
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 8]
    }

    /// Writes 16 lower-case hex digits into `out`.
    pub(crate) fn encode_hex(&self, out: &mut [u8; 16]) {
        encode_hex(&self.0, out);
    }

    /// Lower-case hex as an owned string, for logs and JSON (not for the hot path).
    pub fn to_hex(&self) -> String {
        let mut buf = [0u8; 16];
        self.encode_hex(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// A random span id, never all-zero.
    pub fn random() -> SpanId {
        loop {
            let id = SpanId(random_bytes());
            if id.is_valid() {
                return id;
            }
        }
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Encodes `bytes` as lower-case hex into `out` (which must be twice as long).
pub(crate) fn encode_hex(bytes: &[u8], out: &mut [u8]) {
    debug_assert_eq!(out.len(), bytes.len() * 2);
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX_DIGITS[usize::from(byte >> 4)];
        pair[1] = HEX_DIGITS[usize::from(byte & 0x0f)];
    }
}

/// How a hex field was spelled, so lenient mode can report upper-case repairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HexCase {
    /// Only `0-9a-f`.
    Lower,
    /// At least one `A-F` (accepted only when the caller allows it).
    Upper,
}

/// Hex digit values: `0-9a-f` map to their value, `A-F` to their value | `UPPER`, anything
/// else to `INVALID`. A table keeps the per-digit work to one load on the request path.
const INVALID: u8 = 0xff;
const UPPER: u8 = 0x10;
static HEX_VALUES: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut c = 0;
    while c < 256 {
        table[c] = match c as u8 {
            b'0'..=b'9' => c as u8 - b'0',
            b'a'..=b'f' => c as u8 - b'a' + 10,
            b'A'..=b'F' => (c as u8 - b'A' + 10) | UPPER,
            _ => INVALID,
        };
        c += 1;
    }
    table
};

/// Value of one hex digit and whether it was upper case; `None` for anything else or for
/// upper case when `allow_upper` is false.
fn hex_value(c: u8, allow_upper: bool) -> Option<(u8, bool)> {
    let v = HEX_VALUES[usize::from(c)];
    if v == INVALID || (v & UPPER != 0 && !allow_upper) {
        None
    } else {
        Some((v & 0x0f, v & UPPER != 0))
    }
}

/// Decodes 1..=2N hex digits into N bytes, right-aligned (left zero padding), as Jaeger and
/// 64-bit B3 ids need.
pub(crate) fn decode_hex_padded<const N: usize>(
    digits: &[u8],
    allow_upper: bool,
) -> Option<([u8; N], HexCase)> {
    if digits.len() == N * 2 {
        return decode_hex_exact(digits, allow_upper);
    }
    if digits.is_empty() || digits.len() > N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    let mut upper = false;
    // Walk from the last digit: digit i from the right goes to byte N-1-i/2.
    for (i, &c) in digits.iter().rev().enumerate() {
        let (v, was_upper) = hex_value(c, allow_upper)?;
        upper |= was_upper;
        let byte = &mut out[N - 1 - i / 2];
        if i % 2 == 0 {
            *byte |= v;
        } else {
            *byte |= v << 4;
        }
    }
    Some((
        out,
        if upper {
            HexCase::Upper
        } else {
            HexCase::Lower
        },
    ))
}

/// Decodes exactly 2N hex digits into N bytes.
pub(crate) fn decode_hex_exact<const N: usize>(
    digits: &[u8],
    allow_upper: bool,
) -> Option<([u8; N], HexCase)> {
    if digits.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    // OR of every table entry: INVALID shows up as 0xff, upper case as the UPPER bit.
    let mut seen = 0u8;
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let hi = HEX_VALUES[usize::from(pair[0])];
        let lo = HEX_VALUES[usize::from(pair[1])];
        seen |= hi | lo;
        *byte = (hi << 4) | (lo & 0x0f);
    }
    if seen == INVALID || (seen & 0xe0) != 0 {
        // Some digit was INVALID (bits above UPPER are only ever set by INVALID).
        return None;
    }
    let upper = seen & UPPER != 0;
    if upper && !allow_upper {
        return None;
    }
    Some((
        out,
        if upper {
            HexCase::Upper
        } else {
            HexCase::Lower
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = TraceId([
            0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
            0x47, 0x36,
        ]);
        assert_eq!(id.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let (bytes, case) = decode_hex_exact::<16>(id.to_hex().as_bytes(), false).expect("hex");
        assert_eq!(TraceId(bytes), id);
        assert_eq!(case, HexCase::Lower);
    }

    #[test]
    fn padded_decoding_right_aligns() {
        let (bytes, _) = decode_hex_padded::<8>(b"abc", false).expect("hex");
        assert_eq!(bytes, [0, 0, 0, 0, 0, 0, 0x0a, 0xbc]);
        let (bytes, _) = decode_hex_padded::<16>(b"1", false).expect("hex");
        assert_eq!(bytes[15], 1);
        assert_eq!(bytes[..15], [0; 15]);
    }

    #[test]
    fn rejects_bad_digits_and_lengths() {
        assert!(decode_hex_exact::<8>(b"00f067aa0ba902b", false).is_none());
        assert!(decode_hex_exact::<8>(b"00f067aa0ba902b77", false).is_none());
        assert!(decode_hex_exact::<8>(b"00f067aa0ba902bg", false).is_none());
        assert!(decode_hex_exact::<8>(b"00F067AA0BA902B7", false).is_none());
        assert!(decode_hex_padded::<8>(b"", false).is_none());
        let (_, case) = decode_hex_exact::<8>(b"00F067AA0BA902B7", true).expect("upper allowed");
        assert_eq!(case, HexCase::Upper);
    }

    #[test]
    fn random_ids_are_valid_and_differ() {
        assert!(TraceId::random().is_valid());
        assert!(SpanId::random().is_valid());
        assert_ne!(SpanId::random(), SpanId::random());
    }

    #[test]
    fn ids_differ_between_threads_and_calls() {
        // Each thread seeds its own generator: no two threads repeat each other's ids.
        let ids: Vec<TraceId> = (0..4)
            .map(|_| std::thread::spawn(TraceId::random))
            .map(|h| h.join().expect("no panic"))
            .chain((0..4).map(|_| TraceId::random()))
            .collect();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        let unit = random_unit();
        assert!((0.0..1.0).contains(&unit));
    }
}
