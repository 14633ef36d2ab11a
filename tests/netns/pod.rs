//! The pod fixture: topology, servers, probes, stitch running as its own UID with the
//! redirect rules applied, and an app client that runs as the app's UID.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::probes::{Probe, Probes};
use super::topology::{Netns, PEER_SKIPPED_V4, PEER_V4, PEER_V6, POD_V4, POD_V6, Topology};
use super::wire::{self, Behaviour, Log};

/// UID stitch runs as (the `--proxy-uid` default).
pub const STITCH_UID: u32 = 2102;
/// UID of the app's processes.
pub const APP_UID: u32 = 1000;
/// The app's HTTP port (redirected inbound).
pub const APP_HTTP: u16 = 8080;
/// An app port listed in `--skip-inbound-ports`.
pub const APP_SKIPPED: u16 = 8081;
/// The peer's HTTP port.
pub const PEER_HTTP: u16 = 9000;
/// The peer's echo port (opaque, client speaks first).
pub const PEER_ECHO: u16 = 9001;
/// The peer's banner port (opaque, server speaks first).
pub const PEER_BANNER: u16 = 9002;
/// A peer echo port listed in `--skip-outbound-ports`.
pub const PEER_SKIPPED: u16 = 9003;
/// stitch's admin port.
pub const ADMIN: u16 = 4191;
/// The pod's `--detect-timeout`: long, so a client that waited for it shows.
pub const DETECT_TIMEOUT: &str = "5s";

/// The flags the fixture passes to `stitch iptables`.
pub const IPTABLES_FLAGS: [&str; 6] = [
    "--skip-inbound-ports",
    "8081",
    "--skip-outbound-ports",
    "9003",
    "--skip-outbound-cidrs",
    "198.51.100.0/24",
];

/// stitch as a child process; killed on drop.
#[derive(Debug)]
pub struct StitchProcess {
    child: Child,
    log: PathBuf,
}

impl StitchProcess {
    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines it logged.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }
}

impl Drop for StitchProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Everything the transparent scenarios share.
#[derive(Debug)]
pub struct Pod {
    /// What the app's HTTP server saw.
    pub app: Log,
    /// What the peer's HTTP server saw.
    pub peer_http: Log,
    /// The counters.
    pub probes: Probes,
    // Declared before the topology: stitch must die before its namespace is deleted.
    stitch: StitchProcess,
    /// The namespaces.
    pub topo: Topology,
}

fn probe(name: &'static str, v6: bool, chain: &'static str, spec: String) -> Probe {
    Probe {
        name,
        v6,
        chain,
        spec,
    }
}

fn owner(uid: u32) -> String {
    format!("-m owner --uid-owner {uid}")
}

impl Pod {
    /// Builds the namespaces, starts the servers and stitch, applies `stitch iptables`.
    pub fn start() -> Result<Self, String> {
        let topo = Topology::build()?;
        let any: SocketAddr = (Ipv6Addr::UNSPECIFIED, 0).into();
        let on = |port| SocketAddr::new(any.ip(), port);
        let app = wire::serve(topo.pod.listen(on(APP_HTTP))?, Behaviour::Http("app"));
        wire::serve(topo.pod.listen(on(APP_SKIPPED))?, Behaviour::WhoAmI);
        let peer_http = wire::serve(topo.peer.listen(on(PEER_HTTP))?, Behaviour::Http("peer"));
        wire::serve(topo.peer.listen(on(PEER_ECHO))?, Behaviour::Echo);
        wire::serve(topo.peer.listen(on(PEER_BANNER))?, Behaviour::Banner);
        wire::serve(topo.peer.listen(on(PEER_SKIPPED))?, Behaviour::Echo);

        let mut probes = Probes::default();
        let (app_uid, stitch) = (owner(APP_UID), owner(STITCH_UID));
        let out = "OUTPUT";
        for p in [
            probe(
                "app_to_outbound_v4",
                false,
                out,
                format!("{app_uid} -d 127.0.0.1 --dport 4140"),
            ),
            probe(
                "app_direct_peer_http_v4",
                false,
                out,
                format!("{app_uid} -d {PEER_V4} --dport {PEER_HTTP}"),
            ),
            probe(
                "stitch_to_peer_http_v4",
                false,
                out,
                format!("{stitch} -d {PEER_V4} --dport {PEER_HTTP}"),
            ),
            probe(
                "stitch_to_app_v4",
                false,
                out,
                format!("{stitch} -d {POD_V4} --dport {APP_HTTP}"),
            ),
            probe(
                "stitch_to_itself_v4",
                false,
                out,
                format!("{stitch} --dport 4140:4143"),
            ),
            probe(
                "stitch_to_admin_v4",
                false,
                out,
                format!("{stitch} --dport {ADMIN}"),
            ),
            probe(
                "stitch_to_peer_echo_v4",
                false,
                out,
                format!("{stitch} -d {PEER_V4} --dport {PEER_ECHO}"),
            ),
            probe(
                "stitch_to_peer_banner_v4",
                false,
                out,
                format!("{stitch} -d {PEER_V4} --dport {PEER_BANNER}"),
            ),
            probe(
                "app_direct_skipped_port_v4",
                false,
                out,
                format!("{app_uid} -d {PEER_V4} --dport {PEER_SKIPPED}"),
            ),
            probe(
                "stitch_to_skipped_port_v4",
                false,
                out,
                format!("{stitch} --dport {PEER_SKIPPED}"),
            ),
            probe(
                "app_direct_skipped_cidr_v4",
                false,
                out,
                format!("{app_uid} -d {PEER_SKIPPED_V4}"),
            ),
            probe(
                "stitch_to_skipped_cidr_v4",
                false,
                out,
                format!("{stitch} -d {PEER_SKIPPED_V4}"),
            ),
            probe(
                "inbound_redirected_v4",
                false,
                "INPUT",
                format!("-s {PEER_V4} --dport 4143"),
            ),
            probe(
                "inbound_admin_direct_v4",
                false,
                "INPUT",
                format!("-s {PEER_V4} --dport {ADMIN}"),
            ),
            probe(
                "inbound_skipped_direct_v4",
                false,
                "INPUT",
                format!("-s {PEER_V4} --dport {APP_SKIPPED}"),
            ),
            probe(
                "app_to_outbound_v6",
                true,
                out,
                format!("{app_uid} -d ::1 --dport 4140"),
            ),
            probe(
                "stitch_to_peer_http_v6",
                true,
                out,
                format!("{stitch} -d {PEER_V6} --dport {PEER_HTTP}"),
            ),
            probe(
                "stitch_to_app_v6",
                true,
                out,
                format!("{stitch} -d {POD_V6} --dport {APP_HTTP}"),
            ),
            probe(
                "stitch_to_itself_v6",
                true,
                out,
                format!("{stitch} --dport 4140:4143"),
            ),
            probe(
                "inbound_redirected_v6",
                true,
                "INPUT",
                format!("-s {PEER_V6} --dport 4143"),
            ),
        ] {
            probes.add(&topo.pod, p)?;
        }

        let stitch = start_stitch(
            &topo.pod,
            &[("STITCH_DETECT_TIMEOUT", DETECT_TIMEOUT.to_owned())],
        )?;
        let mut pod = Pod {
            app,
            peer_http,
            probes,
            stitch,
            topo,
        };
        pod.wait_ready()?;
        let mut args = vec!["iptables"];
        args.extend(IPTABLES_FLAGS);
        let stitch = &super::bins::staged()?.stitch;
        pod.topo.pod.exec(&stitch.to_string_lossy(), &args)?;
        Ok(pod)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.stitch.child.try_wait() {
                return Err(format!(
                    "stitch exited ({status}) before it was ready:\n{}",
                    self.stitch_log()
                ));
            }
            let ready = self
                .topo
                .pod
                .within(|| wire::http_get(([127, 0, 0, 1], ADMIN).into(), "/ready", &[]))?;
            if matches!(ready, Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "stitch not ready after 20s ({ready:?}):\n{}",
                    self.stitch_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines stitch logged, for failure messages.
    pub fn stitch_log(&self) -> String {
        self.stitch.log_tail()
    }

    /// Whether stitch is still running.
    pub fn stitch_alive(&mut self) -> bool {
        self.stitch.alive()
    }

    /// Runs the client helper (this test binary, `__client …`) in the pod as the app's UID.
    pub fn app_client(&self, args: &[String]) -> Result<String, String> {
        client(&self.topo.pod, APP_UID, args)
    }

    /// A probe's count, as an error message on failure.
    pub fn count(&self, name: &str) -> Result<u64, String> {
        self.probes.count(&self.topo.pod, name)
    }
}

/// Runs the client helper in `ns` as `uid`; returns its stdout.
pub fn client(ns: &Netns, uid: u32, args: &[String]) -> Result<String, String> {
    let exe = &super::bins::staged()?.client;
    let out = ns
        .command_as(Some(uid), exe)
        .arg("__client")
        .args(args)
        .output()
        .map_err(|e| format!("cannot start the client: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "client {args:?} as uid {uid} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Starts stitch in `pod` as its UID with the fixture's listeners and `env` added.
pub fn start_stitch(pod: &Netns, env: &[(&str, String)]) -> Result<StitchProcess, String> {
    let log = std::env::temp_dir().join(format!("{}-stitch.log", pod.name()));
    let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let stitch = &super::bins::staged()?.stitch;
    let child = pod
        .command_as(Some(STITCH_UID), stitch)
        .args([
            "run",
            "--log-format",
            "json",
            "--inbound-listen",
            "[::]:4143",
            "--outbound-listen",
            "127.0.0.1:4140",
            "--outbound-listen",
            "[::1]:4140",
            "--admin-listen",
            "0.0.0.0:4191",
        ])
        .env("RUST_LOG", "stitch=debug,info")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .map_err(|e| format!("cannot start stitch: {e}"))?;
    Ok(StitchProcess { child, log })
}

/// Convenience for building client argument lists.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Used by scenarios that need a command in a fresh namespace.
pub fn stitch_iptables(ns: &Netns, uid: Option<u32>, flags: &[&str]) -> std::process::Output {
    let stitch = super::bins::staged().unwrap_or_else(|e| panic!("{e}"));
    let mut cmd: Command = ns.command_as(uid, &stitch.stitch);
    cmd.arg("iptables").args(flags);
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run stitch iptables: {e}"))
}
