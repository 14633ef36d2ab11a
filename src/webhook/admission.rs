//! One `AdmissionReview` (`admission.k8s.io/v1`) in, one out.
//!
//! Every well-formed review is allowed — the webhook mutates, it never vetoes — with a JSON
//! Patch when the pod was injected. A pod the injector cannot read is allowed unchanged too
//! (tracing must never block a deployment). Only a body that is not a review at all gets a
//! 400, since there is no `uid` to answer.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::inject::{InjectOptions, Outcome, PodContext, inject_pod, patch::json_patch};

/// Which webhook entry called: the pod opted in itself, or its namespace did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// `/mutate`: the namespace did not opt in; only the pod's own label/annotation counts.
    Pod,
    /// `/mutate/namespace-enabled`: the namespace carries `stitch.dev/inject: enabled`.
    NamespaceEnabled,
}

/// The answer to one request body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// HTTP status (200 with a review; 400 for a body that is not one).
    pub status: u16,
    /// Response body: an AdmissionReview, or a message.
    pub body: String,
    /// `stitch_webhook_admissions_total` labels.
    pub outcome: &'static str,
    /// The reason label.
    pub reason: &'static str,
    /// A line for the log.
    pub detail: String,
}

/// Answers one request body.
pub fn review(body: &[u8], entry: Entry, options: &InjectOptions) -> Answer {
    let Ok(review) = serde_json::from_slice::<Value>(body) else {
        return bad_request("malformed-json", "the body is not JSON".to_owned());
    };
    let (Some("admission.k8s.io/v1"), Some("AdmissionReview")) = (
        review.get("apiVersion").and_then(Value::as_str),
        review.get("kind").and_then(Value::as_str),
    ) else {
        return bad_request(
            "malformed-review",
            "expected apiVersion admission.k8s.io/v1, kind AdmissionReview".to_owned(),
        );
    };
    let request = review.get("request");
    let Some(uid) = request.and_then(|r| r.get("uid")).and_then(Value::as_str) else {
        return bad_request(
            "malformed-review",
            "the review has no request.uid".to_owned(),
        );
    };
    let request = request.expect("uid came from it");
    let field = |path: &str| request.pointer(path).and_then(Value::as_str);
    let namespace = field("/namespace").map(str::to_owned);
    let pod_name = field("/object/metadata/name")
        .or_else(|| field("/object/metadata/generateName"))
        .or_else(|| field("/name"))
        .unwrap_or("?");
    let who = format!("{}/{pod_name}", namespace.as_deref().unwrap_or("-"));

    if field("/kind/kind") != Some("Pod") || field("/resource/resource") != Some("pods") {
        return allowed(
            uid,
            None,
            "skipped",
            "not-a-pod",
            vec![],
            format!("{who}: not a pod"),
        );
    }
    if field("/operation") != Some("CREATE") {
        return allowed(
            uid,
            None,
            "skipped",
            "not-create",
            vec![],
            format!("{who}: not a CREATE"),
        );
    }
    let Some(pod) = request.get("object") else {
        return allowed(
            uid,
            None,
            "error",
            "malformed-pod",
            vec![],
            format!("{who}: no object"),
        );
    };
    let context = PodContext {
        namespace,
        namespace_opted_in: entry == Entry::NamespaceEnabled,
        owner: None,
    };
    match inject_pod(pod, &context, options) {
        Err(e) => allowed(
            uid,
            None,
            "error",
            "malformed-pod",
            vec![format!("stitch: not injected: {e}")],
            format!("{who}: {e}"),
        ),
        Ok(Outcome::Skipped(skip)) => {
            let warnings = if skip.reason.worth_a_warning() {
                vec![format!("stitch: not injected: {}", skip.detail)]
            } else {
                vec![]
            };
            allowed(
                uid,
                None,
                "skipped",
                skip.reason.label(),
                warnings,
                format!("{who}: {}", skip.detail),
            )
        }
        Ok(Outcome::Injected(injected)) => {
            let patch = json_patch(pod, &injected.pod);
            let reason = if injected.native_sidecar {
                "native-sidecar"
            } else {
                "classic-sidecar"
            };
            let detail = format!(
                "{who}: injected ({reason}, service.name {}, {} probe(s) through stitch)",
                injected.service_name, injected.probes_rewritten
            );
            allowed(uid, Some(patch), "injected", reason, vec![], detail)
        }
    }
}

fn bad_request(reason: &'static str, message: String) -> Answer {
    Answer {
        status: 400,
        body: format!("{message}\n"),
        outcome: "error",
        reason,
        detail: message,
    }
}

fn allowed(
    uid: &str,
    patch: Option<Vec<Value>>,
    outcome: &'static str,
    reason: &'static str,
    warnings: Vec<String>,
    detail: String,
) -> Answer {
    let mut response = json!({"uid": uid, "allowed": true});
    if let Some(patch) = patch {
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(&patch).expect("a patch serializes"));
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(encoded);
    }
    if !warnings.is_empty() {
        response["warnings"] = json!(warnings);
    }
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    });
    Answer {
        status: 200,
        body: review.to_string(),
        outcome,
        reason,
        detail,
    }
}
