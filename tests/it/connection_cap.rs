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
