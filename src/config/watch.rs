//! Hot reload: watch the rules file's directory with `notify` and reload on SIGHUP.
//!
//! The parent directory is watched, not the file: editors replace files by rename, and a
//! Kubernetes ConfigMap volume swaps a `..data` symlink to a new timestamped directory, neither
//! of which fires on a watch of the old file's inode. Any event in the directory schedules a
//! reload after a short settle delay (coalescing the bursts one save produces); the reload
//! itself ignores unchanged bytes.

use std::io;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::handle::RulesHandle;

/// How long to wait after the first event for the rest of its burst.
const SETTLE: Duration = Duration::from_millis(100);

/// Keeps the watcher (and the SIGHUP listener) alive; dropping it stops watching.
pub struct WatchGuard {
    _watcher: notify::RecommendedWatcher,
    sighup: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for WatchGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchGuard").finish_non_exhaustive()
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        if let Some(task) = self.sighup.take() {
            task.abort();
        }
    }
}

/// Watches `path` and reloads `handle` on changes (edits, renames, ConfigMap symlink swaps)
/// and, when called inside a tokio runtime, on SIGHUP.
pub fn watch(path: PathBuf, handle: RulesHandle) -> io::Result<WatchGuard> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            // The reload thread may be gone during shutdown; nothing to do then.
            let _ = tx.send(());
        }
    })
    .map_err(io::Error::other)?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(io::Error::other)?;
    // A change between the start-up load and this point (a ConfigMap updated while the pod
    // starts) raised no event we could see: read the file once now. Same bytes: a no-op.
    handle.reload();

    let reloader = handle.clone();
    thread::Builder::new()
        .name("stitch-rules-watch".to_owned())
        .spawn(move || {
            // Ends when the watcher (and with it the sender) is dropped.
            while rx.recv().is_ok() {
                thread::sleep(SETTLE);
                while rx.try_recv().is_ok() {}
                reloader.reload();
            }
        })?;

    let sighup = match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            let _entered = rt.enter();
            Some(reload_on_sighup(handle)?)
        }
        Err(_) => None,
    };
    Ok(WatchGuard {
        _watcher: watcher,
        sighup,
    })
}

/// Reloads `handle` on every SIGHUP. Must run inside a tokio runtime. The handler is installed
/// before this returns, so a SIGHUP sent afterwards can never hit the default action (exit).
pub fn reload_on_sighup(handle: RulesHandle) -> io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading rules");
            let h = handle.clone();
            // File reads are blocking; keep them off the async workers.
            let _ = tokio::task::spawn_blocking(move || h.reload()).await;
        }
    }))
}
