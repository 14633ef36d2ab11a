//! Transparent mode end to end, with real iptables in real network namespaces.
//!
//! A "pod" namespace runs stitch as UID 2102, an app server, and app clients as UID 1000,
//! with `stitch iptables` applied; a "peer" namespace on the other end of a veth pair runs
//! the servers the app calls and the clients that call the app. Counting rules in the pod's
//! `filter` table prove which process opened which connection (see `netns/probes.rs`).
//!
//! `netns/app_probe.rs` checks that kubelet probes rewritten by the Kubernetes injector tell
//! the truth about the app behind stitch; `netns/admin_access.rs` that the admin server's
//! data endpoints answer only inside the pod unless `--admin-expose-data` is set.
//!
//! Needs root, `ip` (iproute2), `nsenter` (util-linux) and iptables; without root or network
//! namespaces it prints why and skips. It has its own `main` (`harness = false`) because it
//! re-runs itself as the client helper: `netns __client MODE ADDR …`, started through
//! `nsenter --setuid` so the redirect rules see the app's UID.

// A test binary has no public API; `pub` only shares items between its modules.
#![allow(unreachable_pub)]

mod netns {
    pub mod admin_access;
    pub mod app_probe;
    pub mod bins;
    pub mod pod;
    pub mod probes;
    pub mod topology;
    pub mod wire;
}

use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;

use netns::pod::{
    self, ADMIN, APP_HTTP, APP_SKIPPED, APP_UID, PEER_BANNER, PEER_ECHO, PEER_HTTP, PEER_SKIPPED,
    Pod, args,
};
use netns::topology::{self, Netns, PEER_SKIPPED_V4, PEER_V4, PEER_V6, POD_V4, POD_V6, sock};
use netns::wire;

type Outcome = Result<(), String>;
/// An `Err` starting with this is a skip with a printed reason, not a failure.
const SKIP: &str = "SKIP: ";
/// A check run against the shared pod.
type PodCheck = (&'static str, fn(&mut Pod) -> Outcome);
/// A check that builds its own namespace.
type Standalone = (&'static str, fn() -> Outcome);

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Checks that share one pod (in this order: traffic first, cleanup last).
const POD_CHECKS: &[PodCheck] = &[
    ("inbound_http_reaches_the_app_through_stitch_ipv4", |p| {
        inbound_http(p, false)
    }),
    ("inbound_http_reaches_the_app_through_stitch_ipv6", |p| {
        inbound_http(p, true)
    }),
    ("outbound_http_reaches_the_original_destination_ipv4", |p| {
        outbound_http(p, false)
    }),
    ("outbound_http_reaches_the_original_destination_ipv6", |p| {
        outbound_http(p, true)
    }),
    (
        "stitch_writes_trace_context_both_ways",
        trace_context_both_ways,
    ),
    ("opaque_tcp_passes_untouched_through_stitch", opaque_tcp),
    (
        "a_tls_client_hello_reaches_the_peer_without_the_detect_timeout",
        tls_without_waiting,
    ),
    ("skipped_ports_and_cidrs_bypass_stitch", skipped_traffic),
    ("admin_port_is_never_redirected", admin_port),
    (
        "admin_data_endpoints_answer_loopback_only",
        netns::admin_access::data_stays_in_the_pod,
    ),
    ("stitch_own_connections_are_not_looped", not_looped),
    (
        "cleanup_removes_every_rule_and_traffic_flows_directly",
        cleanup,
    ),
];

/// Checks that each build their own namespace.
const STANDALONE: &[Standalone] = &[
    ("rerun_is_idempotent_with_nft", || idempotent("nft")),
    ("rerun_is_idempotent_with_legacy", || idempotent("legacy")),
    ("auto_mode_follows_the_backend_that_holds_rules", auto_mode),
    ("auto_mode_on_a_fresh_pod_uses_nft_only", auto_mode_fresh),
    ("no_ipv6_leaves_ip6tables_alone", no_ipv6),
    ("without_net_admin_it_fails_clearly", without_net_admin),
    ("dry_run_needs_no_privilege", dry_run),
    (
        "rewritten_kubelet_probes_follow_the_app_not_stitch",
        netns::app_probe::probes_follow_the_app,
    ),
    (
        "admin_expose_data_opens_the_data_endpoints",
        netns::admin_access::expose_data_opens_it,
    ),
];

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("__client") {
        return client_main(&argv[1..]);
    }
    let selection = Selection::parse(&argv);
    let selected = |name: &str| selection.selects(name);
    let names = POD_CHECKS
        .iter()
        .map(|(n, _)| *n)
        .chain(STANDALONE.iter().map(|(n, _)| *n));
    if argv.iter().any(|a| a == "--list") {
        for name in names.filter(|n| selected(n)) {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    if let Some(reason) = topology::skip_reason() {
        println!("\nSKIPPED the netns tests: {reason}\n");
        return ExitCode::SUCCESS;
    }
    topology::remove_stale_namespaces();
    if let Err(missing) = iptables_installed() {
        println!("\nthe netns tests need iptables: {missing} (apt-get install iptables)\n");
        return ExitCode::FAILURE;
    }

    let mut failed = Vec::new();
    let mut passed = 0;
    let pod_checks: Vec<_> = POD_CHECKS.iter().filter(|(n, _)| selected(n)).collect();
    if !pod_checks.is_empty() {
        match Pod::start() {
            Err(e) => {
                for (name, _) in &pod_checks {
                    report(
                        name,
                        &Err(format!("pod setup failed: {e}")),
                        &mut failed,
                        &mut passed,
                    );
                }
            }
            Ok(mut pod) => {
                let mut any_failed = false;
                for (name, check) in &pod_checks {
                    let outcome = guarded(|| check(&mut pod));
                    any_failed |= outcome.is_err();
                    report(name, &outcome, &mut failed, &mut passed);
                }
                if any_failed {
                    println!(
                        "---- stitch's log (last lines) ----\n{}\n----",
                        pod.stitch_log()
                    );
                }
            }
        }
    }
    for (name, check) in STANDALONE.iter().filter(|(n, _)| selected(n)) {
        report(name, &guarded(check), &mut failed, &mut passed);
    }
    netns::bins::remove();
    println!(
        "\nnetns test result: {}. {passed} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len()
    );
    for (name, why) in &failed {
        println!("  {name}: {why}");
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// libtest's name filters (`FILTER…`, `--exact`, `--skip FILTER`); its other flags are
/// accepted and ignored so `cargo test -- --nocapture` and friends keep working.
#[derive(Debug, Default)]
struct Selection {
    filters: Vec<String>,
    skips: Vec<String>,
    exact: bool,
}

impl Selection {
    fn parse(argv: &[String]) -> Self {
        let mut selection = Selection::default();
        let mut words = argv.iter();
        while let Some(word) = words.next() {
            match word.as_str() {
                "--exact" => selection.exact = true,
                "--skip" => selection.skips.extend(words.next().cloned()),
                "--test-threads" | "--format" | "--color" | "--logfile" | "-Z" => {
                    words.next();
                }
                flag if flag.starts_with('-') => {}
                filter => selection.filters.push(filter.to_owned()),
            }
        }
        selection
    }

    fn selects(&self, name: &str) -> bool {
        let hit = |f: &String| {
            if self.exact {
                name == f
            } else {
                name.contains(f.as_str())
            }
        };
        (self.filters.is_empty() || self.filters.iter().any(hit))
            && !self.skips.iter().any(|s| name.contains(s.as_str()))
    }
}

fn guarded(check: impl FnOnce() -> Outcome) -> Outcome {
    catch_unwind(AssertUnwindSafe(check)).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        Err(format!("panicked: {msg}"))
    })
}

fn report(name: &str, outcome: &Outcome, failed: &mut Vec<(String, String)>, passed: &mut usize) {
    match outcome {
        Ok(()) => {
            println!("test {name} ... ok");
            *passed += 1;
        }
        Err(why) if why.starts_with(SKIP) => {
            println!("test {name} ... skipped: {}", &why[SKIP.len()..]);
        }
        Err(why) => {
            println!("test {name} ... FAILED\n    {why}");
            failed.push((name.to_owned(), why.clone()));
        }
    }
}

fn iptables_installed() -> Result<(), String> {
    for tool in [
        "iptables",
        "ip6tables",
        "iptables-nft-save",
        "iptables-legacy-save",
    ] {
        topology::run(tool, &["--version"]).map_err(|_| format!("`{tool}` not found"))?;
    }
    Ok(())
}

// ---------------------------------------------------------------- the client helper

/// `__client http ADDR PATH [HEADER…]` prints `STATUS BODY`; `echo ADDR HEX` and
/// `banner ADDR HEX` print what came back as hex; `read ADDR` prints what the server sent;
/// `tls-hello ADDR` sends a TLS ClientHello to an echo server and prints `MILLIS HEX`.
fn client_main(argv: &[String]) -> ExitCode {
    let result = (|| -> Result<String, String> {
        let mode = argv.first().ok_or("no mode")?;
        let addr: SocketAddr = argv
            .get(1)
            .ok_or("no address")?
            .parse()
            .map_err(|e| format!("address: {e}"))?;
        let io = |e: std::io::Error| format!("{mode} {addr}: {e}");
        match mode.as_str() {
            "http" => {
                let path = argv.get(2).map(String::as_str).unwrap_or("/");
                let (status, body) =
                    wire::http_get(addr, path, &argv[3.min(argv.len())..]).map_err(io)?;
                Ok(format!("{status} {body}"))
            }
            "echo" | "banner" => {
                let bytes = from_hex(argv.get(2).ok_or("no payload")?)?;
                let back = if mode == "echo" {
                    wire::exchange(addr, &bytes)
                } else {
                    wire::banner_exchange(addr, &bytes)
                };
                Ok(to_hex(&back.map_err(io)?))
            }
            "read" => {
                let back = wire::exchange(addr, b"").map_err(io)?;
                Ok(String::from_utf8_lossy(&back).into_owned())
            }
            "tls-hello" => {
                let hello = wire::client_hello();
                let (back, took) = wire::first_flight(addr, &hello).map_err(io)?;
                if back != hello {
                    return Err(format!(
                        "the ClientHello came back changed: {}",
                        to_hex(&back)
                    ));
                }
                Ok(format!("{} {}", took.as_millis(), to_hex(&back)))
            }
            other => Err(format!("unknown mode {other}")),
        }
    })();
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(hex: &str) -> Result<Vec<u8>, String> {
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad hex {hex}"))
        })
        .collect()
}

// ---------------------------------------------------------------- pod checks

const CALLER_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN_ID: &str = "00f067aa0ba902b7";

fn caller_traceparent() -> String {
    format!("traceparent: 00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01")
}

fn seen(log: &wire::Log, path: &str) -> Vec<wire::Seen> {
    log.lock()
        .map(|l| l.iter().filter(|s| s.path == path).cloned().collect())
        .unwrap_or_default()
}

/// A peer calls the app's address; the redirect sends it to stitch, which hands it to the app.
fn inbound_http(pod: &mut Pod, v6: bool) -> Outcome {
    let (target, path, pod_ip, peer_ip): (_, _, IpAddr, IpAddr) = if v6 {
        (
            sock(POD_V6, APP_HTTP),
            "/in-v6",
            POD_V6.into(),
            PEER_V6.into(),
        )
    } else {
        (
            sock(POD_V4, APP_HTTP),
            "/in-v4",
            POD_V4.into(),
            PEER_V4.into(),
        )
    };
    let headers = vec![caller_traceparent()];
    let reply = pod
        .topo
        .peer
        .within(move || wire::http_get(target, path, &headers))?
        .map_err(|e| format!("peer → app {target}: {e}"))?;
    ensure!(reply == (200, "app".to_owned()), "peer got {reply:?}");
    let family = if v6 { "v6" } else { "v4" };
    let redirected = pod.count(&format!("inbound_redirected_{family}"))?;
    ensure!(
        redirected >= 1,
        "the SYN to the app's port was not redirected to 4143"
    );
    let forwarded = pod.count(&format!("stitch_to_app_{family}"))?;
    ensure!(
        forwarded >= 1,
        "stitch (uid 2102) never connected to the app at {target}"
    );
    let requests = seen(&pod.app, path);
    ensure!(
        requests.len() == 1,
        "the app saw {} requests for {path}",
        requests.len()
    );
    let from = requests[0].peer.ip();
    ensure!(
        from == pod_ip && from != peer_ip,
        "the app saw the connection from {from}: expected stitch inside the pod ({pod_ip}), not the peer"
    );
    Ok(())
}

/// The app calls the peer's address; stitch receives it on the outbound port and connects to
/// the original destination it read back from the socket.
fn outbound_http(pod: &mut Pod, v6: bool) -> Outcome {
    let (target, path, family) = if v6 {
        (sock(PEER_V6, PEER_HTTP), "/out-v6", "v6")
    } else {
        (sock(PEER_V4, PEER_HTTP), "/out-v4", "v4")
    };
    let reply = pod.app_client(&args(&["http", &target.to_string(), path]))?;
    ensure!(reply == "200 peer", "the app got {reply:?} from {target}");
    ensure!(
        pod.count(&format!("app_to_outbound_{family}"))? >= 1,
        "the app's connection was not redirected to stitch's outbound port"
    );
    ensure!(
        pod.count(&format!("stitch_to_peer_http_{family}"))? >= 1,
        "stitch (uid 2102) never connected to the original destination {target}"
    );
    if !v6 {
        ensure!(
            pod.count("app_direct_peer_http_v4")? == 0,
            "the app reached the peer directly, bypassing stitch"
        );
    }
    let requests = seen(&pod.peer_http, path);
    ensure!(
        requests.len() == 1,
        "the peer saw {} requests for {path}",
        requests.len()
    );
    Ok(())
}

/// With the trace layer in place, the app sees stitch's server span as its parent, and the
/// peer sees a context even though the app sent none.
fn trace_context_both_ways(pod: &mut Pod) -> Outcome {
    let app_saw = seen(&pod.app, "/in-v4");
    let inbound = app_saw
        .first()
        .and_then(|s| s.header("traceparent"))
        .ok_or("the app saw no traceparent on /in-v4")?;
    let parts: Vec<&str> = inbound.split('-').collect();
    ensure!(parts.len() == 4, "malformed traceparent {inbound:?}");
    ensure!(
        parts[1] == CALLER_TRACE_ID,
        "the trace id changed: {inbound}"
    );
    ensure!(
        parts[2] != CALLER_SPAN_ID,
        "the app's parent is still the caller's span ({inbound}): no server span in between"
    );
    let peer_saw = seen(&pod.peer_http, "/out-v4");
    let outbound = peer_saw.first().and_then(|s| s.header("traceparent"));
    ensure!(
        outbound.is_some_and(|t| t.len() == 55 && t.starts_with("00-")),
        "the peer saw no valid traceparent on the app's context-less call: {outbound:?}"
    );
    Ok(())
}

/// Bytes that are not HTTP come back exactly, whoever speaks first, and went through stitch.
fn opaque_tcp(pod: &mut Pod) -> Outcome {
    let payload: Vec<u8> = b"\x00\x01\x02stitch opaque \xff\xfe\r\n\r\nGET / HTTP/1.1\r\n"
        .iter()
        .copied()
        .chain(0..=255u8)
        .collect();
    let hex = to_hex(&payload);
    let echo = sock(PEER_V4, PEER_ECHO).to_string();
    let back = pod.app_client(&args(&["echo", &echo, &hex]))?;
    ensure!(
        back == hex,
        "client-first opaque bytes changed:\n sent {hex}\n  got {back}"
    );
    ensure!(
        pod.count("stitch_to_peer_echo_v4")? >= 1,
        "the opaque connection did not go through stitch"
    );
    let banner = sock(PEER_V4, PEER_BANNER).to_string();
    let back = pod.app_client(&args(&["banner", &banner, &to_hex(b"ping\n")]))?;
    let expected = to_hex(format!("{}ping\n", wire::BANNER).as_bytes());
    ensure!(
        back == expected,
        "server-first exchange changed: got {back}, want {expected}"
    );
    ensure!(
        pod.count("stitch_to_peer_banner_v4")? >= 1,
        "the server-first connection did not go through stitch"
    );
    Ok(())
}

/// An HTTPS client's first flight through the transparent outbound path reaches the peer at
/// once: its first byte (`0x16`) cannot be HTTP, so detection does not wait for the pod's
/// 5 s `--detect-timeout` ([`pod::DETECT_TIMEOUT`]).
fn tls_without_waiting(pod: &mut Pod) -> Outcome {
    let through_stitch = pod.count("stitch_to_peer_echo_v4")?;
    let echo = sock(PEER_V4, PEER_ECHO).to_string();
    let reply = pod.app_client(&args(&["tls-hello", &echo]))?;
    let millis: u64 = reply
        .split(' ')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("the client said {reply:?}"))?;
    // A generous bound, half the detect timeout: it only tells deciding on the first byte
    // from waiting the timeout out.
    ensure!(
        millis < 2500,
        "the ClientHello took {millis} ms to come back (detect timeout {:?})",
        pod::DETECT_TIMEOUT
    );
    ensure!(
        pod.count("stitch_to_peer_echo_v4")? > through_stitch,
        "the TLS connection did not go through stitch"
    );
    Ok(())
}

/// `--skip-inbound-ports`, `--skip-outbound-ports` and `--skip-outbound-cidrs` take effect.
fn skipped_traffic(pod: &mut Pod) -> Outcome {
    let whoami = sock(POD_V4, APP_SKIPPED);
    let seen_as = pod
        .topo
        .peer
        .within(move || wire::exchange(whoami, b""))?
        .map_err(|e| format!("peer → skipped app port: {e}"))?;
    let seen_as = String::from_utf8_lossy(&seen_as).into_owned();
    let seen_ip = seen_as
        .parse::<SocketAddr>()
        .map(|a| a.ip())
        .map_err(|e| format!("whoami said {seen_as:?}: {e}"))?;
    ensure!(
        seen_ip == PEER_V4,
        "the app saw {seen_ip} on a skipped inbound port: expected the peer's own address"
    );
    ensure!(
        pod.count("inbound_skipped_direct_v4")? >= 1,
        "the skipped inbound SYN was redirected"
    );

    let skipped = sock(PEER_V4, PEER_SKIPPED).to_string();
    let back = pod.app_client(&args(&["echo", &skipped, &to_hex(b"direct")]))?;
    ensure!(
        back == to_hex(b"direct"),
        "skipped-port echo returned {back}"
    );
    ensure!(
        pod.count("app_direct_skipped_port_v4")? >= 1,
        "the app did not connect directly"
    );
    ensure!(
        pod.count("stitch_to_skipped_port_v4")? == 0,
        "stitch handled a skipped port"
    );

    let in_cidr = sock(PEER_SKIPPED_V4, PEER_HTTP).to_string();
    let reply = pod.app_client(&args(&["http", &in_cidr, "/cidr"]))?;
    ensure!(reply == "200 peer", "skipped-CIDR call got {reply:?}");
    ensure!(
        pod.count("app_direct_skipped_cidr_v4")? >= 1,
        "the app did not connect directly"
    );
    ensure!(
        pod.count("stitch_to_skipped_cidr_v4")? == 0,
        "stitch handled a skipped CIDR"
    );
    Ok(())
}

/// The admin port answers from outside the pod without passing the inbound redirect.
fn admin_port(pod: &mut Pod) -> Outcome {
    let admin = sock(POD_V4, ADMIN);
    let reply = pod
        .topo
        .peer
        .within(move || wire::http_get(admin, "/live", &[]))?
        .map_err(|e| format!("peer → admin: {e}"))?;
    ensure!(reply.0 == 200, "admin /live answered {reply:?}");
    ensure!(
        pod.count("inbound_admin_direct_v4")? >= 1,
        "the admin SYN was rewritten"
    );
    ensure!(
        pod.count("stitch_to_admin_v4")? == 0,
        "the admin connection went through stitch"
    );
    Ok(())
}

/// After all that traffic stitch never connected to its own listeners and is still serving.
fn not_looped(pod: &mut Pod) -> Outcome {
    for family in ["v4", "v6"] {
        let loops = pod.count(&format!("stitch_to_itself_{family}"))?;
        ensure!(
            loops == 0,
            "stitch opened {loops} connections to its own ports ({family})"
        );
    }
    for path in ["/out-v4", "/out-v6"] {
        let n = seen(&pod.peer_http, path).len();
        ensure!(n == 1, "the peer saw {path} {n} times");
    }
    ensure!(pod.stitch_alive(), "stitch exited");
    Ok(())
}

/// `--cleanup` leaves no STITCH chain in any backend or family, and traffic flows directly.
fn cleanup(pod: &mut Pod) -> Outcome {
    let out = pod::stitch_iptables(&pod.topo.pod, None, &["--cleanup"]);
    ensure!(
        out.status.success(),
        "--cleanup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    no_stitch_rules(&pod.topo.pod)?;
    let target = sock(PEER_V4, PEER_HTTP).to_string();
    let reply = pod.app_client(&args(&["http", &target, "/after-cleanup"]))?;
    ensure!(reply == "200 peer", "after cleanup the app got {reply:?}");
    ensure!(
        pod.count("app_direct_peer_http_v4")? >= 1,
        "after cleanup the app's call still did not go directly"
    );
    Ok(())
}

fn saved(ns: &Netns, tool: &str) -> Result<String, String> {
    Ok(ns
        .exec(tool, &[])?
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect())
}

const SAVE_TOOLS: [&str; 4] = [
    "iptables-nft-save",
    "iptables-legacy-save",
    "ip6tables-nft-save",
    "ip6tables-legacy-save",
];

fn no_stitch_rules(ns: &Netns) -> Outcome {
    for tool in SAVE_TOOLS {
        let text = saved(ns, tool)?;
        ensure!(
            !text.contains("STITCH"),
            "{tool} still shows stitch rules:\n{text}"
        );
    }
    Ok(())
}

fn stitch_lines(text: &str) -> usize {
    text.lines().filter(|l| l.contains("STITCH")).count()
}

// ---------------------------------------------------------------- standalone checks

fn ok_or_stderr(out: &std::process::Output, what: &str) -> Outcome {
    ensure!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Kernels built without x_tables (nft only) cannot run the legacy backend at all.
fn legacy_works(ns: &Netns) -> Outcome {
    ns.exec("iptables-legacy", &["-w", "-t", "nat", "-L", "-n"])
        .map(drop)
        .map_err(|e| format!("{SKIP}this kernel cannot run legacy iptables: {e}"))
}

/// Running twice leaves exactly the tables one run leaves; cleanup removes all of it.
fn idempotent(mode: &str) -> Outcome {
    let ns = Netns::create("idem")?;
    if mode == "legacy" {
        legacy_works(&ns)?;
    }
    let flags = [
        "--mode",
        mode,
        "--skip-outbound-cidrs",
        "10.0.0.0/8,fd00::/8",
    ];
    ok_or_stderr(&pod::stitch_iptables(&ns, None, &flags), "first run")?;
    let (v4, v6) = (
        saved(&ns, &format!("iptables-{mode}-save"))?,
        saved(&ns, &format!("ip6tables-{mode}-save"))?,
    );
    // 4 chains, 8 rules (one CIDR each), 2 hooks.
    ensure!(stitch_lines(&v4) == 14, "IPv4 after one run:\n{v4}");
    ensure!(stitch_lines(&v6) == 14, "IPv6 after one run:\n{v6}");
    ensure!(
        v4.contains("-d 10.0.0.0/8 -j RETURN") && !v4.contains("fd00::"),
        "{v4}"
    );
    ok_or_stderr(&pod::stitch_iptables(&ns, None, &flags), "second run")?;
    let again = saved(&ns, &format!("iptables-{mode}-save"))?;
    ensure!(
        again == v4,
        "a second run changed the tables:\n{v4}\n----\n{again}"
    );
    ensure!(
        saved(&ns, &format!("ip6tables-{mode}-save"))? == v6,
        "a second run changed IPv6"
    );
    ok_or_stderr(
        &pod::stitch_iptables(&ns, None, &["--mode", mode, "--cleanup"]),
        "cleanup",
    )?;
    no_stitch_rules(&ns)
}

/// With rules only in the legacy tables, auto writes there (and cleans up there).
fn auto_mode() -> Outcome {
    let ns = Netns::create("auto")?;
    legacy_works(&ns)?;
    ns.exec(
        "iptables-legacy",
        &["-A", "INPUT", "-p", "tcp", "--dport", "1", "-j", "ACCEPT"],
    )?;
    ok_or_stderr(&pod::stitch_iptables(&ns, None, &[]), "auto run")?;
    let legacy = saved(&ns, "iptables-legacy-save")?;
    let nft = saved(&ns, "iptables-nft-save")?;
    ensure!(
        stitch_lines(&legacy) > 0,
        "auto did not use legacy:\n{legacy}"
    );
    ensure!(stitch_lines(&nft) == 0, "auto wrote to nft as well:\n{nft}");
    ok_or_stderr(
        &pod::stitch_iptables(&ns, None, &["--cleanup"]),
        "auto cleanup",
    )?;
    no_stitch_rules(&ns)
}

/// A fresh pod gets nf_tables rules, and looking at legacy does not load legacy tables there.
fn auto_mode_fresh() -> Outcome {
    let ns = Netns::create("fresh")?;
    ok_or_stderr(&pod::stitch_iptables(&ns, None, &[]), "auto run")?;
    ensure!(
        stitch_lines(&saved(&ns, "iptables-nft-save")?) > 0,
        "no nft rules"
    );
    ensure!(
        stitch_lines(&saved(&ns, "ip6tables-nft-save")?) > 0,
        "no nft IPv6 rules"
    );
    for tool in ["iptables-legacy-save", "ip6tables-legacy-save"] {
        let text = saved(&ns, tool)?;
        ensure!(text.trim().is_empty(), "{tool} shows tables:\n{text}");
    }
    Ok(())
}

fn no_ipv6() -> Outcome {
    let ns = Netns::create("nov6")?;
    ok_or_stderr(
        &pod::stitch_iptables(&ns, None, &["--no-ipv6", "--mode", "nft"]),
        "run",
    )?;
    ensure!(
        stitch_lines(&saved(&ns, "iptables-nft-save")?) > 0,
        "no IPv4 rules"
    );
    ensure!(
        stitch_lines(&saved(&ns, "ip6tables-nft-save")?) == 0,
        "IPv6 was touched"
    );
    Ok(())
}

fn without_net_admin() -> Outcome {
    let ns = Netns::create("nocap")?;
    let out = pod::stitch_iptables(&ns, Some(APP_UID), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "succeeded without NET_ADMIN");
    ensure!(
        stderr.contains("NET_ADMIN"),
        "the error does not name NET_ADMIN: {stderr}"
    );
    no_stitch_rules(&ns)
}

fn dry_run() -> Outcome {
    let ns = Netns::create("dry")?;
    let flags = ["--dry-run", "--skip-outbound-cidrs", "10.0.0.0/8,fd00::/8"];
    let out = pod::stitch_iptables(&ns, Some(APP_UID), &flags);
    ok_or_stderr(&out, "dry run")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        stdout.matches("*nat\n").count() == 2,
        "expected IPv4 and IPv6 documents:\n{stdout}"
    );
    ensure!(
        stdout.contains("-A STITCH_OUTPUT -d 10.0.0.0/8 -j RETURN"),
        "{stdout}"
    );
    ensure!(
        stdout.contains("-A STITCH_OUTPUT -d fd00::/8 -j RETURN"),
        "{stdout}"
    );
    no_stitch_rules(&ns)
}
