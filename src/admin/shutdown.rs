//! `POST /shutdown`: graceful shutdown asked from inside the pod.
//!
//! A classic-mode sidecar (a regular container, for clusters without native sidecars) keeps a
//! Job's pod running after the job's own container finished; the job's last step calls this
//! endpoint (`curl -X POST http://127.0.0.1:4191/shutdown`), and stitch drains and exits 0, so
//! the pod completes. Only loopback clients are obeyed: the admin port is reachable from the
//! whole cluster (kubelet probes, Prometheus), and nobody outside the pod may stop its proxy.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::{AdminState, text};

/// Triggers graceful shutdown for a loopback client.
pub(super) fn request(state: &AdminState, peer: SocketAddr) -> Response<Full<Bytes>> {
    let Some(shutdown) = &state.shutdown else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    if !super::access::is_loopback(peer) {
        tracing::warn!(%peer, "refused POST /shutdown from outside the pod");
        return text(
            StatusCode::FORBIDDEN,
            "only from inside the pod (loopback)\n",
        );
    }
    tracing::info!("shutdown requested through the admin server; draining");
    shutdown.trigger();
    text(StatusCode::ACCEPTED, "shutting down\n")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::admin::AppProbeSettings;
    use crate::shutdown::ShutdownHandle;

    #[test]
    fn only_loopback_clients_stop_stitch() {
        let handle = ShutdownHandle::default();
        let state = AdminState::new(Arc::new(AtomicBool::new(true)))
            .with_pod_hooks(AppProbeSettings::default(), handle.clone());
        for outsider in ["10.1.2.3:5000", "[fd00::1]:5000", "[::ffff:10.1.2.3]:5000"] {
            let response = request(&state, outsider.parse().unwrap());
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{outsider}");
            assert!(!handle.is_triggered(), "{outsider} stopped stitch");
        }
        let response = request(&state, "[::ffff:127.0.0.1]:5000".parse().unwrap());
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        assert!(handle.is_triggered());

        let without = AdminState::new(Arc::new(AtomicBool::new(true)));
        let response = request(&without, "127.0.0.1:1".parse().unwrap());
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
