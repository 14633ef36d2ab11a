//! Copies of the binaries that run as other UIDs. The build directory may sit under a home
//! directory those UIDs cannot enter (CI checkouts in `/root`), so stitch and the client helper
//! are run from a world-readable copy in the temp directory instead.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Where the copies live.
#[derive(Debug)]
pub struct Staged {
    dir: PathBuf,
    /// The stitch binary under test.
    pub stitch: PathBuf,
    /// This test binary, for `__client`.
    pub client: PathBuf,
}

static STAGED: OnceLock<Result<Staged, String>> = OnceLock::new();

/// The copies, made on first use.
pub fn staged() -> Result<&'static Staged, String> {
    STAGED.get_or_init(stage).as_ref().map_err(Clone::clone)
}

/// Removes the copies (called once all checks ran).
pub fn remove() {
    if let Some(Ok(staged)) = STAGED.get() {
        let _ = std::fs::remove_dir_all(&staged.dir);
    }
}

fn stage() -> Result<Staged, String> {
    let dir = std::env::temp_dir().join(format!("sttest-{}-bin", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    open_up(&dir, 0o755)?;
    let me = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    Ok(Staged {
        stitch: copy(Path::new(env!("CARGO_BIN_EXE_stitch")), &dir.join("stitch"))?,
        client: copy(&me, &dir.join("netns-client"))?,
        dir,
    })
}

fn copy(from: &Path, to: &Path) -> Result<PathBuf, String> {
    std::fs::copy(from, to)
        .map_err(|e| format!("copy {} → {}: {e}", from.display(), to.display()))?;
    open_up(to, 0o755)?;
    Ok(to.to_owned())
}

fn open_up(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}
