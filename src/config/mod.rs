//! The rules file: model, validation, compilation and hot reload.

use std::path::Path;
use std::process::ExitCode;

/// Runs `stitch check-config FILE`.
pub fn check_config_command(file: &Path) -> ExitCode {
    eprintln!("{}: rules validation is not built yet", file.display());
    ExitCode::FAILURE
}
