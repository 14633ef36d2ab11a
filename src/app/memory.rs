//! The default connection cap, derived from the memory stitch may use, so that a pod with a
//! memory limit queues clients in the listen backlog instead of being OOM-killed (which would
//! drop every connection of the app behind it at once).
//!
//! In order: `--max-connections` / `STITCH_MAX_CONNECTIONS`; else, under a cgroup memory limit
//! (v2 `memory.max`, else v1 `memory.limit_in_bytes`; the tightest of the process's cgroup and
//! its ancestors),
//!
//! ```text
//! connections = (limit − BASE_BYTES − ring_spans × SPAN_BYTES) / CONNECTION_BYTES
//! ```
//!
//! shared evenly by the two directions (inbound; outbound, all its listeners together — each
//! direction has its own cap, so a flood of the app's outbound calls cannot lock inbound
//! clients out) and never below [`MIN_PER_DIRECTION`]; else, with no memory limit,
//! [`NO_LIMIT_CONNECTIONS`] per direction.
//! The constants come from measurement (BENCHMARKS.md, "Many connections";
//! ARCHITECTURE.md, "What a connection costs").

use std::path::Path;

use super::cgroup::CgroupVersion;

/// Per direction when no memory limit applies (and the flag is not given).
pub const NO_LIMIT_CONNECTIONS: usize = 10_000;

/// The process before any connection: binary, runtimes, worker stacks, metrics, pools'
/// bookkeeping, allocator slack. Measured 9 MiB at start with tracing off and 13.6 MiB with
/// the default ring full; 24 MiB leaves room for the allocator's fragmentation under churn.
pub const BASE_BYTES: u64 = 24 << 20;

/// What one span held in the ring may cost (a span record with its attributes and the
/// ring's index entries), rounded up from the ring's own byte accounting.
pub const SPAN_BYTES: u64 = 2 << 10;

/// One busy client connection with its upstream connection, with margin: measured 34–43 KiB
/// under a one-CPU quota with 5,000 clients while HTTP/1 ran on hyper (its read and write
/// buffers on both sides, the connection tasks, the request channel); on the own engine
/// 8–9 KiB busy and 3 KiB idle (ARCHITECTURE.md, "What a connection costs"). Kept until the
/// memory-limit workload is measured with a smaller figure: a client may still make a
/// connection hold a 64 KiB head, or a body's 8 KiB read buffer on both sides.
pub const CONNECTION_BYTES: u64 = 48 << 10;

/// No direction is capped below this: a limit too small for the formula still serves a few
/// clients at a time rather than none.
pub const MIN_PER_DIRECTION: usize = 16;

/// The directions that share the memory budget (inbound, outbound).
const DIRECTIONS: usize = 2;

/// The connection cap per direction and what decided it (logged at start-up, shown at
/// `/config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCap {
    /// Most client connections served at once per direction.
    pub per_direction: usize,
    /// Why that many.
    pub reason: CapReason,
}

/// What decided the connection cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapReason {
    /// `--max-connections` / `STITCH_MAX_CONNECTIONS`.
    Flag,
    /// Set in [`crate::app::Settings`] by whoever built them (in-process use, tests).
    Settings,
    /// Derived from the cgroup memory limit.
    MemoryLimit {
        /// The limit in bytes.
        limit_bytes: u64,
        /// Which cgroup version set it.
        version: CgroupVersion,
    },
    /// No memory limit: [`NO_LIMIT_CONNECTIONS`].
    NoLimit,
}

impl CapReason {
    /// A short label for the start-up log line and `/config`.
    pub fn as_str(self) -> &'static str {
        match self {
            CapReason::Flag => "--max-connections",
            CapReason::Settings => "settings",
            CapReason::MemoryLimit {
                version: CgroupVersion::V2,
                ..
            } => "cgroup memory.max",
            CapReason::MemoryLimit {
                version: CgroupVersion::V1,
                ..
            } => "cgroup v1 memory.limit_in_bytes",
            CapReason::NoLimit => "no memory limit: the default",
        }
    }

    /// The memory limit that decided the cap, if one did.
    pub fn limit_bytes(self) -> Option<u64> {
        match self {
            CapReason::MemoryLimit { limit_bytes, .. } => Some(limit_bytes),
            _ => None,
        }
    }
}

/// A cgroup memory limit and the version of the file that set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit {
    /// The limit in bytes.
    pub bytes: u64,
    /// Where it was read.
    pub version: CgroupVersion,
}

/// cgroup v1 writes "no limit" as the largest page-aligned counter (`9223372036854771712` with
/// 4 KiB pages); anything this large is no limit.
const V1_UNLIMITED: u64 = 1 << 62;

/// The tightest memory limit of the process's cgroup and its ancestors, read under `root`
/// (`/` in production): v2 `memory.max`, else v1 `memory.limit_in_bytes`; `None` when there
/// is none (`max`, no cgroup, unreadable).
pub fn memory_limit(root: &Path) -> Option<MemoryLimit> {
    let v2 = super::cgroup::up_the_hierarchy(root, "memory.max")
        .iter()
        .filter_map(|text| text.trim().parse::<u64>().ok())
        .min();
    if let Some(bytes) = v2 {
        return Some(MemoryLimit {
            bytes,
            version: CgroupVersion::V2,
        });
    }
    super::cgroup::v1_dirs(root, "memory")
        .iter()
        .filter_map(|dir| std::fs::read_to_string(dir.join("memory.limit_in_bytes")).ok())
        .filter_map(|text| text.trim().parse::<u64>().ok())
        .filter(|&bytes| bytes < V1_UNLIMITED)
        .min()
        .map(|bytes| MemoryLimit {
            bytes,
            version: CgroupVersion::V1,
        })
}

/// The cap: the flag, else the memory formula shared by the directions, else the default.
pub fn decide(
    flag: Option<usize>,
    memory_limit: Option<MemoryLimit>,
    ring_spans: usize,
) -> ConnectionCap {
    if let Some(n) = flag {
        return ConnectionCap {
            per_direction: n.max(1),
            reason: CapReason::Flag,
        };
    }
    let Some(MemoryLimit {
        bytes: limit,
        version,
    }) = memory_limit
    else {
        return ConnectionCap {
            per_direction: NO_LIMIT_CONNECTIONS,
            reason: CapReason::NoLimit,
        };
    };
    let ring = (ring_spans as u64).saturating_mul(SPAN_BYTES);
    let budget = limit.saturating_sub(BASE_BYTES).saturating_sub(ring);
    let total = usize::try_from(budget / CONNECTION_BYTES).unwrap_or(usize::MAX);
    ConnectionCap {
        per_direction: (total / DIRECTIONS).clamp(MIN_PER_DIRECTION, NO_LIMIT_CONNECTIONS),
        reason: CapReason::MemoryLimit {
            limit_bytes: limit,
            version,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn v2(bytes: u64) -> Option<MemoryLimit> {
        Some(MemoryLimit {
            bytes,
            version: CgroupVersion::V2,
        })
    }

    fn fake_root(path: &str, memory_max: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("temp dir");
        let write = |rel: &str, text: &str| {
            let file = root.path().join(rel);
            std::fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir");
            std::fs::write(file, text).expect("write");
        };
        write("proc/self/cgroup", &format!("0::{path}\n"));
        for (dir, value) in memory_max {
            write(&format!("sys/fs/cgroup/{dir}/memory.max"), value);
        }
        root
    }

    #[test]
    fn the_readme_example_of_64_mib_gives_the_formula() {
        // (64 − 24 − 4096 × 2 KiB = 8) MiB = 32 MiB over 48 KiB = 682, two directions: 341.
        let cap = decide(None, v2(64 * MIB), 4096);
        assert_eq!(cap.per_direction, 341);
        assert_eq!(cap.reason.limit_bytes(), Some(64 * MIB));
        let total = 2 * cap.per_direction as u64;
        assert!(
            BASE_BYTES + 4096 * SPAN_BYTES + total * CONNECTION_BYTES <= 64 * MIB,
            "the cap times the per-connection cost fits under the limit"
        );
    }

    #[test]
    fn the_tightest_limit_up_the_hierarchy_binds() {
        let root = fake_root(
            "/kubepods/pod-a/stitch",
            &[
                ("", "max\n"),
                ("kubepods/pod-a", "134217728\n"),
                ("kubepods/pod-a/stitch", "268435456\n"),
            ],
        );
        assert_eq!(memory_limit(root.path()), v2(128 * MIB));
    }

    #[test]
    fn a_v1_limit_is_read_when_v2_has_none_and_v1_unlimited_is_no_limit() {
        let mountinfo = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                         41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let files = |pod_limit: &'static str| {
            [
                ("proc/self/mountinfo", mountinfo),
                ("proc/self/cgroup", "4:memory:/kubepods/pod-a/c\n0::/\n"),
                (
                    "sys/fs/cgroup/memory/memory.limit_in_bytes",
                    "9223372036854771712\n",
                ),
                (
                    "sys/fs/cgroup/memory/kubepods/pod-a/memory.limit_in_bytes",
                    pod_limit,
                ),
                (
                    "sys/fs/cgroup/memory/kubepods/pod-a/c/memory.limit_in_bytes",
                    "9223372036854771712\n",
                ),
            ]
        };
        let limited = super::super::cgroup::tests::tree(&files("67108864\n"));
        let limit = memory_limit(limited.path());
        assert_eq!(
            limit,
            Some(MemoryLimit {
                bytes: 64 * MIB,
                version: CgroupVersion::V1
            })
        );
        let cap = decide(None, limit, 4096);
        assert_eq!(cap.per_direction, 341, "the same formula as v2");
        assert_eq!(cap.reason.as_str(), "cgroup v1 memory.limit_in_bytes");
        let unlimited = super::super::cgroup::tests::tree(&files("9223372036854771712\n"));
        assert_eq!(memory_limit(unlimited.path()), None);
    }

    #[test]
    fn no_limit_or_unreadable_files_keep_the_default() {
        let root = fake_root("/", &[("", "max\n")]);
        assert_eq!(memory_limit(root.path()), None);
        assert_eq!(memory_limit(Path::new("/nonexistent-root")), None);
        let cap = decide(None, None, 4096);
        assert_eq!(
            (cap.per_direction, cap.reason),
            (NO_LIMIT_CONNECTIONS, CapReason::NoLimit)
        );
    }

    #[test]
    fn the_flag_wins_and_tiny_or_huge_limits_are_clamped() {
        assert_eq!(decide(Some(7), v2(64 * MIB), 4096).per_direction, 7);
        assert_eq!(decide(Some(7), None, 4096).reason, CapReason::Flag);
        assert_eq!(
            decide(None, v2(16 * MIB), 4096).per_direction,
            MIN_PER_DIRECTION
        );
        assert_eq!(
            decide(None, v2(64 << 30), 4096).per_direction,
            NO_LIMIT_CONNECTIONS
        );
    }
}
