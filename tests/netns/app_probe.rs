//! Kubelet probes through stitch tell the truth.
//!
//! In a pod with the redirect rules, a TCP connect to the app's port lands on stitch's inbound
//! listener, which accepts whether the app lives or not: an unmodified TCP probe would pass for
//! a dead app. The injector rewrites the app's probes to `/app-probe/{container}/{kind}` on the
//! admin port (never redirected) and stitch performs the original probe against the app. This
//! check runs that for real: the "kubelet" probes from the peer namespace (the node's side),
//! the app goes down and comes back, and the answers follow it. No probe becomes a span.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::pod::{ADMIN, APP_HTTP, StitchProcess, start_stitch};
use super::topology::{Netns, POD_V4, Topology, sock};
use super::wire;

/// The probes the injector would pass for a container `app` with a TCP liveness probe and an
/// HTTP readiness probe on port 8080.
const PROBES: &str = r#"{"app/liveness": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 2},
  "app/readiness": {"httpGet": {"port": 8080, "path": "/healthz"}, "timeoutSeconds": 2}}"#;

/// An HTTP app that can be stopped and started again; records who connected.
struct App {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl App {
    fn start(ns: &Netns, peers: Arc<Mutex<Vec<IpAddr>>>) -> Result<App, String> {
        let listener = ns.listen(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), APP_HTTP))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("nonblocking: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || serve(listener, &flag, &peers));
        Ok(App {
            stop,
            thread: Some(thread),
        })
    }

    /// Closes the listening socket: the app is down.
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(listener: TcpListener, stop: &AtomicBool, peers: &Mutex<Vec<IpAddr>>) {
    while !stop.load(Ordering::Acquire) {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                if let Ok(mut p) = peers.lock() {
                    p.push(wire::canonical(peer).ip());
                }
                let _ = stream.set_read_timeout(Some(wire::IO_TIMEOUT));
                let mut reader = BufReader::new(match stream.try_clone() {
                    Ok(s) => s,
                    Err(_) => continue,
                });
                let mut line = String::new();
                // Read the request head (a TCP probe sends none and closes: fine).
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        let _ = stream.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
                        );
                        break;
                    }
                    line.clear();
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// A kubelet probe from the node's side of the network: `(status, body)`.
fn kubelet(topo: &Topology, kind: &str) -> Result<(u16, String), String> {
    let path = format!("/app-probe/app/{kind}");
    topo.peer
        .within(move || {
            wire::http_get(
                sock(POD_V4, ADMIN),
                &path,
                &["User-Agent: kube-probe/1.31".to_owned()],
            )
        })?
        .map_err(|e| format!("kubelet → {kind} probe: {e}"))
}

fn expect(topo: &Topology, kind: &str, status: u16, when: &str) -> Result<(), String> {
    let got = kubelet(topo, kind)?;
    if got.0 != status {
        return Err(format!(
            "{kind} probe with the app {when}: expected {status}, got {got:?}"
        ));
    }
    Ok(())
}

/// Waits until stitch in `topo`'s pod answers `/ready` on loopback.
pub fn wait_ready(topo: &Topology, stitch: &mut StitchProcess) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if !stitch.alive() {
            return Err(format!("stitch exited:\n{}", stitch.log_tail()));
        }
        let ready = topo
            .pod
            .within(|| wire::http_get(([127, 0, 0, 1], ADMIN).into(), "/ready", &[]))?;
        if matches!(ready, Ok((200, _))) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("stitch not ready:\n{}", stitch.log_tail()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The check registered in `tests/netns.rs`.
pub fn probes_follow_the_app() -> Result<(), String> {
    let topo = Topology::build()?;
    let peers = Arc::new(Mutex::new(Vec::new()));
    let mut app = App::start(&topo.pod, peers.clone())?;
    let env = [
        ("STITCH_APP_PROBES", PROBES.to_owned()),
        ("POD_IP", POD_V4.to_string()),
    ];
    let mut stitch = start_stitch(&topo.pod, &env)?;
    wait_ready(&topo, &mut stitch)?;
    let bin = &super::bins::staged()?.stitch;
    topo.pod.exec(&bin.to_string_lossy(), &["iptables"])?;
    let result = (|| {
        expect(&topo, "liveness", 200, "up")?;
        expect(&topo, "readiness", 200, "up")?;
        let from: Vec<IpAddr> = peers.lock().map(|p| p.clone()).unwrap_or_default();
        if from.is_empty() || from.iter().any(|ip| *ip != IpAddr::from(POD_V4)) {
            return Err(format!(
                "the app should see the probes from the pod's own address (stitch, directly): {from:?}"
            ));
        }

        app.stop();
        // What an unmodified TCP probe would see: the port still accepts (stitch holds it).
        let lie = topo.peer.within(|| {
            TcpStream::connect_timeout(&sock(POD_V4, APP_HTTP), Duration::from_secs(5))
        })?;
        if lie.is_err() {
            return Err(format!(
                "the redirected app port refused while the app was down ({lie:?}): the premise of the rewrite did not hold"
            ));
        }
        expect(&topo, "liveness", 503, "down")?;
        expect(&topo, "readiness", 503, "down")?;

        app = App::start(&topo.pod, peers.clone())?;
        expect(&topo, "liveness", 200, "back")?;
        expect(&topo, "readiness", 200, "back")?;

        // Probes are not traffic: no span, no proxied request.
        let traces = topo
            .pod
            .within(|| wire::http_get(([127, 0, 0, 1], ADMIN).into(), "/traces", &[]))?
            .map_err(|e| format!("/traces: {e}"))?;
        if !traces.1.contains("\"traces\":[]") {
            return Err(format!("probes left traces: {}", traces.1));
        }
        Ok(())
    })();
    result.map_err(|e| format!("{e}\n---- stitch's log ----\n{}", stitch.log_tail()))
}
