//! Network namespaces built by the test: a "pod" and a "peer" joined by a veth pair, with
//! TEST-NET and ULA addresses that exist only inside them. Nothing here touches the host's
//! own namespace except creating and deleting the named namespaces.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

/// The pod's addresses (TEST-NET-1 and ULA); the peer's are [`PEER_V4`] and [`PEER_V6`].
pub const POD_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The peer's IPv4 address on the shared link.
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// A second peer address, in a block the pod is told to skip (TEST-NET-2).
pub const PEER_SKIPPED_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The pod's IPv6 address.
pub const POD_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5717, 0, 0, 0, 0, 0, 1);
/// The peer's IPv6 address.
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x5717, 0, 0, 0, 0, 0, 2);

/// A named network namespace, deleted on drop (also when a test panics).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

impl Netns {
    /// Creates `sttest-<pid>-<n>-<role>` (unique per run and per fixture).
    pub fn create(role: &str) -> Result<Self, String> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("sttest-{}-{id}-{role}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name for `ip netns` and `nsenter`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// A command that runs `program` inside the namespace as `uid` (nsenter, no shell).
    pub fn command_as(&self, uid: Option<u32>, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.name));
        if let Some(uid) = uid {
            cmd.args([format!("--setuid={uid}"), format!("--setgid={uid}")]);
        }
        cmd.arg("--").arg(program);
        // The caller's directory may be closed to the other UID.
        cmd.current_dir("/");
        cmd
    }

    /// Runs `program args` in the namespace as root and returns stdout, or an error naming it.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let out = self
            .command_as(None, program)
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        checked(program, args, out)
    }

    /// Runs `f` on a thread that lives in this namespace; sockets it opens belong here.
    pub fn within<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            let file = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
            rustix::thread::move_into_link_name_space(
                file.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(|e| format!("setns {path}: {e}"))?;
            Ok(f())
        })
        .join()
        .map_err(|_| "a thread inside the namespace panicked".to_owned())?
    }

    /// Binds a listener inside the namespace (dual-stack when `addr` is `[::]`).
    pub fn listen(&self, addr: SocketAddr) -> Result<TcpListener, String> {
        self.within(move || TcpListener::bind(addr))?
            .map_err(|e| format!("bind {addr}: {e}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// The two namespaces and the link between them.
#[derive(Debug)]
pub struct Topology {
    /// Where stitch, the app and its client run.
    pub pod: Netns,
    /// The other side of the network.
    pub peer: Netns,
}

impl Topology {
    /// Builds pod ⇄ peer over a veth pair with IPv4 and IPv6 addresses on both ends.
    pub fn build() -> Result<Self, String> {
        let pod = Netns::create("pod")?;
        let peer = Netns::create("peer")?;
        // Both ends are created directly inside their namespaces: no name can clash with the
        // host's interfaces, and the host never sees them.
        run(
            "ip",
            &[
                "link",
                "add",
                "vpod",
                "netns",
                pod.name(),
                "type",
                "veth",
                "peer",
                "name",
                "vpeer",
                "netns",
                peer.name(),
            ],
        )?;
        for (ns, dev, v4, v6, v4_extra) in [
            (&pod, "vpod", POD_V4, POD_V6, "198.51.100.1/24"),
            (&peer, "vpeer", PEER_V4, PEER_V6, "198.51.100.2/24"),
        ] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev])?;
            ns.ip(&["addr", "add", v4_extra, "dev", dev])?;
            // nodad: the address is usable at once instead of after duplicate detection.
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"])?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        Ok(Topology { pod, peer })
    }
}

/// Why the netns tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some(
            "not root (network namespaces and iptables need root; CI runs as root)".into(),
        );
    }
    for tool in ["ip", "nsenter"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Some(format!(
                "`{tool}` is not installed (packages iproute2, util-linux)"
            ));
        }
    }
    let probe = format!("sttest-{}-probe", std::process::id());
    if let Err(e) = run("ip", &["netns", "add", &probe]) {
        return Some(format!("cannot create a network namespace: {e}"));
    }
    let _ = run("ip", &["netns", "del", &probe]);
    None
}

/// Deletes namespaces a previous, killed run of this test left behind.
pub fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("sttest-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", &name]);
        }
    }
}

/// Runs a host command and returns its stdout, or an error with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    checked(program, args, out)
}

fn checked(program: &str, args: &[&str], out: Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `a.b.c.d` or `[v6]` with a port.
pub fn sock(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}
