//! The one metrics parser: a strict reader of the OpenMetrics text `/metrics` serves, and
//! lookups of its samples.

use std::net::SocketAddr;

use http::StatusCode;

/// `/metrics` of the admin server at `admin`, as text.
pub async fn scrape(admin: SocketAddr) -> String {
    let (status, _, body) = super::fetch(admin, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    String::from_utf8(body.to_vec()).expect("UTF-8 metrics")
}

/// Sum of the samples of `name` whose labels include every `labels` pair (0 when none), in
/// the exposition `text` (which must be valid).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let samples = parse_openmetrics(text).unwrap_or_else(|e| panic!("{e} in:\n{text}"));
    sample(&samples, name, labels).unwrap_or(0.0)
}

/// One parsed sample: name, labels, value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// A strict parser for the OpenMetrics text `/metrics` serves: every sample belongs to a
/// declared family with HELP and TYPE, names and labels are well-formed, values parse,
/// counters end in `_total`, and the exposition ends with `# EOF`. Returns
/// `(name, labels, value)` samples.
pub fn parse_openmetrics(text: &str) -> Result<Vec<Sample>, String> {
    let mut types: std::collections::HashMap<String, String> = Default::default();
    let mut helps: std::collections::HashSet<String> = Default::default();
    let mut samples = Vec::new();
    let mut saw_eof = false;
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    for line in text.lines() {
        if saw_eof {
            return Err(format!("content after # EOF: {line}"));
        }
        if line == "# EOF" {
            saw_eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().ok_or("HELP without name")?;
            if !valid_name(name) {
                return Err(format!("bad HELP name {name}"));
            }
            helps.insert(name.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let (name, ty) = (it.next().ok_or("TYPE name")?, it.next().ok_or("TYPE type")?);
            if ![
                "counter",
                "gauge",
                "histogram",
                "summary",
                "info",
                "stateset",
                "unknown",
                "gaugehistogram",
            ]
            .contains(&ty)
            {
                return Err(format!("bad TYPE {ty}"));
            }
            types.insert(name.to_owned(), ty.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name_labels, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("no value: {line}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| format!("bad value in {line}"))?,
        };
        let (name, labels) = match name_labels.split_once('{') {
            None => (name_labels.to_owned(), Vec::new()),
            Some((n, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .ok_or_else(|| format!("unclosed labels: {line}"))?;
                let mut labels = Vec::new();
                let mut s = body;
                while !s.is_empty() {
                    let (k, after) = s
                        .split_once("=\"")
                        .ok_or_else(|| format!("bad label in {line}"))?;
                    if !valid_name(k) {
                        return Err(format!("bad label name {k}"));
                    }
                    let mut val = String::new();
                    let mut chars = after.char_indices();
                    let mut end = None;
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => {
                                let (_, e) = chars.next().ok_or("dangling escape")?;
                                val.push(match e {
                                    'n' => '\n',
                                    other => other,
                                });
                            }
                            '"' => {
                                end = Some(i);
                                break;
                            }
                            c => val.push(c),
                        }
                    }
                    let end = end.ok_or_else(|| format!("unterminated label value: {line}"))?;
                    labels.push((k.to_owned(), val));
                    s = &after[end + 1..];
                    s = s.strip_prefix(',').unwrap_or(s);
                }
                (n.to_owned(), labels)
            }
        };
        if !valid_name(&name) {
            return Err(format!("bad metric name {name}"));
        }
        let family = [
            ("_total", "counter"),
            ("_bucket", "histogram"),
            ("_sum", "histogram"),
            ("_count", "histogram"),
            ("_created", ""),
        ]
        .iter()
        .find_map(|(suffix, _)| {
            name.strip_suffix(suffix)
                .filter(|base| types.contains_key(*base))
        })
        .unwrap_or(&name)
        .to_owned();
        let ty = types
            .get(&family)
            .ok_or_else(|| format!("sample {name} has no TYPE"))?;
        if !helps.contains(&family) {
            return Err(format!("family {family} has no HELP"));
        }
        if ty == "counter" && !name.ends_with("_total") && !name.ends_with("_created") {
            return Err(format!("counter sample {name} must end in _total"));
        }
        samples.push((name, labels, value));
    }
    if !saw_eof {
        return Err("missing # EOF".to_owned());
    }
    Ok(samples)
}

/// The value of one sample whose labels include all of `labels`.
pub fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| *v)
        .reduce(|a, b| a + b)
}
