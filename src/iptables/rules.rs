//! The redirect rules as `iptables-restore` documents: pure functions from a [`Plan`] (and what
//! the tables already hold) to text, so the exact rules are unit-tested without root.
//!
//! Everything lives in the `nat` table, in chains of stitch's own:
//!
//! ```text
//! PREROUTING -p tcp ─► STITCH_INBOUND ──► STITCH_INBOUND_REDIRECT  (REDIRECT --to-ports 4143)
//! OUTPUT     -p tcp ─► STITCH_OUTPUT  ──► STITCH_OUTPUT_REDIRECT   (REDIRECT --to-ports 4140)
//! ```
//!
//! Exclusions are `RETURN` rules placed before the jump to the redirect chain. The `nat`
//! table only sees the first packet of a connection, so replies and established flows are
//! never touched. Only TCP is redirected: DNS over UDP and everything else pass as they are.
//!
//! The install document is applied with `--noflush`: declaring a chain that already exists
//! flushes it, the jumps of a previous run are deleted by their saved text, and the new set
//! is written, all in one atomic commit. Running twice therefore leaves one set of rules.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::str::FromStr;

/// Chains of every stitch version start with this, so leftovers are found and removed.
pub(crate) const CHAIN_PREFIX: &str = "STITCH_";
/// Hooked from `PREROUTING`: decides which inbound connections go to stitch.
pub(crate) const INBOUND_CHAIN: &str = "STITCH_INBOUND";
/// Hooked from `OUTPUT`: decides which locally originated connections go to stitch.
pub(crate) const OUTPUT_CHAIN: &str = "STITCH_OUTPUT";
/// The single `REDIRECT` to the inbound port, shared by every inbound decision.
pub(crate) const INBOUND_REDIRECT_CHAIN: &str = "STITCH_INBOUND_REDIRECT";
/// The single `REDIRECT` to the outbound port.
pub(crate) const OUTPUT_REDIRECT_CHAIN: &str = "STITCH_OUTPUT_REDIRECT";

const CHAINS: [&str; 4] = [
    INBOUND_CHAIN,
    INBOUND_REDIRECT_CHAIN,
    OUTPUT_CHAIN,
    OUTPUT_REDIRECT_CHAIN,
];

/// The IP family a document is for; IPv4 and IPv6 have separate tables and tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// `iptables-restore`.
    V4,
    /// `ip6tables-restore`.
    V6,
}

impl Family {
    /// Name used in logs and in the document header.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// A destination port or an inclusive range (`8000-8100`), as `--dport` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// A single port (only the tests build one by hand; the CLI parses them).
    #[cfg(test)]
    pub(crate) fn single(port: u16) -> Self {
        PortRange {
            first: port,
            last: port,
        }
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

impl FromStr for PortRange {
    type Err = String;

    /// Accepts `P`, `LO-HI` and `LO:HI` (the forms linkerd and istio users already write).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let port = |p: &str| -> Result<u16, String> {
            match p.trim().parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("`{p}` is not a port (1-65535)")),
                Ok(n) => Ok(n),
            }
        };
        let (first, last) = match s.split_once(['-', ':']) {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if first > last {
            return Err(format!("port range `{s}` runs backwards"));
        }
        Ok(PortRange { first, last })
    }
}

/// An address block (`10.0.0.0/8`, `fd00::/8`); a bare address means a single host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    fn family(&self) -> Family {
        match self.addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{s}`: prefix length must be 0-{max}")),
            },
        };
        Ok(Cidr { addr, prefix_len })
    }
}

/// What to redirect and what to leave alone; the parsed flags of `stitch iptables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// UID stitch runs as; its connections are never redirected (else they would loop).
    pub proxy_uid: u32,
    /// Where redirected inbound connections land.
    pub inbound_port: u16,
    /// Where the app's redirected outbound connections land.
    pub outbound_port: u16,
    /// stitch's admin server; inbound connections to it are never redirected.
    pub admin_port: u16,
    /// Inbound destination ports that bypass stitch.
    pub skip_inbound_ports: Vec<PortRange>,
    /// Outbound destination ports that bypass stitch.
    pub skip_outbound_ports: Vec<PortRange>,
    /// Outbound destinations that bypass stitch (each applies to its own family).
    pub skip_outbound_cidrs: Vec<Cidr>,
    /// When not empty, only inbound connections to these ports are redirected.
    pub inbound_ports: Vec<PortRange>,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            proxy_uid: 2102,
            inbound_port: 4143,
            outbound_port: 4140,
            admin_port: 4191,
            skip_inbound_ports: Vec::new(),
            skip_outbound_ports: Vec::new(),
            skip_outbound_cidrs: Vec::new(),
            inbound_ports: Vec::new(),
        }
    }
}

/// What a previous run (of any stitch version) left in the `nat` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Installed {
    /// `STITCH_*` chains.
    pub chains: Vec<String>,
    /// Rules of other chains that jump to a `STITCH_*` chain, as `iptables-save` prints them.
    pub jumps: Vec<String>,
}

impl Installed {
    /// Reads an `iptables-save` document (any tables; only `nat` is looked at).
    pub(crate) fn parse(save: &str) -> Self {
        let mut installed = Installed::default();
        let mut in_nat = false;
        for line in save.lines().map(str::trim) {
            if let Some(table) = line.strip_prefix('*') {
                in_nat = table == "nat";
            } else if !in_nat {
                continue;
            } else if let Some(chain) = line.strip_prefix(':') {
                let name = chain.split_whitespace().next().unwrap_or_default();
                if name.starts_with(CHAIN_PREFIX) {
                    installed.chains.push(name.to_owned());
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let chain = rule.split_whitespace().next().unwrap_or_default();
                if !chain.starts_with(CHAIN_PREFIX) && jumps_to_stitch(rule) {
                    installed.jumps.push(rule.to_owned());
                }
            }
        }
        installed
    }

    /// Whether nothing of stitch's is installed.
    pub(crate) fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.jumps.is_empty()
    }
}

fn jumps_to_stitch(rule: &str) -> bool {
    let mut words = rule.split_whitespace();
    while let Some(word) = words.next() {
        if (word == "-j" || word == "-g" || word == "--jump" || word == "--goto")
            && words.next().is_some_and(|t| t.starts_with(CHAIN_PREFIX))
        {
            return true;
        }
    }
    false
}

/// The document that replaces whatever stitch installed before with the rules of `plan`.
pub(crate) fn render_install(plan: &Plan, family: Family, installed: &Installed) -> String {
    let mut doc = String::new();
    let _ = writeln!(
        doc,
        "# stitch iptables ({}): redirect the pod's TCP to stitch; apply with --noflush.",
        family.as_str()
    );
    doc.push_str("*nat\n");
    // Declaring a chain creates it, or flushes it when a previous run left it.
    for chain in CHAINS {
        let _ = writeln!(doc, ":{chain} - [0:0]");
    }
    let stale: Vec<&str> = installed
        .chains
        .iter()
        .map(String::as_str)
        .filter(|c| !CHAINS.contains(c))
        .collect();
    for chain in &stale {
        let _ = writeln!(doc, ":{chain} - [0:0]");
    }
    write_unhook(&mut doc, installed, "the hooks of a previous run");
    if !stale.is_empty() {
        doc.push_str("# Chains of an older stitch that this one no longer uses.\n");
        for chain in &stale {
            let _ = writeln!(doc, "-X {chain}");
        }
    }
    write_inbound(&mut doc, plan);
    write_outbound(&mut doc, plan, family);
    doc.push_str("# Hook the chains in last, so no packet meets a half-built chain.\n");
    let _ = writeln!(doc, "-A PREROUTING -p tcp -j {INBOUND_CHAIN}");
    let _ = writeln!(doc, "-A OUTPUT -p tcp -j {OUTPUT_CHAIN}");
    doc.push_str("COMMIT\n");
    doc
}

/// The document that removes everything stitch installed, or `None` when nothing is there.
pub(crate) fn render_cleanup(family: Family, installed: &Installed) -> Option<String> {
    if installed.is_empty() {
        return None;
    }
    let mut doc = String::new();
    let _ = writeln!(
        doc,
        "# stitch iptables --cleanup ({}): remove stitch's chains; apply with --noflush.",
        family.as_str()
    );
    doc.push_str("*nat\n");
    // Flush first: a chain can only be deleted once empty and unreferenced.
    for chain in &installed.chains {
        let _ = writeln!(doc, ":{chain} - [0:0]");
    }
    write_unhook(&mut doc, installed, "the hooks");
    for chain in &installed.chains {
        let _ = writeln!(doc, "-X {chain}");
    }
    doc.push_str("COMMIT\n");
    Some(doc)
}

fn write_unhook(doc: &mut String, installed: &Installed, what: &str) {
    if installed.jumps.is_empty() {
        return;
    }
    let _ = writeln!(doc, "# Remove {what} (as iptables-save printed them).");
    for jump in &installed.jumps {
        let _ = writeln!(doc, "-D {jump}");
    }
}

fn write_inbound(doc: &mut String, plan: &Plan) {
    doc.push_str("# Inbound: TCP arriving from outside the pod lands on stitch's inbound port.\n");
    let _ = writeln!(
        doc,
        "-A {INBOUND_REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {}",
        plan.inbound_port
    );
    doc.push_str("# The admin port is served by stitch itself (kubelet probes, metrics).\n");
    let _ = writeln!(
        doc,
        "-A {INBOUND_CHAIN} -p tcp -m tcp --dport {} -j RETURN",
        plan.admin_port
    );
    if !plan.skip_inbound_ports.is_empty() {
        doc.push_str("# --skip-inbound-ports: these reach the app directly.\n");
        for ports in &plan.skip_inbound_ports {
            let _ = writeln!(
                doc,
                "-A {INBOUND_CHAIN} -p tcp -m tcp --dport {ports} -j RETURN"
            );
        }
    }
    if plan.inbound_ports.is_empty() {
        let _ = writeln!(doc, "-A {INBOUND_CHAIN} -p tcp -j {INBOUND_REDIRECT_CHAIN}");
    } else {
        doc.push_str(
            "# --inbound-ports: only these are redirected; other ports reach the app directly.\n",
        );
        for ports in &plan.inbound_ports {
            let _ = writeln!(
                doc,
                "-A {INBOUND_CHAIN} -p tcp -m tcp --dport {ports} -j {INBOUND_REDIRECT_CHAIN}"
            );
        }
    }
}

fn write_outbound(doc: &mut String, plan: &Plan, family: Family) {
    doc.push_str(
        "# Outbound: TCP the app opens lands on stitch's outbound port (REDIRECT to loopback).\n",
    );
    let _ = writeln!(
        doc,
        "-A {OUTPUT_REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {}",
        plan.outbound_port
    );
    doc.push_str(
        "# stitch's own connections (its upstream calls, and the inbound requests it hands to\n\
         # the app) go where they were addressed: redirecting them would loop.\n",
    );
    let _ = writeln!(
        doc,
        "-A {OUTPUT_CHAIN} -m owner --uid-owner {} -j RETURN",
        plan.proxy_uid
    );
    doc.push_str(
        "# Loopback (localhost, or the pod's own address) is the app talking to itself or to\n\
         # another container of the pod, not a hop between services.\n",
    );
    let _ = writeln!(doc, "-A {OUTPUT_CHAIN} -o lo -j RETURN");
    if !plan.skip_outbound_ports.is_empty() {
        doc.push_str("# --skip-outbound-ports: these leave the pod directly.\n");
        for ports in &plan.skip_outbound_ports {
            let _ = writeln!(
                doc,
                "-A {OUTPUT_CHAIN} -p tcp -m tcp --dport {ports} -j RETURN"
            );
        }
    }
    let cidrs: Vec<&Cidr> = plan
        .skip_outbound_cidrs
        .iter()
        .filter(|c| c.family() == family)
        .collect();
    if !cidrs.is_empty() {
        doc.push_str("# --skip-outbound-cidrs: these destinations are reached directly.\n");
        for cidr in cidrs {
            let _ = writeln!(doc, "-A {OUTPUT_CHAIN} -d {cidr} -j RETURN");
        }
    }
    let _ = writeln!(doc, "-A {OUTPUT_CHAIN} -p tcp -j {OUTPUT_REDIRECT_CHAIN}");
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
