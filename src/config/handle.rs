//! [`RulesHandle`]: the one piece of shared mutable state on the request path. Requests load the
//! current [`CompiledRules`] once (lock-free, via `arc-swap`) and keep that version to the end;
//! a reload validates the whole new file before publishing it, so no request sees half a config
//! and a bad file keeps the last good rules.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};
use serde_json::{Value, json};

use super::compile::{CompiledRules, load_file, parse_rules};
use super::error::ConfigErrors;

/// What a reload attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadResult {
    /// New rules published.
    Applied,
    /// The file is byte-for-byte what was last tried; nothing done, nothing counted.
    Unchanged,
    /// The new file is invalid; the last good rules stay.
    Rejected(ConfigErrors),
}

#[derive(Debug, Default)]
struct ReloadState {
    /// The bytes last tried, so repeated file events for one change do one reload.
    last_attempt: Option<Vec<u8>>,
    last_error: Option<String>,
}

/// Called after every counted reload with its `stitch_config_reloads_total` label.
type ReloadObserver = Box<dyn Fn(&'static str) + Send + Sync>;

struct Inner {
    rules: ArcSwap<CompiledRules>,
    path: Option<PathBuf>,
    state: Mutex<ReloadState>,
    reloads_ok: AtomicU64,
    reloads_error: AtomicU64,
    observer: Mutex<Option<ReloadObserver>>,
    /// A missing file is not an error: the rules in force stay (built-in defaults until the
    /// file first appears). For a Kubernetes ConfigMap mounted `optional: true`.
    optional: bool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RulesHandle")
            .field("path", &self.path)
            .field("reloads_ok", &self.reloads_ok)
            .field("reloads_error", &self.reloads_error)
            .finish_non_exhaustive()
    }
}

/// Shared handle to the rules in force; cheap to clone.
#[derive(Debug, Clone)]
pub struct RulesHandle {
    inner: Arc<Inner>,
}

impl ReloadResult {
    /// The `result` label of `stitch_config_reloads_total`; `None` for an unchanged file
    /// (not counted).
    pub fn label(&self) -> Option<&'static str> {
        match self {
            ReloadResult::Applied => Some("ok"),
            ReloadResult::Rejected(_) => Some("rejected"),
            ReloadResult::Unchanged => None,
        }
    }
}

impl RulesHandle {
    /// A handle on fixed rules (no file; reloads do nothing).
    pub fn new(rules: CompiledRules) -> RulesHandle {
        RulesHandle::build(rules, None, None, false)
    }

    /// Loads `path` once; start-up fails with the file's errors when it is invalid.
    pub fn from_file(path: &Path) -> Result<RulesHandle, ConfigErrors> {
        let bytes = std::fs::read(path).ok();
        let rules = load_file(path)?;
        Ok(RulesHandle::build(
            rules,
            Some(path.to_path_buf()),
            bytes,
            false,
        ))
    }

    /// `--config` given or not: the file's rules, or the built-in defaults.
    pub(crate) fn from_optional_file(path: Option<&Path>) -> Result<RulesHandle, ConfigErrors> {
        match path {
            Some(path) => RulesHandle::from_file(path),
            None => Ok(RulesHandle::new(CompiledRules::default())),
        }
    }

    /// Like [`RulesHandle::from_file`], but a file that does not exist yet means the built-in
    /// defaults, and the file is loaded when it appears (and a later disappearance keeps the
    /// rules in force). An existing but invalid file still fails start-up.
    pub fn from_file_if_exists(path: &Path) -> Result<RulesHandle, ConfigErrors> {
        let (rules, bytes) = match std::fs::read(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (CompiledRules::default(), None),
            read => (load_file(path)?, read.ok()),
        };
        Ok(RulesHandle::build(
            rules,
            Some(path.to_path_buf()),
            bytes,
            true,
        ))
    }

    fn build(
        rules: CompiledRules,
        path: Option<PathBuf>,
        bytes: Option<Vec<u8>>,
        optional: bool,
    ) -> RulesHandle {
        RulesHandle {
            inner: Arc::new(Inner {
                rules: ArcSwap::from_pointee(rules),
                path,
                state: Mutex::new(ReloadState {
                    last_attempt: bytes,
                    last_error: None,
                }),
                reloads_ok: AtomicU64::new(0),
                reloads_error: AtomicU64::new(0),
                observer: Mutex::new(None),
                optional,
            }),
        }
    }

    /// The rules in force; hold the guard for the whole request.
    pub fn load(&self) -> Guard<Arc<CompiledRules>> {
        self.inner.rules.load()
    }

    /// The rules in force as an owned `Arc` (for holders that outlive a short borrow).
    pub fn load_full(&self) -> Arc<CompiledRules> {
        self.inner.rules.load_full()
    }

    /// The watched file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Re-reads the file; publishes it when valid and changed. Logs a warning when rejected.
    pub fn reload(&self) -> ReloadResult {
        let Some(path) = self.inner.path.as_deref() else {
            return ReloadResult::Unchanged;
        };
        let bytes = std::fs::read(path);
        let mut state = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let result = match bytes {
            Ok(bytes) if state.last_attempt.as_deref() == Some(&bytes[..]) => {
                ReloadResult::Unchanged
            }
            // A writer that truncates then writes (`std::fs::write`, `cp`, a shell `>`) is seen
            // here between the two; an empty file is not a version to apply (it would put the
            // defaults in force for a moment). `{}` is how a file asks for the defaults.
            Ok(bytes) if bytes.is_empty() => {
                tracing::debug!(path = %path.display(), "rules file is empty (being written?); rules in force stay");
                ReloadResult::Unchanged
            }
            Ok(bytes) => {
                let parsed = String::from_utf8(bytes.clone())
                    .map_err(|_| invalid_utf8(path))
                    .and_then(|text| parse_rules(&text, path));
                state.last_attempt = Some(bytes);
                match parsed {
                    Ok(rules) => {
                        self.inner.rules.store(Arc::new(rules));
                        ReloadResult::Applied
                    }
                    Err(e) => ReloadResult::Rejected(e),
                }
            }
            Err(e) if self.inner.optional && e.kind() == std::io::ErrorKind::NotFound => {
                state.last_attempt = None;
                tracing::debug!(path = %path.display(), "optional rules file absent; rules in force stay");
                ReloadResult::Unchanged
            }
            Err(e) => {
                // A missing file mid-swap is not a new version; forget the last attempt so the
                // file reappearing with the same bytes still counts as a change.
                state.last_attempt = None;
                ReloadResult::Rejected(ConfigErrors(vec![super::error::ConfigError {
                    path: path.to_path_buf(),
                    line: 0,
                    column: 0,
                    reason: format!("cannot read: {e}"),
                }]))
            }
        };
        match &result {
            ReloadResult::Applied => {
                state.last_error = None;
                self.inner.reloads_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(path = %path.display(), "rules reloaded");
            }
            ReloadResult::Rejected(e) => {
                state.last_error = Some(e.to_string());
                self.inner.reloads_error.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %path.display(), error = %e, "rules reload rejected; keeping the last good rules");
            }
            ReloadResult::Unchanged => {}
        }
        drop(state);
        if let Some(label) = result.label() {
            let observer = self
                .inner
                .observer
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(observe) = observer.as_ref() {
                observe(label);
            }
        }
        result
    }

    /// Registers `observer`, called after each counted reload with `"ok"` or `"rejected"`
    /// (wire it to `stitch_config_reloads_total{result}`). Replaces any earlier observer.
    pub fn on_reload(&self, observer: impl Fn(&'static str) + Send + Sync + 'static) {
        *self
            .inner
            .observer
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Box::new(observer));
    }

    /// Reload attempts so far, by result: `(ok, error)`
    /// (`stitch_config_reloads_total{result}`).
    pub fn reloads(&self) -> (u64, u64) {
        (
            self.inner.reloads_ok.load(Ordering::Relaxed),
            self.inner.reloads_error.load(Ordering::Relaxed),
        )
    }

    /// The error of the last rejected reload, cleared by the next good one.
    pub fn last_error(&self) -> Option<String> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_error
            .clone()
    }

    /// The admin `/config` view: rules in force, last reload error, reload counts.
    pub fn to_json(&self) -> Value {
        let (ok, error) = self.reloads();
        json!({
            "rules": self.load().to_json(),
            "last_reload_error": self.last_error(),
            "reloads": { "ok": ok, "error": error },
        })
    }
}

fn invalid_utf8(path: &Path) -> ConfigErrors {
    ConfigErrors(vec![super::error::ConfigError {
        path: path.to_path_buf(),
        line: 0,
        column: 0,
        reason: "not UTF-8".to_owned(),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_mid_write_is_not_applied_and_not_counted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rules.yaml");
        std::fs::write(&path, "inject: [w3c]\n").expect("write rules");
        let handle = RulesHandle::from_file(&path).expect("valid rules");
        let before = handle.load_full();
        std::fs::write(&path, "").expect("truncate");
        assert!(matches!(handle.reload(), ReloadResult::Unchanged));
        assert!(
            Arc::ptr_eq(&before, &handle.load_full()),
            "rules in force stay"
        );
        std::fs::write(&path, "inject: [w3c, b3]\n").expect("rewrite rules");
        assert!(matches!(handle.reload(), ReloadResult::Applied));
        assert_eq!(handle.reloads(), (1, 0), "one write, one reload counted");
    }

    #[test]
    fn an_optional_file_starts_on_defaults_and_loads_when_it_appears() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rules.yaml");
        let handle = RulesHandle::from_file_if_exists(&path).expect("absent is fine");
        assert_eq!(handle.reload(), ReloadResult::Unchanged);
        assert_eq!(
            handle.reloads(),
            (0, 0),
            "an absent optional file is not counted"
        );
        let defaults = handle.to_json()["rules"].clone();

        std::fs::write(&path, "inject: [b3]\n").expect("write");
        assert_eq!(handle.reload(), ReloadResult::Applied);
        let loaded = handle.to_json()["rules"].clone();
        assert_ne!(loaded, defaults, "the file's rules are in force");

        std::fs::remove_file(&path).expect("remove");
        assert_eq!(handle.reload(), ReloadResult::Unchanged);
        assert_eq!(handle.to_json()["rules"], loaded, "the last rules stay");
    }

    #[test]
    fn an_optional_file_that_exists_must_be_valid() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rules.yaml");
        std::fs::write(&path, "inject: [nope]\n").expect("write");
        assert!(RulesHandle::from_file_if_exists(&path).is_err());
        assert!(
            RulesHandle::from_file(&dir.path().join("absent.yaml")).is_err(),
            "a required file must exist"
        );
    }
}
