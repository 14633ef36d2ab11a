//! A tiny, case-insensitive glob for request authorities: `*` matches any run of characters
//! (dots included), `?` one character, everything else itself. A pattern without `:` is matched
//! against the host only (the port stripped), one with `:` against the whole authority.

/// A compiled authority glob.
#[derive(Debug, Clone)]
pub(crate) struct AuthorityGlob {
    pattern: Box<[u8]>,
    with_port: bool,
}

impl AuthorityGlob {
    /// Compiles `pattern`; the error says why it is not a usable glob.
    pub(crate) fn new(pattern: &str) -> Result<AuthorityGlob, String> {
        if pattern.is_empty() {
            return Err("bad glob \"\": empty pattern".to_owned());
        }
        if let Some(c) = pattern.chars().find(|c| {
            !(c.is_ascii_alphanumeric()
                || matches!(c, '-' | '.' | '_' | '*' | '?' | ':' | '[' | ']'))
        }) {
            return Err(format!(
                "bad glob {pattern:?}: {c:?} cannot appear in an authority"
            ));
        }
        Ok(AuthorityGlob {
            pattern: pattern.to_ascii_lowercase().into_bytes().into_boxed_slice(),
            with_port: pattern.contains(':') && !pattern.starts_with('['),
        })
    }

    /// True when `authority` (`host` or `host:port`) matches.
    pub(crate) fn matches(&self, authority: &str) -> bool {
        let subject = if self.with_port {
            authority
        } else {
            strip_port(authority)
        };
        wildcard_match(&self.pattern, subject.as_bytes())
    }
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`.
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |i| &authority[..=i]);
    }
    match authority.rfind(':') {
        Some(i) if authority[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &authority[..i],
        _ => authority,
    }
}

/// Iterative wildcard matching with single-star backtracking: O(pattern × subject) worst case.
fn wildcard_match(pattern: &[u8], subject: &[u8]) -> bool {
    let (mut p, mut s) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while s < subject.len() {
        let c = subject[s].to_ascii_lowercase();
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == c) {
            p += 1;
            s += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, s));
            p += 1;
        } else if let Some((sp, ss)) = star {
            p = sp + 1;
            s = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let cases = [
            (
                "*.legacy.svc.cluster.local",
                "orders.legacy.svc.cluster.local",
                true,
            ),
            (
                "*.legacy.svc.cluster.local",
                "orders.legacy.svc.cluster.local:8080",
                true,
            ),
            (
                "*.legacy.svc.cluster.local",
                "a.b.legacy.svc.cluster.local",
                true,
            ),
            (
                "*.legacy.svc.cluster.local",
                "legacy.svc.cluster.local",
                false,
            ),
            (
                "*.legacy.svc.cluster.local",
                "orders.modern.svc.cluster.local",
                false,
            ),
            ("Payment?.svc", "payment1.svc", true),
            ("payment?.svc", "payment12.svc", false),
            ("*:8080", "x.svc:8080", true),
            ("*:8080", "x.svc:9090", false),
            ("*", "anything:1", true),
            ("[::1]", "[::1]:4140", true),
        ];
        for (pattern, authority, expected) in cases {
            let glob = AuthorityGlob::new(pattern).expect("valid");
            assert_eq!(
                glob.matches(authority),
                expected,
                "{pattern} vs {authority}"
            );
        }
    }

    #[test]
    fn bad_globs() {
        for p in ["", "a b", "a/b", "{a,b}", "é.svc"] {
            assert!(AuthorityGlob::new(p).is_err(), "{p:?}");
        }
    }
}
