//! `stitch inject -f FILE|- …`: the injector offline, for clusters without the webhook or for
//! reviewing what it would do. The only part of [`super`] that does I/O: it reads the files
//! (`-` is stdin) and writes the injected stream to stdout and a summary to stderr. No network.

use std::io::{Read, Write};
use std::process::ExitCode;

use super::flags::InjectFlags;
use super::manifest::transform;

/// Flags of `stitch inject`.
#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// A manifest file (multi-document YAML, `kind: List` too); `-` reads stdin. Repeatable;
    /// the outputs follow each other as one stream.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE|-")]
    files: Vec<String>,
    #[command(flatten)]
    flags: InjectFlags,
}

/// Runs `stitch inject`; fails when an option, a file or a document cannot be read (the
/// documents it could not read are still passed through, so nothing is lost from the stream).
pub fn command(args: InjectArgs) -> ExitCode {
    let options = match args.flags.into_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("stitch inject: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    let (mut injected, mut skipped) = (0, 0);
    let mut stdout = std::io::stdout().lock();
    for file in &args.files {
        let text = if file == "-" {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).map(|_| text)
        } else {
            std::fs::read_to_string(file)
        };
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                eprintln!("stitch inject: cannot read {file}: {e}");
                failed = true;
                continue;
            }
        };
        let result = transform(&text, &options);
        if let Err(e) = stdout.write_all(result.text.as_bytes()) {
            eprintln!("stitch inject: cannot write: {e}");
            return ExitCode::FAILURE;
        }
        for report in &result.reports {
            eprintln!("{file}: {report}");
            if report.outcome.is_ok() {
                injected += 1;
            } else {
                skipped += 1;
            }
        }
        for (index, error) in &result.unreadable {
            eprintln!("{file}: document {index} is not YAML, passed through: {error}");
            failed = true;
        }
    }
    eprintln!("stitch inject: {injected} injected, {skipped} skipped");
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
