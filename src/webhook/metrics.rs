//! The webhook's own Prometheus registry (it is a separate process from any proxy):
//!
//! - `stitch_webhook_admissions_total{outcome,reason}`: every admission answered, `outcome`
//!   `injected` (reason: `native-sidecar` / `classic-sidecar`), `skipped` (reason: why, see
//!   [`crate::inject::SkipReason::label`], plus `not-a-pod`, `not-create`) or `error`
//!   (`malformed-json`, `malformed-review`, `malformed-pod`, `body-too-large`);
//! - `stitch_webhook_certificate_reloads_total{result}`: `ok` or `rejected`.
//!
//! Labels come from fixed sets only.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::Arc;

type Labels = Vec<(&'static str, &'static str)>;

/// Cheap to clone; every clone counts into the same registry.
#[derive(Debug, Clone)]
pub struct WebhookMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    admissions: Family<Labels, Counter>,
    certificate_reloads: Family<Labels, Counter>,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let admissions = Family::<Labels, Counter>::default();
        let certificate_reloads = Family::<Labels, Counter>::default();
        registry.register(
            "stitch_webhook_admissions",
            "Admission requests answered, by outcome and reason",
            admissions.clone(),
        );
        registry.register(
            "stitch_webhook_certificate_reloads",
            "Serving certificate reloads after its files changed, by result",
            certificate_reloads.clone(),
        );
        WebhookMetrics {
            inner: Arc::new(Inner {
                registry,
                admissions,
                certificate_reloads,
            }),
        }
    }
}

impl WebhookMetrics {
    /// Counts one admission.
    pub fn admission(&self, outcome: &'static str, reason: &'static str) {
        self.inner
            .admissions
            .get_or_create(&vec![("outcome", outcome), ("reason", reason)])
            .inc();
    }

    /// Counts one certificate reload.
    pub fn certificate_reload(&self, result: &'static str) {
        self.inner
            .certificate_reloads
            .get_or_create(&vec![("result", result)])
            .inc();
    }

    /// OpenMetrics text for `/metrics`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.inner.registry).is_err() {
            tracing::error!("metrics encoding failed");
        }
        out
    }
}
