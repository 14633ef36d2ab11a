//! W3C Baggage limits. stitch forwards `baggage` untouched unless it breaks the spec's limits
//! (§3.3.1: at most 64 list-members and 8192 bytes in total), in which case the whole header is
//! dropped rather than truncated, and the drop is reported.

/// Most list-members the spec lets a platform propagate.
pub(crate) const MAX_MEMBERS: usize = 64;
/// Most bytes of `baggage` (all lines) the spec lets a platform propagate.
pub(crate) const MAX_BYTES: usize = 8192;

/// True when the `baggage` header lines are within the spec's limits.
pub(crate) fn within_limits<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> bool {
    let mut bytes = 0;
    let mut members = 0;
    for line in lines {
        if line.is_empty() {
            continue;
        }
        // Lines are joined with `,` into one list: the delimiters count towards the limit.
        bytes += line.len() + usize::from(bytes > 0);
        members += line
            .split(|c| *c == b',')
            .filter(|m| m.iter().any(|c| *c != b' ' && *c != b'\t'))
            .count();
        if bytes > MAX_BYTES || members > MAX_MEMBERS {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert!(within_limits([&b"userId=alice,serverNode=DF%2028"[..]]));
        let members: Vec<String> = (0..64).map(|i| format!("k{i}=v")).collect();
        assert!(within_limits([members.join(",").as_bytes()]));
        let members: Vec<String> = (0..65).map(|i| format!("k{i}=v")).collect();
        assert!(!within_limits([members.join(",").as_bytes()]));
        let big = format!("k={}", "v".repeat(8190));
        assert!(within_limits([big.as_bytes()]));
        let too_big = format!("k={}", "v".repeat(8191));
        assert!(!within_limits([too_big.as_bytes()]));
        // Limits span lines.
        let half = format!("k={}", "v".repeat(4100));
        assert!(!within_limits([half.as_bytes(), half.as_bytes()]));
    }
}
