//! Whether a pod gets stitch, in the order the checks run: namespace, opt-in, already
//! injected, host network, the proxy's UID, port conflicts, annotations.
//!
//! Every "no" is a [`Skip`] with a bounded reason (the `reason` label of
//! `stitch_webhook_admissions_total`) and a sentence for logs and `kubectl` warnings. A skip
//! always leaves the pod exactly as it came: tracing is never worth a pod that does not start.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::options::{InjectOptions, PodSettings};
use super::{
    ADMIN_PORT, INBOUND_PORT, INIT_CONTAINER, INJECT_KEY, MalformedPod, OUTBOUND_PORT,
    PROXY_CONTAINER, PodContext, STATUS_ANNOTATION,
};

/// Why a pod was not injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Neither the pod nor its namespace opted in.
    NotOptedIn,
    /// `stitch.dev/inject: disabled` on the pod.
    OptedOut,
    /// `kube-system`, `kube-public`, `kube-node-lease` or the release namespace.
    ExcludedNamespace,
    /// The pod shares the node's network: its iptables rules would be the node's.
    HostNetwork,
    /// `stitch.dev/status` or stitch's containers are already there.
    AlreadyInjected,
    /// A container runs as the proxy's UID, whose traffic iptables never redirects.
    RunsAsProxyUid,
    /// A container declares one of stitch's ports (4140, 4143, 4191).
    PortConflict,
    /// A `stitch.dev/*` annotation has a value that would break the pod.
    InvalidAnnotation,
}

impl SkipReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::NotOptedIn => "not-opted-in",
            SkipReason::OptedOut => "opted-out",
            SkipReason::ExcludedNamespace => "excluded-namespace",
            SkipReason::HostNetwork => "host-network",
            SkipReason::AlreadyInjected => "already-injected",
            SkipReason::RunsAsProxyUid => "runs-as-proxy-uid",
            SkipReason::PortConflict => "port-conflict",
            SkipReason::InvalidAnnotation => "invalid-annotation",
        }
    }

    /// Whether the pod's owner asked for stitch and should hear why it did not come (a
    /// `kubectl` warning), as opposed to a pod that never asked.
    pub fn worth_a_warning(self) -> bool {
        matches!(
            self,
            SkipReason::HostNetwork
                | SkipReason::RunsAsProxyUid
                | SkipReason::PortConflict
                | SkipReason::InvalidAnnotation
        )
    }
}

/// A pod left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// The bounded reason.
    pub reason: SkipReason,
    /// One sentence for people.
    pub detail: String,
}

fn skip(reason: SkipReason, detail: impl Into<String>) -> Skip {
    Skip {
        reason,
        detail: detail.into(),
    }
}

/// Read-only accessors over a pod's JSON.
#[derive(Debug)]
pub(super) struct PodView<'a> {
    pub(super) metadata: Option<&'a Map<String, Value>>,
    pub(super) spec: &'a Map<String, Value>,
}

impl<'a> PodView<'a> {
    pub(super) fn new(pod: &'a Value) -> Result<Self, MalformedPod> {
        let pod = pod
            .as_object()
            .ok_or_else(|| MalformedPod("not an object".into()))?;
        let spec = pod
            .get("spec")
            .and_then(Value::as_object)
            .ok_or_else(|| MalformedPod("no spec".into()))?;
        if !spec.get("containers").is_some_and(Value::is_array) {
            return Err(MalformedPod("spec.containers is not a list".into()));
        }
        let metadata = pod.get("metadata").and_then(Value::as_object);
        Ok(PodView { metadata, spec })
    }

    /// String-valued entries of `metadata.annotations` or `metadata.labels`.
    pub(super) fn string_map(&self, field: &str) -> BTreeMap<String, String> {
        self.metadata
            .and_then(|m| m.get(field))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn meta_str(&self, field: &str) -> Option<&'a str> {
        self.metadata?.get(field)?.as_str()
    }

    /// `spec.containers` or `spec.initContainers` (empty when absent).
    pub(super) fn containers(&self, field: &str) -> &'a [Value] {
        self.spec
            .get(field)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    fn all_containers(&self) -> impl Iterator<Item = &'a Value> {
        self.containers("initContainers")
            .iter()
            .chain(self.containers("containers"))
    }
}

/// Decides; on "yes", the pod's effective settings.
pub(super) fn decide(
    pod: &PodView<'_>,
    context: &PodContext,
    options: &InjectOptions,
) -> Result<PodSettings, Skip> {
    let namespace = context
        .namespace
        .as_deref()
        .or_else(|| pod.meta_str("namespace"));
    if let Some(ns) = namespace
        && options.excluded_namespaces.iter().any(|e| e == ns)
    {
        return Err(skip(
            SkipReason::ExcludedNamespace,
            format!("namespace {ns} is never injected"),
        ));
    }

    let annotations = pod.string_map("annotations");
    let labels = pod.string_map("labels");
    let asked: Vec<&str> = [labels.get(INJECT_KEY), annotations.get(INJECT_KEY)]
        .into_iter()
        .flatten()
        .map(|v| v.trim())
        .collect();
    if asked.contains(&"disabled") {
        return Err(skip(
            SkipReason::OptedOut,
            format!("{INJECT_KEY}: disabled on the pod"),
        ));
    }
    if let Some(other) = asked.iter().find(|v| **v != "enabled") {
        return Err(skip(
            SkipReason::InvalidAnnotation,
            format!("{INJECT_KEY}: {other:?} is neither enabled nor disabled"),
        ));
    }
    if asked.is_empty() && !context.namespace_opted_in {
        return Err(skip(
            SkipReason::NotOptedIn,
            format!("no {INJECT_KEY}: enabled on the pod or its namespace"),
        ));
    }

    if let Some(status) = annotations.get(STATUS_ANNOTATION) {
        return Err(skip(
            SkipReason::AlreadyInjected,
            format!("{STATUS_ANNOTATION} is {status}"),
        ));
    }
    if let Some(name) = pod
        .all_containers()
        .filter_map(|c| c.get("name")?.as_str())
        .find(|n| *n == PROXY_CONTAINER || *n == INIT_CONTAINER)
    {
        return Err(skip(
            SkipReason::AlreadyInjected,
            format!("the pod already has a container named {name}"),
        ));
    }

    if pod.spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Err(skip(
            SkipReason::HostNetwork,
            "hostNetwork pods share the node's network; redirecting it would capture the node",
        ));
    }

    let pod_uid = run_as_user(pod.spec.get("securityContext"));
    for container in pod.all_containers() {
        let uid = run_as_user(container.get("securityContext")).or(pod_uid);
        if uid == Some(i64::from(options.proxy_uid)) {
            let name = container.get("name").and_then(Value::as_str).unwrap_or("?");
            return Err(skip(
                SkipReason::RunsAsProxyUid,
                format!(
                    "container {name} runs as UID {}, the proxy's: its traffic would bypass stitch",
                    options.proxy_uid
                ),
            ));
        }
    }

    for container in pod.all_containers() {
        let ports = container.get("ports").and_then(Value::as_array);
        for port in ports.into_iter().flatten() {
            let number = port.get("containerPort").and_then(Value::as_i64);
            if let Some(p) = number.filter(|p| {
                [ADMIN_PORT, INBOUND_PORT, OUTBOUND_PORT]
                    .map(i64::from)
                    .contains(p)
            }) {
                let name = container.get("name").and_then(Value::as_str).unwrap_or("?");
                return Err(skip(
                    SkipReason::PortConflict,
                    format!("container {name} declares port {p}, which stitch needs"),
                ));
            }
        }
    }

    options
        .for_pod(&annotations)
        .map_err(|e| skip(SkipReason::InvalidAnnotation, e))
}

fn run_as_user(security_context: Option<&Value>) -> Option<i64> {
    security_context?.get("runAsUser")?.as_i64()
}
