//! Pod injection, shared by the admission webhook (`stitch webhook`) and the offline
//! `stitch inject`: given a pod (or a workload's pod template) and the cluster's options, either
//! a patched pod or the reason it is left alone.
//!
//! Pure: JSON in, JSON out, no I/O (only [`command`] reads files). Pods are handled as
//! `serde_json::Value`s, never as typed structs, so that every field this code does not know
//! (newer Kubernetes versions, other webhooks' additions) survives untouched.
//!
//! What an injected pod gets (details and reasons in `docs/kubernetes.md`):
//!
//! - the init container `stitch-init` running `stitch iptables` (root, `NET_ADMIN` and
//!   `NET_RAW` only, not privileged) with the pod's skip lists;
//! - the proxy `stitch` running `stitch run` as the proxy UID: a native sidecar (an init
//!   container with `restartPolicy: Always` and a startup probe, placed after `stitch-init` and
//!   before the pod's own init containers) or, classic, the first container with a `postStart`
//!   hook that holds the app until stitch is ready and a `preStop` hook that keeps it until
//!   the app's connections are gone;
//! - the app's network probes pointed at stitch's admin port (`probes`), which performs the
//!   originals; the app's containers are otherwise untouched and never reordered;
//! - the rules ConfigMap mounted `optional: true`, the annotation `stitch.dev/status` and the
//!   label `stitch.dev/injected: "true"` (what `metrics.podMonitor` selects).

pub mod command;
mod containers;
mod decide;
pub mod flags;
pub mod manifest;
pub mod options;
pub mod patch;
mod probes;
mod quantity;

use serde_json::Value;

pub use decide::{Skip, SkipReason};
pub use options::InjectOptions;

/// The opt-in key: namespace label, pod label or pod annotation; `enabled` or `disabled`.
pub const INJECT_KEY: &str = "stitch.dev/inject";
/// Written on injected pods with the injecting version; its presence means "already injected".
pub const STATUS_ANNOTATION: &str = "stitch.dev/status";
/// Label on injected pods (`"true"`), for selecting them (PodMonitor, `kubectl get -l`).
pub const INJECTED_LABEL: &str = "stitch.dev/injected";
/// The iptables init container.
pub const INIT_CONTAINER: &str = "stitch-init";
/// The proxy container.
pub const PROXY_CONTAINER: &str = "stitch";
/// stitch's admin port (probes, metrics; never redirected).
pub const ADMIN_PORT: u16 = 4191;
/// stitch's inbound listener port.
pub const INBOUND_PORT: u16 = 4143;
/// stitch's outbound listener port.
pub const OUTBOUND_PORT: u16 = 4140;

/// What the injector knows about a pod besides the pod itself.
#[derive(Debug, Clone, Default)]
pub struct PodContext {
    /// The pod's namespace (the admission request's, or the manifest's).
    pub namespace: Option<String>,
    /// The namespace carries `stitch.dev/inject: enabled` (or, for `stitch inject`, the user
    /// asked for these manifests explicitly).
    pub namespace_opted_in: bool,
    /// The workload a pod template belongs to (`stitch inject`); for pods the controller
    /// owner reference is read from the pod.
    pub owner: Option<Owner>,
}

/// A workload owning a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// `ReplicaSet`, `Job`, `Deployment`, …
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// The result of injecting one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The pod with stitch added.
    Injected(Injected),
    /// Left alone, and why.
    Skipped(Skip),
}

/// An injected pod and what was decided for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Injected {
    /// The patched pod (or pod template).
    pub pod: Value,
    /// `service.name` its spans carry.
    pub service_name: String,
    /// Native sidecar (`true`) or classic.
    pub native_sidecar: bool,
    /// How many of the app's probes now go through stitch.
    pub probes_rewritten: usize,
}

/// The pod is not a pod: no `spec.containers` list, or not an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedPod(pub String);

impl std::fmt::Display for MalformedPod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed pod: {}", self.0)
    }
}

impl std::error::Error for MalformedPod {}

/// Injects stitch into `pod` (an object with `metadata` and `spec`, a Pod or a template), or
/// says why not. Idempotent: an injected pod is skipped as `already-injected`.
pub fn inject_pod(
    pod: &Value,
    context: &PodContext,
    options: &InjectOptions,
) -> Result<Outcome, MalformedPod> {
    let view = decide::PodView::new(pod)?;
    let settings = match decide::decide(&view, context, options) {
        Ok(settings) => settings,
        Err(skip) => return Ok(Outcome::Skipped(skip)),
    };
    Ok(Outcome::Injected(containers::build(
        pod, &view, context, options, &settings,
    )))
}
