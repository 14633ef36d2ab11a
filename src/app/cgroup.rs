//! Reading a cgroup controller file for this process and every ancestor: a limit set on a
//! parent (the pod's cgroup above the container's) binds the process too. Shared by the CPU
//! sizing ([`super::cpus`]) and the connection cap ([`super::memory`]).
//!
//! cgroup v2 first (one hierarchy at `/sys/fs/cgroup`, the `0::` line of `/proc/self/cgroup`);
//! else cgroup v1, still the default of many nodes (every controller is a hierarchy of its own,
//! mounted where `/proc/self/mountinfo` says, with its own file names). A hybrid host mounts
//! an empty v2 hierarchy beside the v1 controllers: there the v2 files are absent and v1 is read.

use std::path::{Path, PathBuf};

/// Which cgroup version a limit was read from (for the start-up log and `/config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// The unified hierarchy (`memory.max`, `cpu.max`).
    V2,
    /// A per-controller hierarchy (`memory.limit_in_bytes`, `cpu.cfs_quota_us`).
    V1,
}

/// The contents of v2 `file` (e.g. `cpu.max`, `memory.max`) in the process's cgroup and each
/// ancestor up to the hierarchy's root, innermost first, read under `root` (`/` in production,
/// a fake tree in tests). Inside a cgroup namespace the path is `/` and the file at the root is
/// the container's own. Empty when the process is not in a cgroup v2 hierarchy.
pub(crate) fn up_the_hierarchy(root: &Path, file: &str) -> Vec<String> {
    v2_dirs(root)
        .iter()
        .filter_map(|dir| std::fs::read_to_string(dir.join(file)).ok())
        .collect()
}

/// The process's v1 cgroup directories of `controller` (`memory`, `cpu`), innermost first,
/// up to the controller's mount point; empty when the controller is not mounted as v1.
pub(crate) fn v1_dirs(root: &Path, controller: &str) -> Vec<PathBuf> {
    let Ok(membership) = std::fs::read_to_string(root.join("proc/self/cgroup")) else {
        return Vec::new();
    };
    let Some(path) = membership.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then_some(path.trim())
    }) else {
        return Vec::new();
    };
    let Ok(mounts) = std::fs::read_to_string(root.join("proc/self/mountinfo")) else {
        return Vec::new();
    };
    let Some((mount_root, mount_point)) = mounts
        .lines()
        .find_map(|line| v1_mount_of(line, controller))
    else {
        return Vec::new();
    };
    // Outside a cgroup namespace the mount may show only a subtree (a container's own cgroup
    // bind-mounted at the mount point): the process's path is then relative to that subtree.
    let Some(relative) = Path::new(path).strip_prefix(mount_root).ok() else {
        return Vec::new();
    };
    let top = root.join(mount_point.trim_start_matches('/'));
    walk_up(top.join(relative), &top)
}

/// `(root of the mount, mount point)` when a mountinfo line mounts v1 `controller`.
fn v1_mount_of<'a>(line: &'a str, controller: &str) -> Option<(&'a str, &'a str)> {
    let (mount, fs) = line.split_once(" - ")?;
    let mut fs = fs.split_whitespace();
    let (fs_type, _source, options) = (fs.next()?, fs.next()?, fs.next()?);
    if fs_type != "cgroup" || !options.split(',').any(|o| o == controller) {
        return None;
    }
    let mut fields = mount.split_whitespace().skip(3);
    Some((fields.next()?, fields.next()?))
}

fn v2_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(membership) = std::fs::read_to_string(root.join("proc/self/cgroup")) else {
        return Vec::new();
    };
    let Some(path) = membership.lines().find_map(|line| line.strip_prefix("0::")) else {
        return Vec::new();
    };
    let hierarchy = root.join("sys/fs/cgroup");
    walk_up(
        hierarchy.join(path.trim().trim_start_matches('/')),
        &hierarchy,
    )
}

/// `dir` and its ancestors up to and including `top`, innermost first.
fn walk_up(mut dir: PathBuf, top: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    while dir.starts_with(top) {
        dirs.push(dir.clone());
        if dir == top || !dir.pop() {
            break;
        }
    }
    dirs
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fake `/` with the given files (path relative to the root, contents).
    pub(crate) fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("temp dir");
        for (rel, text) in files {
            let file = root.path().join(rel);
            std::fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir");
            std::fs::write(file, text).expect("write");
        }
        root
    }

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn v1_controllers_are_found_through_mountinfo_innermost_first() {
        let root = tree(&[
            ("proc/self/mountinfo", MOUNTINFO),
            (
                "proc/self/cgroup",
                "5:memory:/kubepods/pod-a/stitch\n3:cpu,cpuacct:/kubepods/pod-a\n0::/\n",
            ),
        ]);
        let memory: Vec<PathBuf> = v1_dirs(root.path(), "memory")
            .iter()
            .map(|d| {
                d.strip_prefix(root.path())
                    .expect("under root")
                    .to_path_buf()
            })
            .collect();
        assert_eq!(
            memory,
            [
                "sys/fs/cgroup/memory/kubepods/pod-a/stitch",
                "sys/fs/cgroup/memory/kubepods/pod-a",
                "sys/fs/cgroup/memory/kubepods",
                "sys/fs/cgroup/memory",
            ]
            .map(PathBuf::from)
        );
        assert_eq!(
            v1_dirs(root.path(), "cpu").len(),
            3,
            "cpu,cpuacct is one mount"
        );
        assert!(v1_dirs(root.path(), "pids").is_empty(), "not mounted");
        // The hybrid host's empty v2 hierarchy has no files: v2 finds nothing there.
        assert!(up_the_hierarchy(root.path(), "memory.max").is_empty());
    }

    #[test]
    fn a_container_mount_showing_only_its_subtree_maps_to_the_mount_point() {
        let root = tree(&[
            (
                "proc/self/mountinfo",
                "35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n",
            ),
            ("proc/self/cgroup", "4:memory:/docker/abc\n"),
        ]);
        let dirs = v1_dirs(root.path(), "memory");
        assert_eq!(dirs, [root.path().join("sys/fs/cgroup/memory")]);
        let elsewhere = tree(&[
            (
                "proc/self/mountinfo",
                "35 31 0:32 /docker/abc /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n",
            ),
            ("proc/self/cgroup", "4:memory:/other\n"),
        ]);
        assert!(v1_dirs(elsewhere.path(), "memory").is_empty());
    }

    #[test]
    fn garbage_files_find_nothing() {
        let root = tree(&[
            ("proc/self/mountinfo", "nonsense\n - cgroup\n\n"),
            ("proc/self/cgroup", "memory\n::\n4:memory\n"),
        ]);
        assert!(v1_dirs(root.path(), "memory").is_empty());
        assert!(v1_dirs(Path::new("/nonexistent-root"), "memory").is_empty());
    }
}
