//! Packet counters in the pod's `filter` table: the proof of which process opened which
//! connection to where, independent of anything stitch logs.
//!
//! `filter` runs after `nat`, so `OUTPUT` sees a redirected SYN with its new destination
//! (`127.0.0.1:4140`) and `INPUT` sees an inbound SYN after `PREROUTING` rewrote its port.
//! `-m owner` tells the app's sockets (UID 1000) from stitch's (UID 2102).

use super::topology::Netns;

/// One counting rule (no target: it only counts).
#[derive(Debug, Clone)]
pub struct Probe {
    /// How the scenarios refer to it.
    pub name: &'static str,
    /// `ip6tables` instead of `iptables`.
    pub v6: bool,
    /// `OUTPUT` (locally opened connections) or `INPUT` (arriving ones).
    pub chain: &'static str,
    /// The match, e.g. `-m owner --uid-owner 2102 -d 192.0.2.2 --dport 9000`.
    pub spec: String,
}

/// The probes installed in one namespace.
#[derive(Debug, Default)]
pub struct Probes {
    installed: Vec<Probe>,
}

fn tool(v6: bool) -> &'static str {
    if v6 { "ip6tables" } else { "iptables" }
}

impl Probes {
    /// Appends `probe` to the namespace's filter table; it counts TCP SYNs only.
    pub fn add(&mut self, ns: &Netns, probe: Probe) -> Result<(), String> {
        let mut args = vec![
            "-w",
            "-t",
            "filter",
            "-A",
            probe.chain,
            "-p",
            "tcp",
            "--syn",
        ];
        args.extend(probe.spec.split_whitespace());
        ns.exec(tool(probe.v6), &args)?;
        self.installed.push(probe);
        Ok(())
    }

    /// SYNs counted so far by the probe called `name`.
    pub fn count(&self, ns: &Netns, name: &str) -> Result<u64, String> {
        let probe = self
            .installed
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| format!("no probe {name}"))?;
        let index = self
            .installed
            .iter()
            .filter(|p| p.v6 == probe.v6 && p.chain == probe.chain)
            .position(|p| p.name == name)
            .expect("the probe is in its own list");
        let listing = ns.exec(
            tool(probe.v6),
            &["-w", "-t", "filter", "-L", probe.chain, "-n", "-v", "-x"],
        )?;
        // Two header lines ("Chain …", column titles), then the rules in order.
        let line = listing
            .lines()
            .nth(2 + index)
            .ok_or_else(|| format!("probe {name} missing from:\n{listing}"))?;
        line.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("no packet count in {line:?}"))
    }
}
