//! Who may call the admin server: from beyond the pod (the peer namespace, where kubelet and
//! Prometheus sit) only `/live`, `/ready` and `/metrics` answer by default, while the
//! data-bearing endpoints answer `403`; from inside the pod (loopback, what `kubectl
//! port-forward` arrives on) everything answers; `--admin-expose-data` opens the data
//! endpoints to everyone.

use super::app_probe::wait_ready;
use super::pod::{ADMIN, Pod, start_stitch};
use super::topology::{Netns, POD_V4, Topology, sock};
use super::wire;

/// The data-bearing requests, as (method, path).
const DATA: [(&str, &str); 5] = [
    ("GET", "/traces"),
    ("GET", "/traces/0af7651916cd43dd8448eb211c80319c"),
    ("GET", "/config"),
    ("GET", "/health"),
    ("POST", "/v1/traces"),
];
/// What the kubelet and Prometheus call.
const OPEN: [&str; 3] = ["/live", "/ready", "/metrics"];

/// `(status, body)` of `method path` on the admin port at `admin`, sent from inside `ns`. A
/// POST carries an empty OTLP/JSON export (valid: `200`).
fn call(ns: &Netns, admin: std::net::SocketAddr, method: &str, path: &str) -> Result<u16, String> {
    let (method, path) = (method.to_owned(), path.to_owned());
    let what = format!("{method} {path} at {admin}");
    ns.within(move || {
        let (headers, body): (Vec<String>, &[u8]) = if method == "POST" {
            (vec!["content-type: application/json".to_owned()], b"{}")
        } else {
            (Vec::new(), b"")
        };
        wire::http_request(admin, &method, &path, &headers, body)
    })?
    .map(|(status, _)| status)
    .map_err(|e| format!("{what}: {e}"))
}

/// What the admin server answered, per caller.
struct Statuses {
    /// The data requests ([`DATA`]) from the peer.
    from_peer: Vec<u16>,
    /// The data requests from loopback inside the pod.
    from_loopback: Vec<u16>,
    /// The open endpoints ([`OPEN`]) from the peer.
    open: Vec<u16>,
}

/// The status every data request gets from the peer and from loopback, and the open ones.
fn statuses(topo: &Topology) -> Result<Statuses, String> {
    let outside = sock(POD_V4, ADMIN);
    let inside = sock([127, 0, 0, 1], ADMIN);
    let mut from_peer = Vec::new();
    let mut from_loopback = Vec::new();
    for (method, path) in DATA {
        from_peer.push(call(&topo.peer, outside, method, path)?);
        from_loopback.push(call(&topo.pod, inside, method, path)?);
    }
    let open = OPEN
        .iter()
        .map(|path| call(&topo.peer, outside, "GET", path))
        .collect::<Result<_, _>>()?;
    Ok(Statuses {
        from_peer,
        from_loopback,
        open,
    })
}

/// In the shared pod (default flags): data only to loopback, health to everyone. The trace id
/// is not in the ring, so loopback gets `404` for it: an answer, not a refusal.
pub fn data_stays_in_the_pod(pod: &mut Pod) -> Result<(), String> {
    let Statuses {
        from_peer,
        from_loopback,
        open,
    } = statuses(&pod.topo)?;
    if from_peer != [403; 5] {
        return Err(format!(
            "the peer got {from_peer:?} from {DATA:?}: expected 403 each"
        ));
    }
    if from_loopback != [200, 404, 200, 200, 200] {
        return Err(format!("loopback got {from_loopback:?} from {DATA:?}"));
    }
    if open != [200; 3] {
        return Err(format!(
            "the peer got {open:?} from {OPEN:?}: expected 200 each"
        ));
    }
    Ok(())
}

/// With `STITCH_ADMIN_EXPOSE_DATA=true` the peer gets every data endpoint too.
pub fn expose_data_opens_it() -> Result<(), String> {
    let topo = Topology::build()?;
    let env = [("STITCH_ADMIN_EXPOSE_DATA", "true".to_owned())];
    let mut stitch = start_stitch(&topo.pod, &env)?;
    wait_ready(&topo, &mut stitch)?;
    let Statuses {
        from_peer, open, ..
    } = statuses(&topo)?;
    if from_peer != [200, 404, 200, 200, 200] || open != [200; 3] {
        return Err(format!(
            "with --admin-expose-data the peer got {from_peer:?} from {DATA:?} and {open:?} from {OPEN:?}\n---- stitch's log ----\n{}",
            stitch.log_tail()
        ));
    }
    Ok(())
}
