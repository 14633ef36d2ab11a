//! The default connection cap derived from the cgroup memory limit (issue 15): with a fake
//! cgroup tree saying `memory.max` = 64 MiB, a child stitch logs and shows at `/config` the cap
//! the documented formula gives; the flag overrides it; without a limit the default holds.

use crate::support::fetch_json;
use crate::support::process::{fake_root, log_fields, spawn_stitch_with};
use crate::support::upstream::HttpUpstream;

/// A fake `/` whose cgroup v2 tree limits the process (through its pod) to `memory_max`.
fn limited_to(memory_max: &str) -> tempfile::TempDir {
    fake_root(&[
        ("proc/self/cgroup", "0::/kubepods/pod-a/stitch\n"),
        ("sys/fs/cgroup/memory.max", "max\n"),
        ("sys/fs/cgroup/kubepods/pod-a/memory.max", memory_max),
        ("sys/fs/cgroup/kubepods/pod-a/stitch/memory.max", "max\n"),
    ])
}

#[tokio::test]
async fn a_64_mib_memory_limit_gives_the_documented_cap() {
    let root = limited_to("67108864\n");
    let root_dir = root.path().to_str().expect("a UTF-8 temp path");
    let up = HttpUpstream::start().await;
    let mut stitch =
        spawn_stitch_with(up.addr, &[], &[], &[("STITCH_CPU_FILES_ROOT", root_dir)]).await;
    // README: (64 MiB − 24 MiB − 4096 spans × 2 KiB) / 48 KiB = 682, half per direction.
    let line = log_fields(&mut stitch, "connection cap per direction").await;
    assert_eq!(line["max_connections"], 341, "{line}");
    assert_eq!(line["reason"], "cgroup memory.max", "{line}");
    assert_eq!(line["memory_limit_mib"], 64.0, "{line}");
    let config = fetch_json(stitch.admin, "/config").await;
    assert_eq!(
        config["limits"],
        serde_json::json!({
            "max_connections": 341,
            "max_connections_reason": "cgroup memory.max",
            "memory_limit_bytes": 67_108_864u64,
        }),
        "{config}"
    );
}

#[tokio::test]
async fn the_flag_overrides_the_memory_limit_and_no_limit_keeps_the_default() {
    let root = limited_to("67108864\n");
    let root_dir = root.path().to_str().expect("a UTF-8 temp path");
    let up = HttpUpstream::start().await;
    let mut flagged = spawn_stitch_with(
        up.addr,
        &["--max-connections", "5000"],
        &[],
        &[("STITCH_CPU_FILES_ROOT", root_dir)],
    )
    .await;
    let line = log_fields(&mut flagged, "connection cap per direction").await;
    assert_eq!(
        (&line["max_connections"], &line["reason"]),
        (&5000.into(), &"--max-connections".into()),
        "{line}"
    );

    let unlimited = limited_to("max\n");
    let unlimited_dir = unlimited.path().to_str().expect("a UTF-8 temp path");
    let mut default = spawn_stitch_with(
        up.addr,
        &[],
        &[],
        &[("STITCH_CPU_FILES_ROOT", unlimited_dir)],
    )
    .await;
    let line = log_fields(&mut default, "connection cap per direction").await;
    assert_eq!(
        (&line["max_connections"], &line["reason"]),
        (&10_000.into(), &"no memory limit: the default".into()),
        "{line}"
    );
}

/// A real memory cgroup of 64 MiB (v1 `memory.limit_in_bytes` or v2 `memory.max`, whichever
/// this kernel offers to root), removed when dropped.
struct MemoryCgroup {
    dir: std::path::PathBuf,
    reason: &'static str,
}

impl MemoryCgroup {
    fn create(limit: u64) -> Result<MemoryCgroup, String> {
        let name = format!("stitch-test-{}", std::process::id());
        let v1 = std::path::Path::new("/sys/fs/cgroup/memory");
        let (dir, file, reason) = if v1.join("memory.limit_in_bytes").exists() {
            (
                v1.join(&name),
                "memory.limit_in_bytes",
                "cgroup v1 memory.limit_in_bytes",
            )
        } else {
            let v2 = std::path::Path::new("/sys/fs/cgroup");
            // Enabling the controller for children fails harmlessly when it already is.
            let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+memory");
            (v2.join(&name), "memory.max", "cgroup memory.max")
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let cgroup = MemoryCgroup { dir, reason };
        std::fs::write(cgroup.dir.join(file), limit.to_string())
            .map_err(|e| format!("cannot set {file}: {e}"))?;
        Ok(cgroup)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // The last process may still be exiting: the kernel refuses until it is gone.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// The same formula under a real cgroup, as a pod's container runs: stitch started inside a
/// 64 MiB memory cgroup reads the limit itself (v1 on this kernel family, v2 elsewhere).
#[tokio::test]
async fn a_real_64_mib_memory_cgroup_gives_the_same_cap() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: creating a memory cgroup needs root");
        return;
    }
    let cgroup = match MemoryCgroup::create(64 << 20) {
        Ok(c) => c,
        Err(why) => {
            eprintln!("skipped: no writable memory cgroup controller here ({why})");
            return;
        }
    };
    let dir = cgroup.dir.to_str().expect("a UTF-8 cgroup path");
    let up = HttpUpstream::start().await;
    let wrapper = [
        "sh",
        "-c",
        r#"echo $$ > "$0/cgroup.procs" && exec "$@""#,
        dir,
    ];
    let mut stitch = spawn_stitch_with(up.addr, &[], &wrapper, &[]).await;
    let line = log_fields(&mut stitch, "connection cap per direction").await;
    assert_eq!(line["max_connections"], 341, "{line}");
    assert_eq!(line["reason"], cgroup.reason, "{line}");
    let config = fetch_json(stitch.admin, "/config").await;
    assert_eq!(
        config["limits"]["memory_limit_bytes"], 67_108_864u64,
        "{config}"
    );
    let _ = stitch.child.start_kill();
    let _ = stitch.child.wait().await;
}
