//! Who may call what. The admin port is reachable from the whole cluster (kubelet probes,
//! Prometheus), but trace data is not everyone's business: `/traces` shows URL paths and
//! client addresses, `/config` the rules, `/health` the traffic's counters, and
//! `POST /v1/traces` writes spans into the ring. Those answer loopback clients only — what
//! `kubectl port-forward`, the demo and the pod's own containers are — unless
//! `--admin-expose-data` opens them (a central stitch collecting other instances' spans).
//!
//! | who | endpoints |
//! | --- | --- |
//! | anyone | `/live`, `/ready`, `/metrics`, `/app-probe/…` |
//! | loopback, or anyone with `--admin-expose-data` | `/traces`, `/traces/{id}`, `/config`, `/health`, `POST /v1/traces` |
//! | loopback only, always | `POST /shutdown` (its own check, [`super::shutdown`]) |

use std::net::SocketAddr;

/// Whether `path` serves data that only loopback clients may see unless exposed.
pub(super) fn bears_data(path: &str) -> bool {
    matches!(path, "/traces" | "/config" | "/health" | "/v1/traces") || path.starts_with("/traces/")
}

/// Whether `peer` is on this host's loopback (the whole of 127/8, `::1`, and IPv4-mapped
/// loopback on a dual-stack listener).
pub(super) fn is_loopback(peer: SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

/// Whether `peer` may call `path`.
pub(super) fn allows(path: &str, peer: SocketAddr, expose_data: bool) -> bool {
    expose_data || !bears_data(path) || is_loopback(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_endpoints_answer_loopback_unless_exposed() {
        let outsiders = ["10.1.2.3:5000", "[fd00::1]:5000", "[::ffff:10.1.2.3]:5000"];
        let insiders = [
            "127.0.0.1:5000",
            "127.9.9.9:1",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:5",
        ];
        let data = [
            "/traces",
            "/traces/0af7651916cd43dd8448eb211c80319c",
            "/config",
            "/health",
            "/v1/traces",
        ];
        let open = [
            "/live",
            "/ready",
            "/metrics",
            "/app-probe/app/liveness",
            "/nothing",
        ];
        for path in data {
            for peer in outsiders {
                assert!(!allows(path, peer.parse().unwrap(), false), "{peer} {path}");
                assert!(
                    allows(path, peer.parse().unwrap(), true),
                    "{peer} {path} exposed"
                );
            }
            for peer in insiders {
                assert!(allows(path, peer.parse().unwrap(), false), "{peer} {path}");
            }
        }
        for path in open {
            for peer in outsiders {
                assert!(allows(path, peer.parse().unwrap(), false), "{peer} {path}");
            }
        }
        // A prefix that only looks like the data path is not one.
        assert!(!bears_data("/tracesX"));
        assert!(!bears_data("/configs"));
    }
}
