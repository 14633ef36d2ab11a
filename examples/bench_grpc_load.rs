//! A closed-loop gRPC load client for the benchmark (tonic, raw-bytes messages; see
//! `bench_backend`). `unary` mode: each worker calls `/bench.Echo/Unary` back to back.
//! `stream` mode: each worker keeps one bidirectional stream open and ping-pongs messages on it,
//! so the figure is messages per second through a long-lived stream.
//!
//! Runs for a fixed time and prints one JSON line:
//! `{"mode":"unary","requests":N,"errors":E,"seconds":S,"rps":R,"p50_us":..,"p99_us":..,"p999_us":..}`
//!
//! Usage: `bench_grpc_load URL unary|stream [seconds=3] [workers=32] [connections=2]`

#[path = "bench_common/raw_codec.rs"]
mod raw_codec;

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::SinkExt;
use http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use raw_codec::{RawCodec, STREAM_PATH, UNARY_PATH};

/// Requests before this much time has passed are not counted: connections and pools warm up.
const WARMUP: Duration = Duration::from_millis(300);
/// A call slower than this counts as an error, so a stuck proxy cannot hang the benchmark.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const PAYLOAD: &[u8] = &[7u8; 64];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Unary,
    Stream,
}

/// What one worker saw inside the measured window.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: bench_grpc_load URL unary|stream [seconds] [workers] [connections]";
    let url = args.first().ok_or(usage)?.clone();
    let mode = match args.get(1).map(String::as_str) {
        Some("unary") => Mode::Unary,
        Some("stream") => Mode::Stream,
        _ => return Err(usage.into()),
    };
    let seconds: f64 = args.get(2).map_or(Ok(3.0), |s| s.parse())?;
    let workers: usize = args.get(3).map_or(Ok(32), |s| s.parse())?;
    let connections: usize = args.get(4).map_or(Ok(2), |s| s.parse())?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(
            url,
            mode,
            Duration::from_secs_f64(seconds),
            workers,
            connections,
        ))
}

async fn run(
    url: String,
    mode: Mode,
    measure: Duration,
    workers: usize,
    connections: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut channels = Vec::new();
    for _ in 0..connections.max(1) {
        let channel = Endpoint::from_shared(url.clone())?
            .tcp_nodelay(true)
            .connect_timeout(CALL_TIMEOUT)
            .connect()
            .await?;
        channels.push(channel);
    }
    let start = Instant::now() + WARMUP;
    let end = start + measure;
    let mut tasks = Vec::new();
    for i in 0..workers.max(1) {
        let channel = channels[i % channels.len()].clone();
        tasks.push(tokio::spawn(async move {
            match mode {
                Mode::Unary => unary_worker(channel, start, end).await,
                Mode::Stream => stream_worker(channel, start, end).await,
            }
        }));
    }
    let mut all = Tally::default();
    for task in tasks {
        let tally = task.await?;
        all.latencies_us.extend(tally.latencies_us);
        all.errors += tally.errors;
    }
    report(mode, all, measure);
    Ok(())
}

async fn unary_worker(channel: Channel, start: Instant, end: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut client = tonic::client::Grpc::new(channel);
    let payload = Bytes::from_static(PAYLOAD);
    loop {
        let sent = Instant::now();
        if sent >= end {
            return tally;
        }
        let call = async {
            client.ready().await.map_err(|e| e.to_string())?;
            client
                .unary::<Bytes, Bytes, _>(
                    tonic::Request::new(payload.clone()),
                    PathAndQuery::from_static(UNARY_PATH),
                    RawCodec,
                )
                .await
                .map_err(|e| e.to_string())
        };
        let ok = matches!(tokio::time::timeout(CALL_TIMEOUT, call).await, Ok(Ok(_)));
        record(&mut tally, sent, start, ok);
    }
}

async fn stream_worker(channel: Channel, start: Instant, end: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut client = tonic::client::Grpc::new(channel);
    let payload = Bytes::from_static(PAYLOAD);
    let (mut tx, rx) = futures::channel::mpsc::channel::<Bytes>(1);
    // Queue the first message before the call, so nothing waits on response headers a proxy
    // might hold until the first message arrives.
    let mut sent = Instant::now();
    if tx.try_send(payload.clone()).is_err() || client.ready().await.is_err() {
        tally.errors += 1;
        return tally;
    }
    let opened = client
        .streaming::<_, Bytes, Bytes, _>(
            tonic::Request::new(rx),
            PathAndQuery::from_static(STREAM_PATH),
            RawCodec,
        )
        .await;
    let mut inbound = match opened {
        Ok(resp) => resp.into_inner(),
        Err(_) => {
            tally.errors += 1;
            return tally;
        }
    };
    loop {
        let echoed = tokio::time::timeout(CALL_TIMEOUT, inbound.message()).await;
        let ok = matches!(echoed, Ok(Ok(Some(_))));
        record(&mut tally, sent, start, ok);
        if !ok {
            return tally;
        }
        sent = Instant::now();
        if sent >= end || tx.send(payload.clone()).await.is_err() {
            return tally;
        }
    }
}

fn record(tally: &mut Tally, sent: Instant, start: Instant, ok: bool) {
    if sent < start {
        return;
    }
    if ok {
        let us = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        tally.latencies_us.push(us);
    } else {
        tally.errors += 1;
    }
}

fn report(mode: Mode, mut tally: Tally, measure: Duration) {
    tally.latencies_us.sort_unstable();
    let pct = |p: f64| -> u32 {
        if tally.latencies_us.is_empty() {
            return 0;
        }
        let idx = ((tally.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        tally.latencies_us[idx]
    };
    let requests = tally.latencies_us.len();
    let seconds = measure.as_secs_f64();
    println!(
        "{{\"mode\":\"{}\",\"requests\":{},\"errors\":{},\"seconds\":{:.3},\"rps\":{:.1},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{}}}",
        if mode == Mode::Unary {
            "unary"
        } else {
            "stream"
        },
        requests,
        tally.errors,
        seconds,
        requests as f64 / seconds,
        pct(0.50),
        pct(0.99),
        pct(0.999),
    );
}
