//! The pod's iptables redirect rules, installed by the init container (`stitch iptables`).

use std::process::ExitCode;

/// Flags of `stitch iptables`.
#[derive(Debug, clap::Args)]
pub struct IptablesArgs {
    /// Print the rules instead of applying them.
    #[arg(long)]
    dry_run: bool,
}

/// Runs `stitch iptables`.
pub fn command(args: IptablesArgs) -> ExitCode {
    tracing::error!(dry_run = args.dry_run, "stitch iptables is not built yet");
    ExitCode::FAILURE
}
