//! The JSON Patch (RFC 6902) an admission response carries: the difference between the pod
//! the API server sent and the injected one.
//!
//! Injection only adds or replaces whole members one or two levels down (`/spec/containers`,
//! `/metadata/annotations`, …), so the patch is a list of `add` operations of those members
//! (`add` on an existing member replaces it, RFC 6902 §4.1). Whole lists rather than
//! per-element operations keep the patch obviously correct: it is applied by the API server to
//! exactly the object it sent, so nothing can have moved in between.

use serde_json::{Value, json};

/// Operations turning `original` into `patched`, where `patched` differs from `original` only
/// by added or changed members of the top-level objects (what [`super::inject_pod`] produces).
pub fn json_patch(original: &Value, patched: &Value) -> Vec<Value> {
    let mut ops = Vec::new();
    let (Some(before), Some(after)) = (original.as_object(), patched.as_object()) else {
        return vec![json!({"op": "replace", "path": "", "value": patched})];
    };
    for (key, new) in after {
        let path = format!("/{}", escape(key));
        match (before.get(key), new) {
            (Some(old), _) if old == new => {}
            (Some(Value::Object(old)), Value::Object(new)) => {
                for (sub, value) in new {
                    if old.get(sub) != Some(value) {
                        ops.push(json!({"op": "add", "path": format!("{path}/{}", escape(sub)), "value": value}));
                    }
                }
            }
            _ => ops.push(json!({"op": "add", "path": path, "value": new})),
        }
    }
    ops
}

/// JSON Pointer escaping (RFC 6901 §3): `~` → `~0`, `/` → `~1`.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_changed_members_with_escaped_paths() {
        let original = json!({"metadata": {"name": "p"}, "spec": {"containers": [1]}});
        let patched = json!({
            "metadata": {"name": "p", "annotations": {"stitch.dev/status": "x"}},
            "spec": {"containers": [0, 1], "volumes": []},
        });
        let ops = json_patch(&original, &patched);
        assert_eq!(
            ops,
            vec![
                json!({"op": "add", "path": "/metadata/annotations", "value": {"stitch.dev/status": "x"}}),
                json!({"op": "add", "path": "/spec/containers", "value": [0, 1]}),
                json!({"op": "add", "path": "/spec/volumes", "value": []}),
            ]
        );
        assert_eq!(escape("a/b~c"), "a~1b~0c");
        assert!(json_patch(&original, &original).is_empty());
    }
}
