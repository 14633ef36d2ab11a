//! Kubernetes resource quantities (`100m`, `64Mi`, `1.5`, `2e3`), parsed only far enough to
//! refuse what the API server would refuse and to compare a request with its limit.

use std::str::FromStr;

/// A quantity's value in base units (cores or bytes), for comparisons.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub(super) struct Quantity(f64);

impl FromStr for Quantity {
    type Err = String;

    /// The grammar of `k8s.io/apimachinery/pkg/api/resource`: a signed decimal number, then
    /// a binary-SI suffix (`Ki`…`Ei`), a decimal-SI suffix (`n u m k M G T P E`) or an
    /// exponent (`e3`, `E-2`). Negative quantities are refused (no resource is negative).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a Kubernetes quantity");
        let unsigned = s.strip_prefix('+').unwrap_or(s);
        let digits_end = unsigned
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(unsigned.len());
        let (number, suffix) = unsigned.split_at(digits_end);
        let dots = number.matches('.').count();
        if number.is_empty() || number == "." || dots > 1 {
            return Err(bad());
        }
        let value: f64 = number.parse().map_err(|_| bad())?;
        let scale = match suffix {
            "" => 1.0,
            "n" => 1e-9,
            "u" => 1e-6,
            "m" => 1e-3,
            "k" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            "P" => 1e15,
            "E" => 1e18,
            "Ki" => 1024f64,
            "Mi" => 1024f64.powi(2),
            "Gi" => 1024f64.powi(3),
            "Ti" => 1024f64.powi(4),
            "Pi" => 1024f64.powi(5),
            "Ei" => 1024f64.powi(6),
            exp if exp.starts_with(['e', 'E']) => {
                let e: i32 = exp[1..].parse().map_err(|_| bad())?;
                if !(-30..=30).contains(&e) {
                    return Err(bad());
                }
                10f64.powi(e)
            }
            _ => return Err(bad()),
        };
        Ok(Quantity(value * scale))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_kubernetes_accepts() {
        let q = |s: &str| s.parse::<Quantity>().expect(s).0;
        assert_eq!(q("100m"), 0.1);
        assert_eq!(q("1"), 1.0);
        assert_eq!(q("1.5"), 1.5);
        assert_eq!(q("64Mi"), 64.0 * 1024.0 * 1024.0);
        assert_eq!(q("2e3"), 2000.0);
        assert_eq!(q("+1k"), 1000.0);
        assert!(q("1Gi") > q("64Mi"));
        assert!(q("500m") < q("1"));
    }

    #[test]
    fn refuses_the_rest() {
        for bad in [
            "", "m", "-1", "1.2.3", "1 Mi", "1mi", "1KB", "lots", "1e", "1e99", ".",
        ] {
            assert!(bad.parse::<Quantity>().is_err(), "accepted {bad:?}");
        }
    }
}
