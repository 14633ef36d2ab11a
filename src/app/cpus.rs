//! How many proxy workers to run: the CPUs stitch may use, never the node's core count.
//!
//! In order: `--workers` / `STITCH_WORKERS`; else the tighter of the CPU affinity mask (when it
//! leaves out some online CPUs: `taskset`, a cpuset, a static CPU manager) and the cgroup
//! CPU quota (v2 `cpu.max`, else v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`) rounded up (1.5 CPUs → 2 workers: with 1 the quota's half CPU would go
//! unused, and a worker is idle rather than busy-waiting when the quota throttles it); else,
//! with no limit at all, [`DEFAULT_WORKERS`] capped by the affinity mask.
//!
//! Not `std::thread::available_parallelism`: it is the minimum of the affinity mask and the
//! quota *rounded down* (1.5 CPUs → 1), and without any limit it is the node's core count — a
//! sidecar on a 64-core node would start 64 workers (and 64 upstream pools) to serve one app.
//!
//! The files are read under a root that is `/` in production and a fake tree in tests.

use std::num::NonZeroUsize;
use std::path::Path;

use super::cgroup::CgroupVersion;

/// Workers with no CPU limit: on a two-CPU machine two served more requests/s than one
/// (`wrk -c2` +16%, `-c50` +9%, medians of 5) and four no more than two while adding threads,
/// upstream pools and memory; one app's traffic rarely needs more (ARCHITECTURE.md, "How many
/// workers").
pub const DEFAULT_WORKERS: usize = 2;

/// The worker count and what decided it (logged at start-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerCount {
    /// How many proxy workers run.
    pub count: NonZeroUsize,
    /// Why that many.
    pub reason: WorkersReason,
}

/// What decided the worker count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkersReason {
    /// `--workers` / `STITCH_WORKERS`.
    Flag,
    /// Set in [`crate::app::Settings`] by whoever built them (in-process use, tests).
    Settings,
    /// The CPU affinity mask allows this many of the online CPUs.
    Affinity,
    /// The cgroup CPU quota, in thousandths of a CPU, rounded up to whole workers.
    CgroupQuota {
        /// The quota in thousandths of a CPU (1500 = 1.5 CPUs).
        millicpus: u64,
        /// Which cgroup version set it.
        version: CgroupVersion,
    },
    /// No CPU limit: [`DEFAULT_WORKERS`], or fewer when fewer CPUs are online.
    NoLimit,
}

impl WorkersReason {
    /// A short label for the start-up log line.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkersReason::Flag => "--workers",
            WorkersReason::Settings => "settings",
            WorkersReason::Affinity => "cpu affinity",
            WorkersReason::CgroupQuota {
                version: CgroupVersion::V2,
                ..
            } => "cgroup cpu.max quota, rounded up",
            WorkersReason::CgroupQuota {
                version: CgroupVersion::V1,
                ..
            } => "cgroup v1 cpu.cfs_quota_us, rounded up",
            WorkersReason::NoLimit => "no cpu limit: the default",
        }
    }
}

impl WorkerCount {
    /// A count chosen by whoever built the settings.
    pub fn fixed(count: NonZeroUsize, reason: WorkersReason) -> Self {
        WorkerCount { count, reason }
    }
}

/// A cgroup CPU bandwidth limit: `quota_us` of CPU time every `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuQuota {
    quota_us: u64,
    period_us: u64,
    version: CgroupVersion,
}

impl CpuQuota {
    /// Parses a `cpu.max` file: `max 100000` (no limit: `None`) or `150000 100000`.
    fn parse(text: &str) -> Option<CpuQuota> {
        let mut fields = text.split_whitespace();
        let quota_us = fields.next()?.parse().ok()?;
        let period_us = fields.next().map_or(Some(100_000), |p| p.parse().ok())?;
        (quota_us > 0 && period_us > 0).then_some(CpuQuota {
            quota_us,
            period_us,
            version: CgroupVersion::V2,
        })
    }

    /// Reads a v1 cgroup directory's `cpu.cfs_quota_us` (`-1`: no limit) and
    /// `cpu.cfs_period_us`.
    fn read_v1(dir: &Path) -> Option<CpuQuota> {
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
        let quota_us: i64 = read("cpu.cfs_quota_us")?.trim().parse().ok()?;
        let period_us: u64 = read("cpu.cfs_period_us")?.trim().parse().ok()?;
        let quota_us = u64::try_from(quota_us).ok()?;
        (quota_us > 0 && period_us > 0).then_some(CpuQuota {
            quota_us,
            period_us,
            version: CgroupVersion::V1,
        })
    }

    /// Whole CPUs, rounded up.
    fn cpus_rounded_up(self) -> usize {
        usize::try_from(self.quota_us.div_ceil(self.period_us)).unwrap_or(usize::MAX)
    }

    fn millicpus(self) -> u64 {
        self.quota_us.saturating_mul(1000) / self.period_us
    }
}

/// What the kernel says about the CPUs this process may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuLimits {
    /// CPUs in the affinity mask.
    pub affinity: Option<usize>,
    /// CPUs online on the node.
    pub online: Option<usize>,
    /// The tightest CPU quota of the process's cgroup and its ancestors.
    pub quota: Option<CpuQuota>,
}

/// Reads the CPU limits from `/proc` and `/sys` under `root` (`/` in production) and the
/// process's affinity mask.
pub fn read_limits(root: &Path) -> CpuLimits {
    CpuLimits {
        affinity: rustix::thread::sched_getaffinity(None)
            .ok()
            .map(|set| set.count() as usize)
            .filter(|&n| n > 0),
        online: std::fs::read_to_string(root.join("sys/devices/system/cpu/online"))
            .ok()
            .and_then(|text| count_cpu_list(&text)),
        quota: cgroup_quota(root),
    }
}

/// The worker count: the flag, else the CPU limits, else the default.
pub fn decide(flag: Option<NonZeroUsize>, limits: CpuLimits) -> WorkerCount {
    if let Some(count) = flag {
        return WorkerCount::fixed(count, WorkersReason::Flag);
    }
    let affinity_limit = match (limits.affinity, limits.online) {
        (Some(mask), Some(online)) if mask < online => Some(mask),
        _ => None,
    };
    let quota_limit = limits
        .quota
        .map(|q| (q.cpus_rounded_up(), q.millicpus(), q.version));
    let (count, reason) = match (affinity_limit, quota_limit) {
        (Some(mask), Some((quota, ..))) if mask < quota => (mask, WorkersReason::Affinity),
        (_, Some((quota, millicpus, version))) => (
            limits.affinity.map_or(quota, |mask| quota.min(mask)),
            WorkersReason::CgroupQuota { millicpus, version },
        ),
        (Some(mask), None) => (mask, WorkersReason::Affinity),
        (None, None) => (
            limits
                .affinity
                .map_or(DEFAULT_WORKERS, |mask| mask.min(DEFAULT_WORKERS)),
            WorkersReason::NoLimit,
        ),
    };
    WorkerCount::fixed(
        NonZeroUsize::new(count).unwrap_or(NonZeroUsize::MIN),
        reason,
    )
}

/// Counts the CPUs in a kernel CPU list (`0-3,8,10-11`).
fn count_cpu_list(text: &str) -> Option<usize> {
    let mut total = 0usize;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let (first, last): (usize, usize) = (first.parse().ok()?, last.parse().ok()?);
        total += last.checked_sub(first)? + 1;
    }
    (total > 0).then_some(total)
}

/// The tightest CPU quota of the process's cgroup and its ancestors: v2 `cpu.max`, else v1.
fn cgroup_quota(root: &Path) -> Option<CpuQuota> {
    let v2 = super::cgroup::up_the_hierarchy(root, "cpu.max")
        .iter()
        .filter_map(|text| CpuQuota::parse(text))
        .min_by_key(|q| q.millicpus());
    v2.or_else(|| {
        super::cgroup::v1_dirs(root, "cpu")
            .iter()
            .filter_map(|dir| CpuQuota::read_v1(dir))
            .min_by_key(|q| q.millicpus())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(count: usize) -> NonZeroUsize {
        NonZeroUsize::new(count).expect("non-zero")
    }

    /// A fake `/` with `online` CPUs, the process in cgroup `path`, and `cpu.max` files.
    fn fake_root(online: &str, path: &str, cpu_max: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("temp dir");
        let write = |rel: &str, text: &str| {
            let file = root.path().join(rel);
            std::fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir");
            std::fs::write(file, text).expect("write");
        };
        write("sys/devices/system/cpu/online", online);
        write("proc/self/cgroup", &format!("0::{path}\n"));
        for (dir, text) in cpu_max {
            write(&format!("sys/fs/cgroup{dir}/cpu.max"), text);
        }
        root
    }

    fn files_of(root: &tempfile::TempDir, affinity: usize) -> CpuLimits {
        CpuLimits {
            affinity: Some(affinity),
            ..read_limits(root.path())
        }
    }

    #[test]
    fn a_quota_of_one_and_a_half_cpus_gives_two_workers() {
        let root = fake_root("0-63\n", "/", &[("", "150000 100000\n")]);
        let count = decide(None, files_of(&root, 64));
        assert_eq!(count.count, n(2));
        assert_eq!(
            count.reason,
            WorkersReason::CgroupQuota {
                millicpus: 1500,
                version: CgroupVersion::V2
            }
        );
    }

    #[test]
    fn the_tightest_quota_up_the_hierarchy_binds() {
        let root = fake_root(
            "0-63",
            "/kubepods/pod1/app",
            &[
                ("", "max 100000"),
                ("/kubepods", "max 100000"),
                ("/kubepods/pod1", "100000 100000"),
                ("/kubepods/pod1/app", "400000 100000"),
            ],
        );
        let count = decide(None, files_of(&root, 64));
        assert_eq!(count.count, n(1));
        assert_eq!(
            count.reason,
            WorkersReason::CgroupQuota {
                millicpus: 1000,
                version: CgroupVersion::V2
            }
        );
    }

    #[test]
    fn no_limit_gives_the_small_default_not_the_node() {
        let root = fake_root("0-63", "/", &[("", "max 100000\n")]);
        let count = decide(None, files_of(&root, 64));
        assert_eq!(count.count, n(DEFAULT_WORKERS));
        assert_eq!(count.reason, WorkersReason::NoLimit);
        // A one-CPU node has no limit either, and one worker.
        let single = fake_root("0", "/", &[]);
        assert_eq!(decide(None, files_of(&single, 1)).count, n(1));
    }

    #[test]
    fn an_affinity_mask_narrower_than_the_node_binds() {
        let root = fake_root("0-7", "/", &[("", "max 100000")]);
        let count = decide(None, files_of(&root, 3));
        assert_eq!((count.count, count.reason), (n(3), WorkersReason::Affinity));
        // A quota wider than the mask does not raise it; a narrower one lowers it.
        let quota = fake_root("0-7", "/", &[("", "800000 100000")]);
        assert_eq!(
            decide(None, files_of(&quota, 3)).reason,
            WorkersReason::Affinity
        );
        let tight = fake_root("0-7", "/", &[("", "50000 100000")]);
        let count = decide(None, files_of(&tight, 3));
        assert_eq!(count.count, n(1));
        assert_eq!(
            count.reason,
            WorkersReason::CgroupQuota {
                millicpus: 500,
                version: CgroupVersion::V2
            }
        );
    }

    #[test]
    fn a_quota_above_the_mask_is_capped_by_it() {
        let root = fake_root("0-1", "/", &[("", "400000 100000")]);
        let count = decide(None, files_of(&root, 2));
        assert_eq!(count.count, n(2));
        assert_eq!(
            count.reason,
            WorkersReason::CgroupQuota {
                millicpus: 4000,
                version: CgroupVersion::V2
            }
        );
    }

    #[test]
    fn the_flag_wins_over_every_limit() {
        let root = fake_root("0-63", "/", &[("", "100000 100000")]);
        let count = decide(Some(n(5)), files_of(&root, 1));
        assert_eq!((count.count, count.reason), (n(5), WorkersReason::Flag));
    }

    #[test]
    fn a_v1_cfs_quota_is_read_when_v2_has_none() {
        let files = |quota: &'static str| {
            [
                ("sys/devices/system/cpu/online", "0-7"),
                (
                    "proc/self/mountinfo",
                    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n",
                ),
                ("proc/self/cgroup", "3:cpu,cpuacct:/kubepods/pod-a\n0::/\n"),
                ("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n"),
                ("sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n"),
                (
                    "sys/fs/cgroup/cpu,cpuacct/kubepods/pod-a/cpu.cfs_quota_us",
                    quota,
                ),
                (
                    "sys/fs/cgroup/cpu,cpuacct/kubepods/pod-a/cpu.cfs_period_us",
                    "100000\n",
                ),
            ]
        };
        let limited = super::super::cgroup::tests::tree(&files("150000\n"));
        let count = decide(None, files_of(&limited, 8));
        assert_eq!(count.count, n(2), "1.5 CPUs round up");
        assert_eq!(
            count.reason,
            WorkersReason::CgroupQuota {
                millicpus: 1500,
                version: CgroupVersion::V1
            }
        );
        assert_eq!(
            count.reason.as_str(),
            "cgroup v1 cpu.cfs_quota_us, rounded up"
        );
        let unlimited = super::super::cgroup::tests::tree(&files("-1\n"));
        assert_eq!(read_limits(unlimited.path()).quota, None);
    }

    #[test]
    fn unreadable_or_odd_files_mean_no_limit() {
        let empty = tempfile::tempdir().expect("temp dir");
        let limits = read_limits(empty.path());
        assert_eq!((limits.online, limits.quota), (None, None));
        let count = decide(None, CpuLimits::default());
        assert_eq!((count.count, count.reason), (n(2), WorkersReason::NoLimit));
        for bad in ["", "max", "0 100000", "100000 0", "x 100000", "-5 100000"] {
            assert_eq!(CpuQuota::parse(bad), None, "{bad:?}");
        }
        for (list, cpus) in [
            ("0-3,8,10-11", Some(7)),
            ("0", Some(1)),
            ("3-1", None),
            ("", None),
        ] {
            assert_eq!(count_cpu_list(list), cpus, "{list:?}");
        }
    }
}
