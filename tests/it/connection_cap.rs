//! The default connection cap derived from the cgroup memory limit (issue 15): with a fake
//! cgroup tree saying `memory.max` = 64 MiB, a child stitch logs and shows at `/config` the cap
//! the documented formula gives; the flag overrides it; without a limit the default holds.

use crate::support::process::{StitchProcess, spawn_stitch_with};
use crate::support::upstream::HttpUpstream;
use crate::support::{fetch_json, within};

/// The first log line of `stitch` whose message is `message`, as JSON fields.
async fn log_line(stitch: &mut StitchProcess, message: &str) -> serde_json::Value {
    within("the log line", async {
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

/// A fake `/` whose cgroup v2 tree limits the process (and its pod) to `memory_max`.
fn fake_root(memory_max: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    let write = |rel: &str, text: &str| {
        let file = root.path().join(rel);
        std::fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir");
        std::fs::write(file, text).expect("write");
    };
    write("proc/self/cgroup", "0::/kubepods/pod-a/stitch\n");
    write("sys/fs/cgroup/memory.max", "max\n");
    write("sys/fs/cgroup/kubepods/pod-a/memory.max", memory_max);
    write("sys/fs/cgroup/kubepods/pod-a/stitch/memory.max", "max\n");
    root
}

#[tokio::test]
async fn a_64_mib_memory_limit_gives_the_documented_cap() {
    let root = fake_root("67108864\n");
    let root_dir = root.path().to_str().expect("a UTF-8 temp path");
    let up = HttpUpstream::start().await;
    let mut stitch =
        spawn_stitch_with(up.addr, &[], &[], &[("STITCH_CPU_FILES_ROOT", root_dir)]).await;
    // README: (64 MiB − 24 MiB − 4096 spans × 2 KiB) / 48 KiB = 682, half per direction.
    let line = log_line(&mut stitch, "connection cap per direction").await;
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
    let root = fake_root("67108864\n");
    let root_dir = root.path().to_str().expect("a UTF-8 temp path");
    let up = HttpUpstream::start().await;
    let mut flagged = spawn_stitch_with(
        up.addr,
        &["--max-connections", "5000"],
        &[],
        &[("STITCH_CPU_FILES_ROOT", root_dir)],
    )
    .await;
    let line = log_line(&mut flagged, "connection cap per direction").await;
    assert_eq!(
        (&line["max_connections"], &line["reason"]),
        (&5000.into(), &"--max-connections".into()),
        "{line}"
    );

    let unlimited = fake_root("max\n");
    let unlimited_dir = unlimited.path().to_str().expect("a UTF-8 temp path");
    let mut default = spawn_stitch_with(
        up.addr,
        &[],
        &[],
        &[("STITCH_CPU_FILES_ROOT", unlimited_dir)],
    )
    .await;
    let line = log_line(&mut default, "connection cap per direction").await;
    assert_eq!(
        (&line["max_connections"], &line["reason"]),
        (&10_000.into(), &"no memory limit: the default".into()),
        "{line}"
    );
}
