//! The traffic of `make soak` (driven by `scripts/bench/soak.py`): a backend that speaks every
//! protocol the soak sends, and a load generator that sends a steady mix of them through one
//! stitch for as long as asked, checking every answer.
//!
//! ```text
//! soak backend 127.0.0.1:PORT
//!     HTTP/1.1, h2c, gRPC (raw echo), WebSocket echo and, for connections whose first byte is
//!     0x00, an opaque TCP echo; counts the `traceparent` stitch wrote on every request
//!     (GET /soak-stats, asked directly, reports the counts as JSON).
//! soak load INBOUND OUTBOUND BACKEND SECONDS [RATE_SCALE]
//!     the mix through stitch's inbound listener (and its outbound listener as an HTTP proxy
//!     for absolute-form requests to BACKEND); prints a JSON line of cumulative counts every
//!     5 s and a last one with "done": true.
//! ```
//!
//! Every request but the malformed-header ones carries a sampled W3C parent whose span id is
//! [`CLIENT_SPAN_ID`]: the backend then tells whether stitch wrote a span of its own (a new
//! span id) and whether it sampled it, which is how the soak checks that every sampled span
//! was exported or counted as dropped.

#[path = "../bench_common/grpc_echo.rs"]
mod grpc_echo;
#[path = "../bench_common/raw_codec.rs"]
mod raw_codec;

mod backend;
mod load;
mod sessions;
mod tally;

use std::net::SocketAddr;
use std::time::Duration;

/// The span id every well-formed request of the load generator carries as its parent.
pub(crate) const CLIENT_SPAN_ID: &str = "00f067aa0ba902b7";
/// The body the backend answers plain requests with.
pub(crate) const OK_BODY: &[u8] = b"soak ok\n";
/// How often the load generator reports.
const REPORT_EVERY: Duration = Duration::from_secs(5);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        "usage: soak backend ADDR | soak load INBOUND OUTBOUND BACKEND SECONDS [RATE_SCALE]";
    let addr = |i: usize| -> Result<SocketAddr, Box<dyn std::error::Error>> {
        Ok(args.get(i).ok_or(usage)?.parse()?)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.first().map(String::as_str) {
        Some("backend") => runtime.block_on(backend::serve(addr(1)?))?,
        Some("load") => {
            let targets = load::Targets {
                inbound: addr(1)?,
                outbound: addr(2)?,
                backend: addr(3)?,
            };
            let seconds: f64 = args.get(4).ok_or(usage)?.parse()?;
            let scale: f64 = args.get(5).map_or(Ok(1.0), |s| s.parse())?;
            runtime.block_on(load::run(
                targets,
                Duration::from_secs_f64(seconds),
                scale,
                REPORT_EVERY,
            ));
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
