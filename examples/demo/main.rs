//! `make demo`: an order chain on loopback — gateway → order → inventory and payment — each
//! service behind its own stitch in explicit mode, with the seams real chains suffer from: the
//! gateway and payment speak only W3C, order only a legacy `jd-trace-id` header (and drops the
//! context on its payment call), inventory only B3. Every stitch exports its spans over
//! OTLP/HTTP to the gateway stitch's admin server, whose `/traces` shows each order as one
//! trace. No root, no collector, no cluster. Ctrl-C stops everything.
//!
//! Usage: `cargo run --release --example demo -- [--base-port 17000] [--orders 5]
//! [--stitch PATH]` (the stitch binary defaults to the one next to this example's directory).

mod report;
mod services;

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use http::HeaderMap;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use services::{Ports, Service};

/// Command-line options (kept to three; everything else is fixed so the printout is stable).
#[derive(Debug)]
struct Options {
    base_port: u16,
    orders: usize,
    stitch: PathBuf,
}

fn options() -> Result<Options, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    // target/<profile>/examples/demo → target/<profile>/stitch
    let default_stitch = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("stitch"))
        .unwrap_or_else(|| PathBuf::from("stitch"));
    let mut options = Options {
        base_port: 17000,
        orders: 5,
        stitch: default_stitch,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--base-port" => {
                options.base_port = value.parse().map_err(|e| format!("{flag}: {e}"))?
            }
            "--orders" => options.orders = value.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--stitch" => options.stitch = PathBuf::from(value),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if options.base_port > 65535 - 40 {
        return Err("--base-port leaves no room for 4 services × 4 ports".into());
    }
    Ok(options)
}

/// One stitch process and where its log goes.
struct Sidecar {
    service: Service,
    child: Child,
    log: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !options.stitch.exists() {
        eprintln!(
            "demo: no stitch binary at {} (run `make demo`, or pass --stitch PATH)",
            options.stitch.display()
        );
        return ExitCode::FAILURE;
    }
    let ports = Ports::new(options.base_port);
    let dir = std::env::temp_dir().join(format!("stitch-demo-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("demo: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }

    let mut apps = Vec::new();
    for service in Service::ALL {
        match TcpListener::bind(ports.app(service)).await {
            Ok(l) => apps.push(tokio::spawn(services::serve(l, service, ports))),
            Err(e) => {
                eprintln!(
                    "demo: cannot listen on {} for {}: {e} (try --base-port)",
                    ports.app(service),
                    service.name()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let mut sidecars = Vec::new();
    for service in Service::ALL {
        match start_sidecar(&options.stitch, &dir, service, ports) {
            Ok(s) => sidecars.push(s),
            Err(e) => {
                eprintln!("demo: {e}");
                stop(&mut sidecars).await;
                return ExitCode::FAILURE;
            }
        }
    }

    let outcome = tokio::select! {
        r = run(&mut sidecars, ports, options.orders) => r,
        _ = stop_signal() => Ok(()),
    };
    let code = match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ndemo: {e}");
            ExitCode::FAILURE
        }
    };
    println!("\nstopping: SIGTERM to every stitch (they drain and flush their spans)…");
    stop(&mut sidecars).await;
    for app in apps {
        app.abort();
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("stopped.");
    code
}

/// Waits for the sidecars, sends the orders, prints where to look, then waits for Ctrl-C.
async fn run(sidecars: &mut [Sidecar], ports: Ports, orders: usize) -> Result<(), String> {
    wait_ready(sidecars, ports).await?;
    let collector = ports.admin(Service::Gateway);
    println!("order chain up: gateway → order → inventory + payment, each behind its own stitch");
    for service in Service::ALL {
        println!(
            "  {:<9} app {}  stitch inbound {}  outbound {}  admin {}",
            service.name(),
            ports.app(service),
            ports.inbound(service),
            ports.outbound(service),
            ports.admin(service)
        );
    }
    let entry = ports.inbound(Service::Gateway);
    println!("\nsending {orders} orders to the gateway (through its stitch at {entry})…");
    let mut traces = Vec::new();
    for n in 1..=orders {
        // Origin-form, like a browser talking to the gateway's address.
        let uri = format!("/checkout?order={n}");
        match services::get(entry, &uri, HeaderMap::new()).await {
            Ok((status, body)) => {
                println!("\norder {n}: {status}");
                for line in body.lines() {
                    println!("  {line}");
                }
                let (summary, trace_id) = report::same_trace(&body);
                println!("  → {summary}");
                traces.extend(trace_id.map(|id| (n, id)));
            }
            Err(e) => println!("\norder {n}: failed: {e}"),
        }
    }
    // Exporters batch; give them a moment before asking the collector.
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "\nthe collector ({collector}) has {}",
        report::collector_summary(collector).await
    );
    for (n, trace_id) in &traces {
        println!(
            "  order {n}: {}",
            report::trace_verdict(collector, trace_id).await
        );
    }
    println!("\nrepairs and translations (stitch_propagation_* counters, non-zero):");
    for service in Service::ALL {
        for line in report::propagation_metrics(ports.admin(service)).await {
            println!("  {:<9} {line}", service.name());
        }
    }
    println!("\nwhere to look (the gateway stitch's admin server collects every stitch's spans):");
    println!(
        "  http://{collector}/traces    in a browser: each order as one trace — its seams and its waterfall (click a row for the span)"
    );
    if let Some((n, trace_id)) = traces.first() {
        println!(
            "  http://{collector}/traces/{trace_id}#seams-{trace_id}    order {n}'s seam view: the dialect at each hop (jd template, B3) and the inferred parent"
        );
    }
    println!(
        "  http://{collector}/traces?broken=on    only traces whose chain broke (none, if every seam held)"
    );
    println!("  (curl gets /traces and /traces/ID as JSON)");
    for service in Service::ALL {
        println!(
            "  http://{}/health    {}'s propagation health: requests with and without context, repairs, orphans (raw: /metrics)",
            ports.admin(service),
            service.name()
        );
    }
    println!("  more traffic: curl http://{entry}/checkout");
    println!("  stitch logs: {}", log_dir(sidecars));
    println!("\nCtrl-C stops everything.");
    loop {
        for s in sidecars.iter_mut() {
            if let Ok(Some(status)) = s.child.try_wait() {
                return Err(format!(
                    "{}'s stitch exited ({status}); its log:\n{}",
                    s.service.name(),
                    tail(&s.log)
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn start_sidecar(
    stitch: &Path,
    dir: &Path,
    service: Service,
    ports: Ports,
) -> Result<Sidecar, String> {
    let name = service.name();
    let rules = dir.join(format!("{name}.yaml"));
    std::fs::write(&rules, service.rules()).map_err(|e| format!("{}: {e}", rules.display()))?;
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut cmd = Command::new(stitch);
    cmd.arg("run")
        .arg("--config")
        .arg(&rules)
        .args(["--service-name", name])
        .args(["--inbound-listen", &ports.inbound(service).to_string()])
        .args(["--inbound-target", &ports.app(service).to_string()])
        .args(["--outbound-listen", &ports.outbound(service).to_string()])
        .args(["--admin-listen", &ports.admin(service).to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .kill_on_drop(true);
    // Settings from the user's shell must not change or redirect the demo's stitches.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("OTEL_") || key.starts_with("STITCH_") {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd.env("RUST_LOG", "info")
        // Export small batches quickly so the traces show up while the user watches.
        .env("OTEL_BSP_SCHEDULE_DELAY", "500");
    // The collector keeps its own spans in its ring; the others send theirs to it.
    if service != Service::Gateway {
        cmd.env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{}", ports.admin(Service::Gateway)),
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", stitch.display()))?;
    Ok(Sidecar {
        service,
        child,
        log,
    })
}

async fn wait_ready(sidecars: &mut [Sidecar], ports: Ports) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for s in sidecars.iter_mut() {
        let admin = ports.admin(s.service);
        loop {
            if let Ok(Some(status)) = s.child.try_wait() {
                return Err(format!(
                    "{}'s stitch exited ({status}) during start-up; its log:\n{}",
                    s.service.name(),
                    tail(&s.log)
                ));
            }
            if let Ok((status, _)) = services::get(admin, "/ready", HeaderMap::new()).await
                && status.is_success()
            {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "{}'s stitch not ready after 20s; its log:\n{}",
                    s.service.name(),
                    tail(&s.log)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Ctrl-C (SIGINT) or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// SIGTERM (stitch drains and flushes), then SIGKILL for any still running after 10 s.
async fn stop(sidecars: &mut [Sidecar]) {
    for s in sidecars.iter() {
        if let Some(pid) = s
            .child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(id as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    for s in sidecars.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(10), s.child.wait())
            .await
            .is_err()
        {
            let _ = s.child.kill().await;
        }
    }
}

fn log_dir(sidecars: &[Sidecar]) -> String {
    sidecars
        .first()
        .and_then(|s| s.log.parent())
        .map(|d| format!("{}/*.log (removed on exit)", d.display()))
        .unwrap_or_default()
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
