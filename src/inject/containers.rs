//! Building the injected pod: stitch's two containers, its volumes, the rewritten probes, the
//! status annotation. The order of containers is the startup order, which is the point:
//!
//! - native: `stitch-init` (iptables) → `stitch` (sidecar; the kubelet starts the next init
//!   container only once its startup probe passed) → the pod's own init containers (they
//!   already have a working, traced network) → the app;
//! - classic: the pod's own init containers (run before any redirect exists, so nothing
//!   captures their traffic while no proxy is running) → `stitch-init` → `stitch` first among
//!   the containers (its `postStart` hook returns once stitch is ready, and the kubelet starts
//!   the next container only after it) → the app.

use serde_json::{Map, Value, json};

use super::decide::PodView;
use super::options::{InjectOptions, PodSettings};
use super::{
    ADMIN_PORT, INIT_CONTAINER, INJECTED_LABEL, Injected, PROXY_CONTAINER, PodContext,
    STATUS_ANNOTATION, probes,
};
use crate::config::app_probes::{APP_PROBES_ENV, AppProbes};

/// Where the image keeps the binary (the hooks exec it; the image has no shell).
const STITCH_BINARY: &str = "/usr/local/bin/stitch";
/// Where the rules ConfigMap is mounted.
const RULES_DIR: &str = "/etc/stitch";
/// Volume names stitch adds.
const RULES_VOLUME: &str = "stitch-rules";
const XTABLES_LOCK_VOLUME: &str = "stitch-xtables-lock";
/// Seconds the classic `preStop` leaves stitch, out of the grace period, to drain and flush.
const FLUSH_MARGIN_SECONDS: i64 = 5;

pub(super) fn build(
    pod: &Value,
    view: &PodView<'_>,
    context: &PodContext,
    options: &InjectOptions,
    settings: &PodSettings,
) -> Injected {
    let service_name = service_name(view, context, settings);
    let mut pod = pod.clone();
    let (mut app_probes, mut probes_rewritten) = (AppProbes::new(), 0);
    let spec = pod
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .expect("PodView checked spec");
    // Regular init containers have no probes; the app's own native sidecars do, and are
    // rewritten when they start after stitch (native mode). In classic mode they start before
    // stitch exists, so a probe pointed at it could never pass.
    let fields: &[&str] = if settings.native_sidecar {
        &["containers", "initContainers"]
    } else {
        &["containers"]
    };
    for field in fields {
        let list = spec.get_mut(*field).and_then(Value::as_array_mut);
        for c in list.into_iter().flatten().filter_map(Value::as_object_mut) {
            probes_rewritten += probes::rewrite(c, settings, &mut app_probes);
        }
    }
    let grace = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(30);
    let proxy = proxy_container(options, settings, &service_name, &app_probes, grace);
    let init = init_container(options, settings);

    let own_init = take_list(spec, "initContainers");
    let app = take_list(spec, "containers");
    let first_app = app
        .first()
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let (init_list, containers) = if settings.native_sidecar {
        let mut list = vec![init, proxy];
        list.extend(own_init);
        (list, app)
    } else {
        let mut list = own_init;
        list.push(init);
        let mut containers = vec![proxy];
        containers.extend(app);
        (list, containers)
    };
    spec.insert("initContainers".into(), Value::Array(init_list));
    spec.insert("containers".into(), Value::Array(containers));
    let mut volumes = take_list(spec, "volumes");
    volumes.push(json!({
        "name": RULES_VOLUME,
        "configMap": {"name": settings.rules_configmap, "optional": true},
    }));
    volumes.push(json!({"name": XTABLES_LOCK_VOLUME, "emptyDir": {}}));
    spec.insert("volumes".into(), Value::Array(volumes));

    let metadata = object_field(
        pod.as_object_mut().expect("PodView checked the object"),
        "metadata",
    );
    let mode = if settings.native_sidecar {
        "native"
    } else {
        "classic"
    };
    let annotations = object_field(metadata, "annotations");
    annotations.insert(
        STATUS_ANNOTATION.into(),
        Value::String(json!({"version": env!("CARGO_PKG_VERSION"), "sidecar": mode}).to_string()),
    );
    // Classic mode puts stitch first; keep `kubectl logs/exec` defaulting to the app.
    if let (false, Some(app)) = (settings.native_sidecar, first_app) {
        annotations
            .entry("kubectl.kubernetes.io/default-container")
            .or_insert(Value::String(app));
    }
    object_field(metadata, "labels").insert(INJECTED_LABEL.into(), Value::String("true".into()));

    Injected {
        pod,
        service_name,
        native_sidecar: settings.native_sidecar,
        probes_rewritten,
    }
}

fn take_list(spec: &mut Map<String, Value>, field: &str) -> Vec<Value> {
    match spec.remove(field) {
        Some(Value::Array(list)) => list,
        _ => Vec::new(),
    }
}

/// `map[field]` as an object, created (or replacing a non-object) when needed.
fn object_field<'a>(map: &'a mut Map<String, Value>, field: &str) -> &'a mut Map<String, Value> {
    let slot = map
        .entry(field)
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().expect("just made an object")
}

/// `service.name`: the annotation, the `app.kubernetes.io/name` or `app` label, else the
/// owning workload's name.
fn service_name(view: &PodView<'_>, context: &PodContext, settings: &PodSettings) -> String {
    if let Some(name) = &settings.service_name {
        return name.clone();
    }
    let labels = view.string_map("labels");
    for key in ["app.kubernetes.io/name", "app"] {
        if let Some(name) = labels.get(key).filter(|n| !n.is_empty()) {
            return name.clone();
        }
    }
    if let Some(owner) = &context.owner {
        return owner.name.clone();
    }
    if let Some((kind, name)) = controller_owner(view) {
        return match kind {
            // `web-5d4f8b7c9` for Deployment `web`: the hash is the pod's own label.
            "ReplicaSet" => labels
                .get("pod-template-hash")
                .and_then(|hash| name.strip_suffix(&format!("-{hash}")))
                .unwrap_or(name)
                .to_owned(),
            // CronJob runs are `{cronjob}-{scheduled minute}`; one service, not one per run.
            "Job" => strip_cron_suffix(name).to_owned(),
            _ => name.to_owned(),
        };
    }
    view.meta_str("generateName")
        .map(|g| g.trim_end_matches('-'))
        .filter(|g| !g.is_empty())
        .or_else(|| view.meta_str("name"))
        .unwrap_or("unknown_service")
        .to_owned()
}

fn controller_owner<'a>(view: &PodView<'a>) -> Option<(&'a str, &'a str)> {
    let owners = view.metadata?.get("ownerReferences")?.as_array()?;
    let owner = owners
        .iter()
        .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))?;
    Some((owner.get("kind")?.as_str()?, owner.get("name")?.as_str()?))
}

fn strip_cron_suffix(job: &str) -> &str {
    match job.rsplit_once('-') {
        Some((base, digits))
            if !base.is_empty()
                && digits.len() >= 8
                && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => job,
    }
}

fn init_container(options: &InjectOptions, settings: &PodSettings) -> Value {
    let mut args = vec![
        "iptables".to_owned(),
        "--proxy-uid".to_owned(),
        options.proxy_uid.to_string(),
    ];
    for (flag, list) in [
        ("--skip-inbound-ports", &settings.skip_inbound_ports),
        ("--skip-outbound-ports", &settings.skip_outbound_ports),
        ("--skip-outbound-cidrs", &settings.skip_outbound_cidrs),
    ] {
        if !list.is_empty() {
            args.push(flag.to_owned());
            args.push(list.join(","));
        }
    }
    json!({
        "name": INIT_CONTAINER,
        "image": options.image,
        "imagePullPolicy": options.image_pull_policy,
        "args": args,
        "resources": {
            "limits": {"cpu": "100m", "memory": "64Mi"},
            "requests": {"cpu": "10m", "memory": "16Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "privileged": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": false,
            "runAsUser": 0,
        },
        // iptables takes its lock in /run; the root filesystem is read-only.
        "volumeMounts": [{"name": XTABLES_LOCK_VOLUME, "mountPath": "/run"}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    })
}

fn proxy_container(
    options: &InjectOptions,
    settings: &PodSettings,
    service_name: &str,
    app_probes: &AppProbes,
    grace_seconds: i64,
) -> Value {
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let mut env = vec![
        json!({"name": "OTEL_SERVICE_NAME", "value": service_name}),
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("POD_UID", "metadata.uid"),
        field("NODE_NAME", "spec.nodeName"),
        field("POD_IP", "status.podIP"),
        json!({"name": "RUST_LOG", "value": format!("{},opentelemetry=error", settings.log_level)}),
    ];
    if let Some(endpoint) = &options.otlp_endpoint {
        env.push(json!({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": endpoint}));
    }
    if let Some(protocol) = &options.otlp_protocol {
        env.push(json!({"name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": protocol}));
    }
    if let Some(secret) = &options.otlp_headers_secret {
        env.push(
            json!({"name": "OTEL_EXPORTER_OTLP_HEADERS", "valueFrom": {"secretKeyRef": {
            "name": secret.name, "key": secret.key, "optional": true}}}),
        );
    }
    if !app_probes.is_empty() {
        let probes = serde_json::to_string(app_probes).expect("probes serialize");
        env.push(json!({"name": APP_PROBES_ENV, "value": probes}));
    }
    let admin_probe = |path: &str| json!({"httpGet": {"path": path, "port": ADMIN_PORT}});
    let mut proxy = json!({
        "name": PROXY_CONTAINER,
        "image": options.image,
        "imagePullPolicy": options.image_pull_policy,
        "args": ["run", "--config", format!("{RULES_DIR}/rules.yaml"), "--config-optional"],
        "env": env,
        "ports": [{"name": "stitch-admin", "containerPort": ADMIN_PORT, "protocol": "TCP"}],
        "readinessProbe": admin_probe("/ready"),
        "livenessProbe": admin_probe("/live"),
        "resources": settings.resources.to_json(),
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": true,
            "runAsGroup": options.proxy_uid,
            "runAsNonRoot": true,
            "runAsUser": options.proxy_uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": RULES_VOLUME, "mountPath": RULES_DIR, "readOnly": true}],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });
    let fields = proxy.as_object_mut().expect("literal object");
    if settings.native_sidecar {
        fields.insert("restartPolicy".into(), json!("Always"));
        // The kubelet starts the next init container (and so the app) once this passes.
        let mut startup = admin_probe("/ready");
        startup["periodSeconds"] = json!(1);
        startup["failureThreshold"] = json!(120);
        fields.insert("startupProbe".into(), startup);
    } else {
        let drain = (grace_seconds - FLUSH_MARGIN_SECONDS).max(1);
        fields.insert(
            "lifecycle".into(),
            json!({
                "postStart": {"exec": {"command": [STITCH_BINARY, "wait-ready", "--timeout", "120s"]}},
                "preStop": {"exec": {"command": [STITCH_BINARY, "wait-drain", "--timeout", format!("{drain}s")]}},
            }),
        );
    }
    proxy
}

#[cfg(test)]
#[path = "containers_tests.rs"]
mod tests;
