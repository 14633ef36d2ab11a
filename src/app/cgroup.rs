//! Reading a cgroup v2 controller file for this process and every ancestor: a limit set on a
//! parent (the pod's cgroup above the container's) binds the process too. Shared by the CPU
//! sizing ([`super::cpus`]) and the connection cap ([`super::memory`]).

use std::path::{Path, PathBuf};

/// The contents of `file` (e.g. `cpu.max`, `memory.max`) in the process's cgroup (v2: the
/// `0::` line of `/proc/self/cgroup`) and each ancestor up to the hierarchy's root, innermost
/// first, read under `root` (`/` in production, a fake tree in tests). Inside a cgroup
/// namespace the path is `/` and the file at the root is the container's own. Empty when the
/// process is not in a cgroup v2 hierarchy.
pub(crate) fn up_the_hierarchy(root: &Path, file: &str) -> Vec<String> {
    let Ok(membership) = std::fs::read_to_string(root.join("proc/self/cgroup")) else {
        return Vec::new();
    };
    let Some(path) = membership.lines().find_map(|line| line.strip_prefix("0::")) else {
        return Vec::new();
    };
    let hierarchy = root.join("sys/fs/cgroup");
    let mut dir: PathBuf = hierarchy.join(path.trim().trim_start_matches('/'));
    let mut found = Vec::new();
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
            found.push(text);
        }
        if dir == hierarchy || !dir.pop() || !dir.starts_with(&hierarchy) {
            return found;
        }
    }
}
