//! The `iptables-restore`/`iptables-save` tools of one backend (nf_tables or legacy), found on
//! disk and run without a shell.
//!
//! Both backends can be present in one image, and the kernel keeps their rules apart: rules
//! written through the wrong one still apply but are invisible to the tools the rest of the
//! node uses. So `auto` picks the backend whose tables already hold rules (what the kubelet or
//! the CNI wrote there), and nf_tables when neither does.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::IptablesError;
use super::rules::Family;

/// Which iptables backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// The backend whose tables already hold rules; nf_tables when neither does.
    Auto,
    /// `iptables-nft-restore` (the kernel's nf_tables, through the iptables syntax).
    Nft,
    /// `iptables-legacy-restore` (the x_tables kernel interface).
    Legacy,
}

/// One concrete backend: the restore and save tools for both families.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backend {
    /// `nft`, `legacy`, or `default` for unsuffixed tools of unknown kind.
    pub name: &'static str,
    v4_restore: PathBuf,
    v4_save: PathBuf,
    v6_restore: Option<PathBuf>,
    v6_save: Option<PathBuf>,
}

/// Where tools are looked up: `PATH` plus the sbin directories an unprivileged `PATH` lacks.
#[derive(Debug, Clone)]
pub(crate) struct ToolPath {
    dirs: Vec<PathBuf>,
}

impl ToolPath {
    /// Builds the search list from the value of `PATH` (read once at start-up by the caller).
    pub(crate) fn new(path_var: Option<OsString>) -> Self {
        let mut dirs: Vec<PathBuf> = path_var
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        for extra in ["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin", "/bin"] {
            let extra = PathBuf::from(extra);
            if !dirs.contains(&extra) {
                dirs.push(extra);
            }
        }
        ToolPath { dirs }
    }

    fn find(&self, name: &str) -> Option<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl Backend {
    fn find(tools: &ToolPath, name: &'static str, infix: &str) -> Option<Backend> {
        Some(Backend {
            name,
            v4_restore: tools.find(&format!("iptables{infix}-restore"))?,
            v4_save: tools.find(&format!("iptables{infix}-save"))?,
            v6_restore: tools.find(&format!("ip6tables{infix}-restore")),
            v6_save: tools.find(&format!("ip6tables{infix}-save")),
        })
    }

    /// Every backend installed, suffixed tools first; the plain `iptables-restore` only when
    /// no suffixed one exists (it is then one of them under another name).
    pub(crate) fn available(tools: &ToolPath) -> Vec<Backend> {
        let found: Vec<Backend> = [("nft", "-nft"), ("legacy", "-legacy")]
            .into_iter()
            .filter_map(|(name, infix)| Backend::find(tools, name, infix))
            .collect();
        if !found.is_empty() {
            return found;
        }
        Backend::find(tools, "default", "").into_iter().collect()
    }

    /// Chooses the backend for `mode` among the installed ones.
    pub(crate) fn select(mode: Mode, available: &[Backend]) -> Result<Backend, IptablesError> {
        let wanted = match mode {
            Mode::Nft => Some("nft"),
            Mode::Legacy => Some("legacy"),
            Mode::Auto => None,
        };
        if available.is_empty() {
            return Err(IptablesError::NoTools);
        }
        if let Some(wanted) = wanted {
            return available
                .iter()
                .find(|b| b.name == wanted || (b.name == "default" && b.kind() == Some(wanted)))
                .cloned()
                .ok_or(IptablesError::NoBackend(wanted));
        }
        if available.len() == 1 {
            return Ok(available[0].clone());
        }
        // Kubernetes' iptables-wrapper rule: legacy only when it holds more rules than nft.
        let count = |b: &Backend| b.rule_count();
        let nft = available.iter().find(|b| b.name == "nft");
        let legacy = available.iter().find(|b| b.name == "legacy");
        match (nft, legacy) {
            (Some(n), Some(l)) if count(l) > count(n) => Ok(l.clone()),
            (Some(n), _) => Ok(n.clone()),
            _ => Ok(available[0].clone()),
        }
    }

    /// `nft` or `legacy` for the unsuffixed tools, from their `--version` line.
    fn kind(&self) -> Option<&'static str> {
        let out = Command::new(&self.v4_restore)
            .arg("--version")
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("nf_tables") {
            Some("nft")
        } else if text.contains("legacy") {
            Some("legacy")
        } else {
            None
        }
    }

    fn rule_count(&self) -> usize {
        [Family::V4, Family::V6]
            .into_iter()
            .filter_map(|f| self.save(f).ok())
            .map(|doc| doc.lines().filter(|l| l.starts_with("-A ")).count())
            .sum()
    }

    /// Whether this backend has IPv6 tools.
    pub(crate) fn has_v6(&self) -> bool {
        self.v6_restore.is_some() && self.v6_save.is_some()
    }

    fn tools(&self, family: Family) -> Result<(&Path, &Path), IptablesError> {
        match family {
            Family::V4 => Ok((&self.v4_restore, &self.v4_save)),
            Family::V6 => match (&self.v6_restore, &self.v6_save) {
                (Some(r), Some(s)) => Ok((r, s)),
                _ => Err(IptablesError::NoV6Tools(self.name)),
            },
        }
    }

    /// The tables as `iptables-save` prints them. Deliberately without `-t nat`: that would
    /// make the legacy backend load its `nat` table into the pod just to look at it; a table
    /// that is not loaded holds no stitch rules anyway.
    pub(crate) fn save(&self, family: Family) -> Result<String, IptablesError> {
        let (_, save) = self.tools(family)?;
        let out = Command::new(save)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| IptablesError::spawn(save, e))?;
        if !out.status.success() {
            return Err(IptablesError::failed(save, &out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Feeds `doc` to `iptables-restore --noflush`: one atomic commit, other rules kept.
    pub(crate) fn restore(&self, family: Family, doc: &str) -> Result<(), IptablesError> {
        let (restore, _) = self.tools(family)?;
        let mut child = Command::new(restore)
            .arg("--noflush")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| IptablesError::spawn(restore, e))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A write error shows up as the tool's failure below, with its own message.
            let _ = stdin.write_all(doc.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| IptablesError::spawn(restore, e))?;
        if !out.status.success() {
            return Err(IptablesError::failed(restore, &out.stderr));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_any_iptables_tool_the_error_says_what_to_install() {
        let empty = ToolPath {
            dirs: vec![std::env::temp_dir().join("stitch-no-such-dir")],
        };
        let available = Backend::available(&empty);
        assert!(available.is_empty());
        let err = Backend::select(Mode::Auto, &available).expect_err("no tools");
        assert!(
            err.to_string().contains("install the iptables package"),
            "{err}"
        );
        let err = Backend::select(Mode::Legacy, &available).expect_err("no tools");
        assert!(matches!(err, IptablesError::NoTools), "{err}");
    }

    #[test]
    fn path_is_searched_before_the_sbin_fallbacks() {
        let tools = ToolPath::new(Some("/opt/bin:/usr/sbin".into()));
        assert_eq!(tools.dirs[0], PathBuf::from("/opt/bin"));
        assert_eq!(tools.dirs[1], PathBuf::from("/usr/sbin"));
        assert!(tools.dirs.contains(&PathBuf::from("/sbin")));
        assert_eq!(
            tools
                .dirs
                .iter()
                .filter(|d| d.as_os_str() == "/usr/sbin")
                .count(),
            1
        );
    }
}
