//! The real `stitch` binary as a child process: for signals and for peak-memory readings
//! that must not include the test's own allocations.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::within;

/// A running `stitch run` child process.
pub struct StitchProcess {
    /// The child; killed on drop if still running.
    pub child: Child,
    /// Its pid.
    pub pid: u32,
    /// Where its inbound listener is bound.
    pub inbound: SocketAddr,
    /// Where its outbound listener is bound.
    pub outbound: SocketAddr,
    /// Where its admin server is bound.
    pub admin: SocketAddr,
    /// Every stderr line, as it arrives.
    pub log_lines: mpsc::UnboundedReceiver<String>,
}

/// Starts the binary in explicit mode to `target` with `extra` flags, and waits until it
/// logged its proxy and admin listeners.
pub async fn spawn_stitch(target: SocketAddr, extra: &[&str]) -> StitchProcess {
    spawn_stitch_with(target, extra, &[], &[]).await
}

/// [`spawn_stitch`] with the binary started through `wrapper` (e.g. `taskset -c 0`, empty for
/// none) and `env` added to its environment.
pub async fn spawn_stitch_with(
    target: SocketAddr,
    extra: &[&str],
    wrapper: &[&str],
    env: &[(&str, &str)],
) -> StitchProcess {
    let target = target.to_string();
    let mut args = vec![
        "run",
        "--log-format",
        "json",
        "--inbound-listen",
        "127.0.0.1:0",
        "--outbound-listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--inbound-target",
        &target,
    ];
    args.extend_from_slice(extra);
    let mut command = match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut c = Command::new(program);
            c.args(wrapper_args).arg(env!("CARGO_BIN_EXE_stitch"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_stitch")),
    };
    command.args(&args).envs(env.iter().copied());
    let (child, addrs, log_lines) =
        spawn_command_listening(command, &["inbound", "outbound", "admin"]).await;
    StitchProcess {
        pid: child.id().expect("a running child has a pid"),
        child,
        inbound: addrs[0],
        outbound: addrs[1],
        admin: addrs[2],
        log_lines,
    }
}

/// Starts the binary with `args` (a command that logs JSON) and waits until it logged a
/// `listening` line for each of `listeners`; returns the child, those listeners' addresses in
/// the same order, and every stderr line after them. Its stderr is drained for its whole life,
/// so it never blocks on a full pipe; the child is killed on drop.
pub async fn spawn_listening<S: AsRef<OsStr>>(
    args: &[S],
    listeners: &[&str],
) -> (Child, Vec<SocketAddr>, mpsc::UnboundedReceiver<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stitch"));
    command.args(args);
    spawn_command_listening(command, listeners).await
}

/// [`spawn_listening`] for a prepared command (a wrapper, extra environment).
async fn spawn_command_listening(
    mut command: Command,
    listeners: &[&str],
) -> (Child, Vec<SocketAddr>, mpsc::UnboundedReceiver<String>) {
    let mut child = command
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the stitch binary starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            // Nobody reading any more is fine: the draining goes on.
            let _ = tx.send(line);
        }
    });
    let mut found: Vec<Option<SocketAddr>> = vec![None; listeners.len()];
    let mut seen = Vec::new();
    within("the binary to log its listeners", async {
        while found.iter().any(Option::is_none) {
            let Some(line) = rx.recv().await else {
                panic!(
                    "stitch exited before listening; stderr:\n{}",
                    seen.join("\n")
                );
            };
            if let Some((which, addr)) = parse_listening(&line)
                && let Some(i) = listeners.iter().position(|l| *l == which)
            {
                found[i] = Some(addr);
            }
            seen.push(line);
        }
    })
    .await;
    let addrs = found.into_iter().flatten().collect();
    (child, addrs, rx)
}

/// Parses a `"message":"listening"` JSON log line into (listener, addr).
fn parse_listening(line: &str) -> Option<(String, SocketAddr)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields")?;
    if fields.get("message")?.as_str()? != "listening" {
        return None;
    }
    let which = fields.get("listener")?.as_str()?.to_owned();
    let addr = fields.get("addr")?.as_str()?.parse().ok()?;
    Some((which, addr))
}

impl StitchProcess {
    /// Sends SIGTERM, as Kubernetes does before stopping a pod.
    pub fn terminate(&self) {
        let pid = rustix::process::Pid::from_raw(i32::try_from(self.pid).expect("pids fit in i32"))
            .expect("a child pid is positive");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .expect("SIGTERM delivered");
    }

    /// Waits for the child to exit and returns its exit code.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("stitch did not exit within {limit:?}"))
            .expect("wait on the child");
        status.code()
    }

    /// Peak resident set size of the child (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        read_status_kib(self.pid, "VmHWM:")
    }

    /// File descriptors the child holds open now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .expect("read /proc/PID/fd")
            .count()
    }

    /// CPU time the child has used so far (user + system), from `/proc/PID/stat`.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .expect("read /proc/PID/stat");
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th
        // fields overall, in clock ticks (USER_HZ, 100 on Linux).
        let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        let ticks: u64 =
            fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
        Duration::from_millis(ticks * 10)
    }
}

fn read_status_kib(pid: u32, key: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{key} missing in /proc/{pid}/status"))
}

/// Waits until nothing accepts TCP connections on `addr` any more.
pub async fn wait_refused(addr: SocketAddr) {
    within(&format!("{addr} to refuse connections"), async {
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// The fields of the first JSON log line of `stitch` whose message is `message`.
pub async fn log_fields(stitch: &mut StitchProcess, message: &str) -> serde_json::Value {
    super::within(&format!("the log line `{message}`"), async {
        loop {
            let line = stitch.log_lines.recv().await.expect("stitch is running");
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["fields"]["message"] == message {
                return v["fields"].clone();
            }
        }
    })
    .await
}

/// A fake `/` for the hidden `STITCH_CPU_FILES_ROOT`: each `(path, contents)` written under a
/// temporary directory (cgroup files, the online CPU list).
pub fn fake_root(files: &[(&str, &str)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    for (rel, text) in files {
        let file = root.path().join(rel);
        std::fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir");
        std::fs::write(file, text).expect("write");
    }
    root
}
