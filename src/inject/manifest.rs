//! `stitch inject` on a YAML stream: every document that holds a pod (Pod, Deployment,
//! ReplicaSet, StatefulSet, DaemonSet, Job, CronJob, or a `kind: List` of them) is injected;
//! every other document, and every document left alone, is written back byte for byte.
//!
//! The stream is split textually, on the document markers (`---` and `...` at the start of a
//! line, which YAML forbids inside any scalar, block scalars included), so passing a document
//! through needs no YAML round trip: comments, anchors, key order and quoting survive. Only an
//! injected document is re-emitted from its parsed form (its comments are lost).

use serde_json::Value;

use super::{InjectOptions, Outcome, Owner, PodContext, Skip, inject_pod};

/// What happened to one workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// `deployment/web`, `pod/worker`, …
    pub object: String,
    /// The namespace the manifest names, if any.
    pub namespace: Option<String>,
    /// Injected (service name, native sidecar, probes rewritten) or skipped.
    pub outcome: Result<Summary, Skip>,
}

/// What an injection decided, for the summary line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `service.name` of the spans.
    pub service_name: String,
    /// Native sidecar or classic.
    pub native_sidecar: bool,
    /// Probes now answered through stitch.
    pub probes_rewritten: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.object)?;
        if let Some(ns) = &self.namespace {
            write!(f, " (namespace {ns})")?;
        }
        match &self.outcome {
            Ok(s) => write!(
                f,
                ": injected, {} sidecar, service.name {}, {} probe(s) through stitch",
                if s.native_sidecar {
                    "native"
                } else {
                    "classic"
                },
                s.service_name,
                s.probes_rewritten
            ),
            Err(skip) => write!(f, ": skipped ({}): {}", skip.reason.label(), skip.detail),
        }
    }
}

/// The result of one stream.
#[derive(Debug, Default)]
pub struct Transformed {
    /// The output stream.
    pub text: String,
    /// One entry per workload found, in order.
    pub reports: Vec<Report>,
    /// Documents that are not YAML, passed through: `(index from 1, error)`.
    pub unreadable: Vec<(usize, String)>,
}

/// Injects every workload of `stream`.
pub fn transform(stream: &str, options: &InjectOptions) -> Transformed {
    let mut out = Transformed::default();
    for (index, chunk) in split_documents(stream).into_iter().enumerate() {
        let parsed: Result<Value, _> = serde_saphyr::from_str(chunk.body);
        let mut value = match parsed {
            Ok(v) => v,
            Err(e) => {
                out.unreadable.push((index + 1, e.to_string()));
                out.text.push_str(chunk.whole);
                continue;
            }
        };
        if inject_object(&mut value, options, &mut out.reports) {
            out.text.push_str(chunk.marker);
            if !chunk.marker.is_empty() && !chunk.marker.ends_with('\n') {
                out.text.push('\n');
            }
            let yaml = serde_saphyr::to_string(&value).unwrap_or_else(|_| chunk.body.to_owned());
            out.text.push_str(&yaml);
            if !yaml.ends_with('\n') {
                out.text.push('\n');
            }
            out.text.push_str(chunk.trailer);
        } else {
            out.text.push_str(chunk.whole);
        }
    }
    out
}

/// Injects the workload (or the items of a List) in `value`; true when anything changed.
fn inject_object(value: &mut Value, options: &InjectOptions, reports: &mut Vec<Report>) -> bool {
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind == "List" {
        let mut changed = false;
        if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                changed |= inject_object(item, options, reports);
            }
        }
        return changed;
    }
    let template_path: &[&str] = match kind {
        "Pod" => &[],
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return false,
    };
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let context = PodContext {
        namespace: namespace.clone(),
        // Naming the manifests is the opt-in; a pod can still opt out.
        namespace_opted_in: true,
        owner: (kind != "Pod").then(|| Owner {
            kind: kind.to_owned(),
            name: name.clone(),
        }),
    };
    let object = format!("{}/{name}", kind.to_ascii_lowercase());
    let mut target = Some(&mut *value);
    for key in template_path {
        target = target.and_then(|t| t.get_mut(*key));
    }
    let Some(pod) = target else {
        return false;
    };
    let outcome = match inject_pod(pod, &context, options) {
        Ok(outcome) => outcome,
        // Not a pod template after all (no containers): not ours to touch.
        Err(_) => return false,
    };
    let (changed, outcome) = match outcome {
        Outcome::Injected(injected) => {
            let summary = Summary {
                service_name: injected.service_name,
                native_sidecar: injected.native_sidecar,
                probes_rewritten: injected.probes_rewritten,
            };
            *pod = injected.pod;
            (true, Ok(summary))
        }
        Outcome::Skipped(skip) => (false, Err(skip)),
    };
    reports.push(Report {
        object,
        namespace,
        outcome,
    });
    changed
}

/// One document of a stream, as slices of it.
#[derive(Debug, PartialEq, Eq)]
struct Chunk<'a> {
    /// All of it: what a pass-through writes.
    whole: &'a str,
    /// The `---` line that opens it (empty for a first document without one).
    marker: &'a str,
    /// The document's content.
    body: &'a str,
    /// A closing `...` line, if any.
    trailer: &'a str,
}

/// Splits a stream on document markers; concatenating the chunks' `whole` gives the stream.
/// Text after a `...` line up to the next `---` stays with the closed document, untouched.
fn split_documents(stream: &str) -> Vec<Chunk<'_>> {
    let mut chunks = Vec::new();
    let (mut start, mut body_start, mut close) = (0, 0, None);
    let mut offset = 0;
    for line in stream.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is = |m: &str| {
            bare == m || bare.starts_with(&format!("{m} ")) || bare.starts_with(&format!("{m}\t"))
        };
        if is("---") {
            if offset > start {
                chunks.push(chunk(
                    stream,
                    start,
                    body_start,
                    close.unwrap_or(offset),
                    offset,
                ));
            }
            start = offset;
            // `--- {kind: Pod}`: the content on the marker line belongs to the body.
            body_start = if bare == "---" {
                offset + line.len()
            } else {
                offset + 3
            };
            close = None;
        } else if is("...") && close.is_none() {
            close = Some(offset);
        }
        offset += line.len();
    }
    if stream.len() > start {
        chunks.push(chunk(
            stream,
            start,
            body_start,
            close.unwrap_or(stream.len()),
            stream.len(),
        ));
    }
    chunks
}

fn chunk(stream: &str, start: usize, body_start: usize, body_end: usize, end: usize) -> Chunk<'_> {
    Chunk {
        whole: &stream[start..end],
        marker: &stream[start..body_start],
        body: &stream[body_start..body_end],
        trailer: &stream[body_end..end],
    }
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
