//! Commands the injected sidecar's lifecycle hooks run inside the stitch container (the image
//! has no shell, so no `curl` or `sleep`): both ask the sidecar's own admin server on loopback.
//!
//! - `stitch wait-ready` (classic-mode `postStart`): returns once `/ready` answers 200. The
//!   kubelet starts a pod's containers in order and waits for each `postStart` hook before
//!   starting the next, so the app, listed after stitch, starts only once stitch proxies.
//! - `stitch wait-drain` (classic-mode `preStop`): the kubelet runs a container's `preStop`
//!   before sending it SIGTERM, while the app is already getting its own SIGTERM. This keeps
//!   stitch fully serving while the app drains: it waits at least `--min-wait` (the app may
//!   still make calls while shutting down, and peers learn of the pod's end a little late),
//!   then until no client connection is open on either listener (`stitch_open_connections`),
//!   or until `--timeout`. Then stitch gets SIGTERM and drains what is left.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Flags of `stitch wait-ready`.
#[derive(Debug, clap::Args)]
pub struct WaitReadyArgs {
    /// The sidecar's admin server.
    #[arg(long, default_value = "127.0.0.1:4191")]
    admin: SocketAddr,
    /// Give up (and fail the hook, which restarts the container) after this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "120s")]
    timeout: Duration,
}

/// Flags of `stitch wait-drain`.
#[derive(Debug, clap::Args)]
pub struct WaitDrainArgs {
    /// The sidecar's admin server.
    #[arg(long, default_value = "127.0.0.1:4191")]
    admin: SocketAddr,
    /// Wait at least this long, connections or not.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    min_wait: Duration,
    /// Return after this long even with connections open (keep it below the pod's
    /// `terminationGracePeriodSeconds`; the injector leaves 5 seconds for stitch to flush).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "25s")]
    timeout: Duration,
}

/// How often the admin server is asked.
const POLL: Duration = Duration::from_millis(200);

/// Runs `stitch wait-ready`.
pub fn wait_ready(args: WaitReadyArgs) -> ExitCode {
    let deadline = Instant::now() + args.timeout;
    loop {
        if let Ok((200, _)) = get(args.admin, "/ready") {
            println!("stitch is ready");
            return ExitCode::SUCCESS;
        }
        if Instant::now() >= deadline {
            eprintln!("stitch was not ready within {:?}", args.timeout);
            return ExitCode::FAILURE;
        }
        std::thread::sleep(POLL);
    }
}

/// Runs `stitch wait-drain`; always succeeds (a failed `preStop` only adds an event).
pub fn wait_drain(args: WaitDrainArgs) -> ExitCode {
    let started = Instant::now();
    let min_until = started + args.min_wait.min(args.timeout);
    let deadline = started + args.timeout;
    loop {
        let open = match get(args.admin, "/metrics") {
            Ok((200, body)) => open_connections(&body),
            // stitch is gone or broken: nothing to wait for.
            _ => {
                println!("stitch's admin server does not answer; not waiting");
                return ExitCode::SUCCESS;
            }
        };
        let now = Instant::now();
        if now >= min_until && open == 0 {
            println!("no connections open after {:?}", now - started);
            return ExitCode::SUCCESS;
        }
        if now >= deadline {
            println!(
                "{open} connection(s) still open after {:?}; stopping anyway",
                args.timeout
            );
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(POLL);
    }
}

/// The sum of `stitch_open_connections` over both directions, from OpenMetrics text (no
/// series yet: no connection was ever opened).
fn open_connections(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("stitch_open_connections"))
        .filter(|rest| rest.starts_with('{') || rest.starts_with(' '))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v.max(0.0) as u64)
        .sum()
}

/// A minimal HTTP/1.0 GET on loopback: `(status, body)`.
fn get(admin: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&admin, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {admin}\r\n\r\n")?;
    let mut response = Vec::new();
    stream.take(4 * 1024 * 1024).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_connections_reads_both_directions() {
        let metrics = crate::telemetry::Metrics::new();
        let inbound = metrics.connection_opened(crate::direction::Direction::Inbound);
        let _outbound = metrics.connection_opened(crate::direction::Direction::Outbound);
        assert_eq!(open_connections(&metrics.encode()), 2);
        drop(inbound);
        assert_eq!(open_connections(&metrics.encode()), 1);
        assert_eq!(open_connections("# nothing here\n"), 0);
    }
}
