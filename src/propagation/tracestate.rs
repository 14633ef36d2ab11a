//! W3C `tracestate` validation (Trace Context Level 2, §3.3).
//!
//! Several header lines form one list, joined with `,` in order; empty members (after trimming
//! spaces/tabs) are ignored. Member grammar:
//!
//! ```text
//! key   = (lcalpha / DIGIT) 0*255(lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@")
//! value = 0*255(chr) nblk-chr      ; chr = %x20 / nblk-chr
//! nblk-chr = %x21-2B / %x2D-3C / %x3E-7E
//! ```
//!
//! Any invalid member, or more than 32 members, drops the whole header: stitch never truncates.
//! Valid headers travel byte for byte (duplicate keys included), so validation only reads.

use super::context::{Invalid, trim_ows};

/// Most list members the spec allows.
pub const MAX_MEMBERS: usize = 32;
/// Longest key (1 + 255).
const MAX_KEY_LEN: usize = 256;
/// Longest value.
const MAX_VALUE_LEN: usize = 256;

const KEY_CHAR: u8 = 1;
const VALUE_CHAR: u8 = 2;

/// Character classes of the grammar above, one load per byte on the request path.
static CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let mut class = 0;
        if b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || matches!(b, b'_' | b'-' | b'*' | b'/' | b'@')
        {
            class |= KEY_CHAR;
        }
        if matches!(b, 0x20..=0x2b | 0x2d..=0x3c | 0x3e..=0x7e) {
            class |= VALUE_CHAR;
        }
        table[c] = class;
        c += 1;
    }
    table
};

/// Validates the `tracestate` header lines, in order; returns the number of non-empty members.
pub fn validate<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Result<usize, Invalid> {
    let mut members = 0;
    for line in lines {
        for member in line.split(|c| *c == b',') {
            let member = trim_ows(member);
            if member.is_empty() {
                continue;
            }
            validate_member(member)?;
            members += 1;
            if members > MAX_MEMBERS {
                return Err(Invalid("more than 32 tracestate members"));
            }
        }
    }
    Ok(members)
}

fn validate_member(member: &[u8]) -> Result<(), Invalid> {
    let eq = member
        .iter()
        .position(|c| *c == b'=')
        .ok_or(Invalid("tracestate member without '='"))?;
    validate_key(&member[..eq])?;
    validate_value(&member[eq + 1..])
}

fn validate_key(key: &[u8]) -> Result<(), Invalid> {
    let (first, rest) = key.split_first().ok_or(Invalid("empty tracestate key"))?;
    if key.len() > MAX_KEY_LEN {
        return Err(Invalid("tracestate key longer than 256"));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(Invalid("tracestate key must start with a-z or 0-9"));
    }
    let ok = rest.iter().all(|c| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@')
    });
    if ok {
        Ok(())
    } else {
        Err(Invalid("bad character in tracestate key"))
    }
}

fn validate_value(value: &[u8]) -> Result<(), Invalid> {
    if value.is_empty() || value.len() > MAX_VALUE_LEN {
        return Err(Invalid("tracestate value must be 1-256 characters"));
    }
    if value.last() == Some(&b' ') {
        return Err(Invalid("tracestate value ends with a space"));
    }
    if value
        .iter()
        .all(|c| CLASSES[usize::from(*c)] & VALUE_CHAR != 0)
    {
        Ok(())
    } else {
        Err(Invalid("bad character in tracestate value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(lines: &[&str]) -> Result<usize, Invalid> {
        validate(lines.iter().map(|l| l.as_bytes()))
    }

    #[test]
    fn valid_lists() {
        let cases: &[(&[&str], usize)] = &[
            (&["congo=t61rcWkgMzE"], 1),
            (&["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"], 2),
            (&["rojo=1", "congo=2"], 2),
            (&["rojo=1,,  ,congo=2", ""], 2),
            (&[" rojo=1 ,\tcongo=2\t"], 2),
            (&["foo@bar=1", "tenant@system=x", "a/b*c_d-e=v"], 3),
            (&["0abc=1"], 1),
            // Duplicate keys are kept, not a reason to drop.
            (&["a=1,a=2"], 2),
            // Values may contain spaces inside and any visible ASCII except ',' and '='.
            (&["a= x y!~"], 1),
            (&[""], 0),
        ];
        for (lines, members) in cases {
            assert_eq!(check(lines), Ok(*members), "{lines:?}");
        }
    }

    #[test]
    fn key_and_value_limits() {
        let key256 = format!("a{}", "b".repeat(255));
        assert!(check(&[&format!("{key256}=1")]).is_ok());
        assert!(check(&[&format!("{key256}b=1")]).is_err());
        let value256 = "v".repeat(256);
        assert!(check(&[&format!("k={value256}")]).is_ok());
        assert!(check(&[&format!("k={value256}v")]).is_err());
    }

    #[test]
    fn member_count_limit_never_truncates() {
        let members: Vec<String> = (0..32).map(|i| format!("k{i}=v")).collect();
        assert_eq!(check(&[&members.join(",")]), Ok(32));
        let members: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert!(check(&[&members.join(",")]).is_err());
        // Across lines too.
        let first: Vec<String> = (0..20).map(|i| format!("a{i}=v")).collect();
        let second: Vec<String> = (0..13).map(|i| format!("b{i}=v")).collect();
        assert!(check(&[&first.join(","), &second.join(",")]).is_err());
    }

    #[test]
    fn invalid_members_drop_the_header() {
        let cases: &[&[&str]] = &[
            &["novalue"],
            &["k="],
            &["=v"],
            &["Upper=1"],
            &["_k=1"],
            &["k!=1"],
            &["k=a=b"],
            &["k=\u{7f}"],
            &["k=é"],
            &["ok=1", "bad key=2"],
            &["ok=1,k=v\u{1}"],
        ];
        for lines in cases {
            assert!(check(lines).is_err(), "{lines:?}");
        }
    }
}
