//! Hot reload: watch the rules file's directory with `notify` and reload on SIGHUP.
//!
//! The parent directory is watched, not the file: editors replace files by rename, and a
//! Kubernetes ConfigMap volume swaps a `..data` symlink to a new timestamped directory, neither
//! of which fires on a watch of the old file's inode. Any event in the directory schedules a
//! reload after a short settle delay (coalescing the bursts one save produces); the reload
//! itself ignores unchanged bytes. Everything that touches the filesystem runs on the watch
//! thread or the blocking pool, never on an async worker.

use std::io;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::handle::RulesHandle;

/// How long to wait after the first event for the rest of its burst.
const SETTLE: Duration = Duration::from_millis(100);

/// Keeps the watch thread (and the SIGHUP listener) alive; dropping it stops watching.
pub struct WatchGuard {
    /// Tells the watch thread to stop (dropping it does too).
    stop: mpsc::Sender<Wake>,
    sighup: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for WatchGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchGuard").finish_non_exhaustive()
    }
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        let _ = self.stop.send(Wake::Stop);
        if let Some(task) = self.sighup.take() {
            task.abort();
        }
    }
}

/// What wakes the watch thread.
#[derive(Debug, Clone, Copy)]
enum Wake {
    /// Something changed in the watched directory.
    Changed,
    /// The guard was dropped.
    Stop,
}

/// Watches `path` and reloads `handle` on changes (edits, renames, ConfigMap symlink swaps)
/// and, when called inside a tokio runtime, on SIGHUP.
///
/// Returns at once: installing the watch touches the filesystem and the re-read after it
/// reads and parses the file, so both run on the watch thread, never on an async worker. A
/// watch that cannot be installed is logged there (the rules stay as loaded: degraded, not
/// fatal). Whatever changes after this call is seen, by the watch or by that re-read.
pub fn watch(path: PathBuf, handle: RulesHandle) -> io::Result<WatchGuard> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tx, rx) = mpsc::channel::<Wake>();
    let events = tx.clone();
    let reloader = handle.clone();
    thread::Builder::new()
        .name("stitch-rules-watch".to_owned())
        .spawn(move || {
            let _watcher = match install(&dir, events) {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the rules file; changes need a restart or SIGHUP");
                    return;
                }
            };
            // A change between the start-up load and the watch (a ConfigMap updated while the
            // pod starts) raised no event we could see: read the file once now. Same bytes: a
            // no-op.
            reloader.reload();
            // Ends when the guard is dropped.
            while let Ok(Wake::Changed) = rx.recv() {
                thread::sleep(SETTLE);
                let mut stop = false;
                while let Ok(wake) = rx.try_recv() {
                    stop |= matches!(wake, Wake::Stop);
                }
                if stop {
                    return;
                }
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
    Ok(WatchGuard { stop: tx, sighup })
}

/// A directory watch whose events wake the watch thread.
fn install(
    dir: &std::path::Path,
    events: mpsc::Sender<Wake>,
) -> notify::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            // The watch thread may be gone during shutdown; nothing to do then.
            let _ = events.send(Wake::Changed);
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
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
