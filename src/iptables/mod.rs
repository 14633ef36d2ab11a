//! The pod's iptables redirect rules, installed by the init container (`stitch iptables`).
//!
//! The rules themselves (and why each exists) are in `rules`; `backend` finds and runs the
//! `iptables-restore`/`iptables-save` tools. This file turns flags into a `rules::Plan` and
//! drives install, cleanup and dry runs for IPv4 and IPv6.
//!
//! Failure leaves the previous state: each family is one atomic `iptables-restore` commit, and
//! a rerun is idempotent, so an init container that fails half-way is simply restarted.

pub(crate) mod backend;
pub(crate) mod rules;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use backend::{Backend, Mode, ToolPath};
use rules::{Cidr, Family, Installed, Plan, PortRange};

/// Flags of `stitch iptables` (names are a contract: init-container manifests call them).
#[derive(Debug, clap::Args)]
pub(crate) struct IptablesArgs {
    /// UID stitch runs as; its traffic is never redirected (so its own connections do not loop).
    #[arg(long, default_value_t = 2102)]
    proxy_uid: u32,
    /// Port of stitch's inbound listener, where inbound TCP is redirected.
    #[arg(long, default_value_t = 4143)]
    inbound_port: u16,
    /// Port of stitch's outbound listener, where the app's outbound TCP is redirected.
    #[arg(long, default_value_t = 4140)]
    outbound_port: u16,
    /// Port of stitch's admin server; inbound connections to it are never redirected.
    #[arg(long, default_value_t = 4191)]
    admin_port: u16,
    /// Inbound ports (or ranges `LO-HI`) that reach the app without stitch, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "PORTS")]
    skip_inbound_ports: Vec<PortRange>,
    /// Outbound ports (or ranges) the app reaches without stitch, e.g. a database port.
    #[arg(long, value_delimiter = ',', value_name = "PORTS")]
    skip_outbound_ports: Vec<PortRange>,
    /// Outbound destinations (CIDRs, IPv4 or IPv6) the app reaches without stitch.
    #[arg(long, value_delimiter = ',', value_name = "CIDRS")]
    skip_outbound_cidrs: Vec<Cidr>,
    /// Only redirect inbound connections to these ports (default: every port).
    #[arg(long, value_delimiter = ',', value_name = "PORTS")]
    inbound_ports: Vec<PortRange>,
    /// Remove every rule and chain stitch installed, then exit.
    #[arg(long)]
    cleanup: bool,
    /// Print the iptables-restore documents instead of applying them.
    #[arg(long)]
    dry_run: bool,
    /// iptables backend: auto picks the one whose tables already hold rules (nft if neither).
    #[arg(long, value_enum, default_value = "auto")]
    mode: Mode,
    /// Leave IPv6 alone (skipped anyway when the kernel has no IPv6).
    #[arg(long)]
    no_ipv6: bool,
}

impl IptablesArgs {
    fn plan(&self) -> Result<Plan, IptablesError> {
        let ports = [
            ("--inbound-port", self.inbound_port),
            ("--outbound-port", self.outbound_port),
            ("--admin-port", self.admin_port),
        ];
        for (i, (a, pa)) in ports.iter().enumerate() {
            if *pa == 0 {
                return Err(IptablesError::Invalid(format!("{a} must not be 0")));
            }
            if let Some((b, _)) = ports[i + 1..].iter().find(|(_, pb)| pb == pa) {
                return Err(IptablesError::Invalid(format!(
                    "{a} and {b} are both {pa}; stitch needs a port for each"
                )));
            }
        }
        Ok(Plan {
            proxy_uid: self.proxy_uid,
            inbound_port: self.inbound_port,
            outbound_port: self.outbound_port,
            admin_port: self.admin_port,
            skip_inbound_ports: self.skip_inbound_ports.clone(),
            skip_outbound_ports: self.skip_outbound_ports.clone(),
            skip_outbound_cidrs: self.skip_outbound_cidrs.clone(),
            inbound_ports: self.inbound_ports.clone(),
        })
    }
}

/// Why `stitch iptables` could not do its job.
#[derive(Debug)]
pub(crate) enum IptablesError {
    /// The process lacks `CAP_NET_ADMIN`.
    NoNetAdmin,
    /// No `iptables-restore` of any kind is installed.
    NoTools,
    /// `--mode` asked for a backend whose tools are not installed.
    NoBackend(&'static str),
    /// The kernel has IPv6 but the backend has no `ip6tables` tools.
    NoV6Tools(&'static str),
    /// A flag value makes no sense.
    Invalid(String),
    /// A tool could not be started.
    Spawn {
        /// The tool.
        tool: String,
        /// Why.
        source: std::io::Error,
    },
    /// A tool ran and failed.
    Failed {
        /// The tool.
        tool: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

impl IptablesError {
    fn spawn(tool: &Path, source: std::io::Error) -> Self {
        IptablesError::Spawn {
            tool: tool.display().to_string(),
            source,
        }
    }

    fn failed(tool: &Path, stderr: &[u8]) -> Self {
        IptablesError::Failed {
            tool: tool.display().to_string(),
            stderr: String::from_utf8_lossy(stderr).trim().to_owned(),
        }
    }
}

impl std::fmt::Display for IptablesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IptablesError::NoNetAdmin => f.write_str(
                "stitch iptables needs the NET_ADMIN capability: run it as root or give the init \
                 container `securityContext.capabilities.add: [NET_ADMIN]` (--dry-run works without)",
            ),
            IptablesError::NoTools => f.write_str(
                "no iptables-restore found (looked for iptables-nft-restore, \
                 iptables-legacy-restore, iptables-restore in PATH and the sbin directories); \
                 install the iptables package",
            ),
            IptablesError::NoBackend(name) => write!(
                f,
                "--mode {name}: iptables-{name}-restore and iptables-{name}-save are not installed"
            ),
            IptablesError::NoV6Tools(name) => write!(
                f,
                "the kernel has IPv6 but the {name} backend has no ip6tables-restore/ip6tables-save; \
                 install them or pass --no-ipv6"
            ),
            IptablesError::Invalid(what) => f.write_str(what),
            IptablesError::Spawn { tool, source } => write!(f, "cannot run {tool}: {source}"),
            IptablesError::Failed { tool, stderr } => {
                write!(f, "{tool} failed: {stderr}")?;
                if stderr.contains("Permission denied") {
                    // Legacy iptables talks to the kernel through a raw socket.
                    f.write_str(" (the init container needs NET_ADMIN, and NET_RAW for legacy iptables)")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for IptablesError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IptablesError::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Runs `stitch iptables`: install (default), `--cleanup`, or `--dry-run` of either.
pub(crate) fn command(args: IptablesArgs) -> ExitCode {
    let environment = Environment::probe(|key| std::env::var_os(key));
    match run(&args, &environment) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Plain stderr, not a log line: the message must show whatever RUST_LOG says.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What the host offers, read once at start-up.
#[derive(Debug, Clone)]
struct Environment {
    tools: ToolPath,
    net_admin: Option<bool>,
    kernel_ipv6: bool,
}

impl Environment {
    fn probe(env: impl Fn(&str) -> Option<OsString>) -> Self {
        Environment {
            tools: ToolPath::new(env("PATH")),
            net_admin: std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| has_net_admin(&s)),
            kernel_ipv6: Path::new("/proc/net/if_inet6").exists(),
        }
    }
}

/// Reads `CapEff` from `/proc/self/status`; `None` when it is not there to read.
fn has_net_admin(status: &str) -> Option<bool> {
    const CAP_NET_ADMIN: u32 = 12;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let caps = u64::from_str_radix(hex, 16).ok()?;
    Some(caps & (1 << CAP_NET_ADMIN) != 0)
}

fn run(args: &IptablesArgs, environment: &Environment) -> Result<(), IptablesError> {
    let plan = args.plan()?;
    let mut families = vec![Family::V4];
    if args.no_ipv6 {
        tracing::info!("--no-ipv6: IPv6 left alone");
    } else if !environment.kernel_ipv6 {
        tracing::info!("the kernel has no IPv6; installing IPv4 rules only");
    } else {
        families.push(Family::V6);
    }
    let net_admin = environment.net_admin != Some(false);
    if args.dry_run {
        return dry_run(args, &plan, &families, environment, net_admin);
    }
    if !net_admin {
        return Err(IptablesError::NoNetAdmin);
    }
    let available = Backend::available(&environment.tools);
    let backend = Backend::select(args.mode, &available)?;
    if families.contains(&Family::V6) && !backend.has_v6() {
        return Err(IptablesError::NoV6Tools(backend.name));
    }
    if args.cleanup {
        // In auto mode, clean every backend: a previous run may have picked another one.
        let targets = if args.mode == Mode::Auto {
            available
        } else {
            vec![backend]
        };
        for b in &targets {
            cleanup(b, &families)?;
        }
        return Ok(());
    }
    for &family in &families {
        let installed = Installed::parse(&backend.save(family)?);
        backend.restore(family, &rules::render_install(&plan, family, &installed))?;
        tracing::info!(
            family = family.as_str(),
            backend = backend.name,
            replaced = !installed.is_empty(),
            "installed stitch redirect rules"
        );
    }
    if args.mode == Mode::Auto {
        for other in available.iter().filter(|b| b.name != backend.name) {
            if let Err(e) = cleanup(other, &families) {
                tracing::warn!(backend = other.name, error = %e, "cannot check the other backend for old stitch rules");
            }
        }
    }
    Ok(())
}

fn cleanup(backend: &Backend, families: &[Family]) -> Result<(), IptablesError> {
    for &family in families {
        if family == Family::V6 && !backend.has_v6() {
            continue;
        }
        let installed = Installed::parse(&backend.save(family)?);
        if let Some(doc) = rules::render_cleanup(family, &installed) {
            backend.restore(family, &doc)?;
            tracing::info!(
                family = family.as_str(),
                backend = backend.name,
                "removed stitch redirect rules"
            );
        }
    }
    Ok(())
}

/// Prints what would be applied. With NET_ADMIN and tools, against the tables as they are
/// (so the `-D` lines of a rerun show); otherwise as on a fresh pod, and says so.
fn dry_run(
    args: &IptablesArgs,
    plan: &Plan,
    families: &[Family],
    environment: &Environment,
    net_admin: bool,
) -> Result<(), IptablesError> {
    let backend = if net_admin {
        Backend::select(args.mode, &Backend::available(&environment.tools)).ok()
    } else {
        None
    };
    for &family in families {
        let installed = backend
            .as_ref()
            .and_then(|b| b.save(family).ok())
            .map(|save| Installed::parse(&save));
        match &backend {
            Some(b) if installed.is_some() => {
                println!(
                    "# backend: {} ({} tables as they are now)",
                    b.name,
                    family.as_str()
                );
            }
            _ => println!(
                "# {} tables not readable (no NET_ADMIN or no iptables): shown as on a fresh pod",
                family.as_str()
            ),
        }
        let installed = installed.unwrap_or_default();
        if args.cleanup {
            match rules::render_cleanup(family, &installed) {
                Some(doc) => print!("{doc}"),
                None => println!("# nothing of stitch's to remove"),
            }
        } else {
            print!("{}", rules::render_install(plan, family, &installed));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_admin_is_bit_12_of_the_effective_set() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        let user = "Name:\tx\nCapEff:\t0000000000000000\n";
        let only_net_admin = "CapEff:\t0000000000001000\n";
        assert_eq!(has_net_admin(root), Some(true));
        assert_eq!(has_net_admin(user), Some(false));
        assert_eq!(has_net_admin(only_net_admin), Some(true));
        assert_eq!(has_net_admin("Name:\tx\n"), None);
    }

    #[test]
    fn clashing_ports_are_refused() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: IptablesArgs,
        }
        let parse = |argv: &[&str]| {
            Cli::try_parse_from(std::iter::once("stitch").chain(argv.iter().copied()))
                .map(|c| c.args)
        };
        let args = parse(&["--admin-port", "4143"]).expect("valid flags");
        assert!(matches!(args.plan(), Err(IptablesError::Invalid(_))));
        let args = parse(&[
            "--skip-outbound-ports",
            "5432,6379-6380",
            "--skip-outbound-cidrs",
            "10.0.0.0/8,fd00::/8",
        ])
        .expect("valid flags");
        let plan = args.plan().expect("valid plan");
        assert_eq!(plan.skip_outbound_ports.len(), 2);
        assert_eq!(plan.skip_outbound_cidrs.len(), 2);
        assert!(parse(&["--skip-outbound-cidrs", "10.0.0.0/33"]).is_err());
        assert!(parse(&["--skip-inbound-ports", "0"]).is_err());
        assert!(parse(&["--mode", "iptables"]).is_err());
    }
}
