//! The rules file: model, validation, compilation and hot reload.
//!
//! - `model`: serde data, exactly the documented keys (`deny_unknown_fields`).
//! - `compile`: validation with file/line/column errors, and [`CompiledRules`] (routing: the
//!   first matching rule's policy, plus the template formats the engine takes).
//! - `handle`: [`RulesHandle`], the `ArcSwap` of the rules in force plus reload bookkeeping.
//! - [`watch()`]: `notify` watcher on the file's directory and SIGHUP.
//! - [`app_probes`]: the app probes the admin server performs for the kubelet (set by the
//!   Kubernetes injector).

pub mod app_probes;
pub(crate) mod compile;
pub(crate) mod error;
pub(crate) mod glob;
pub(crate) mod handle;
pub(crate) mod model;
pub(crate) mod watch;

use std::path::Path;
use std::process::ExitCode;

pub(crate) use compile::load_file;
pub use compile::{CompiledRules, parse_rules};
pub use error::{ConfigError, ConfigErrors};
pub use handle::{ReloadResult, RulesHandle};
pub use watch::{WatchGuard, reload_on_sighup, watch};

/// Runs `stitch check-config FILE`: prints every error as `FILE:LINE:COL: reason` on stderr and
/// fails, or prints `FILE: ok`.
pub fn check_config_command(file: &Path) -> ExitCode {
    match load_file(file) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}
