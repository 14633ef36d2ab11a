//! The admin server is guarded like a public server: a gzip bomb to `/v1/traces` gets `413`
//! without costing memory, a crowd of idle connections cannot lock out `/ready` or the proxy
//! (the idlest connection makes room at the cap; silent ones time out), and running out of
//! file descriptors makes accept back off instead of spinning. Who may call which endpoint is
//! checked from another network namespace in `tests/netns/admin_access.rs`.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use http::StatusCode;
use stitch::admin::{AdminLimits, AdminState};
use tokio::net::TcpStream;

use crate::support::metrics::{metric, scrape};
use crate::support::process::spawn_stitch;
use crate::support::tcp::echo_server;
use crate::support::telemetry::{admin, chain, otlp_request};
use crate::support::upstream::HttpUpstream;
use crate::support::wire::{Wire, roundtrip};
use crate::support::{connect, fetch, http_request, within};

/// `data` gzip-compressed.
fn gzip(chunks: impl Iterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for chunk in chunks {
        enc.write_all(&chunk).expect("compress");
    }
    enc.finish().expect("compress")
}

async fn post_gzip(admin: SocketAddr, body: Vec<u8>) -> StatusCode {
    let headers = [
        ("content-type", "application/x-protobuf"),
        ("content-encoding", "gzip"),
    ];
    http_request(admin, "POST", "/v1/traces", &headers, body)
        .await
        .0
}

#[tokio::test]
async fn a_gzip_bomb_gets_413_and_leaves_peak_rss_where_it_was() {
    let up = HttpUpstream::start().await;
    let stitch = spawn_stitch(up.addr, &[]).await;
    let c = chain(7);
    let valid = gzip(std::iter::once(prost::Message::encode_to_vec(
        &otlp_request("svc", &[&c.a_in, &c.a_out]),
    )));
    // Warm up the path a bomb takes (connection, body collection, inflater) with real spans.
    for _ in 0..3 {
        assert_eq!(post_gzip(stitch.admin, valid.clone()).await, StatusCode::OK);
    }
    // 256 MiB of zeros in about 256 KiB: 64 times the 4 MiB limit.
    let bomb = gzip((0..256).map(|_| vec![0u8; 1024 * 1024]));
    assert!(bomb.len() < 512 * 1024, "bomb of {} bytes", bomb.len());
    // Collecting a compressed body as large as the bomb legitimately costs memory (the body and
    // its buffer growth, up to ~1 MiB): warm that up too with a body of the bomb's compressed
    // size that inflates to less than the limit (not protobuf: refused after inflating), so
    // the peak below measures only what inflating the bomb costs.
    let mut noise = 0x9E37_79B9_7F4A_7C15u64;
    let incompressible: Vec<u8> = (0..bomb.len())
        .map(|_| {
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            noise as u8
        })
        .collect();
    let same_size = gzip(std::iter::once(incompressible));
    assert!(
        same_size.len() >= bomb.len(),
        "warm-up body as large as the bomb"
    );
    for _ in 0..3 {
        assert_ne!(
            post_gzip(stitch.admin, same_size.clone()).await,
            StatusCode::OK
        );
    }
    let rejected_before = metric(
        &scrape(stitch.admin).await,
        "stitch_otlp_rejected_requests_total",
        &[],
    );
    let before = stitch.peak_rss_kib();
    for _ in 0..3 {
        assert_eq!(
            post_gzip(stitch.admin, bomb.clone()).await,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
    let after = stitch.peak_rss_kib();
    // Inflating up to the limit into memory would raise the peak by 4 MiB or more.
    assert!(
        after.saturating_sub(before) < 1024,
        "peak RSS went from {before} KiB to {after} KiB for bombs refused at 4 MiB"
    );
    let text = scrape(stitch.admin).await;
    assert_eq!(
        metric(&text, "stitch_otlp_rejected_requests_total", &[]) - rejected_before,
        3.0,
        "the three bombs are counted as rejected"
    );
    assert_eq!(fetch(stitch.admin, "/ready").await.0, StatusCode::OK);
}

/// Raises this process's open-file limit to at least `want` (root may raise the hard limit
/// too); the test holds thousands of sockets.
fn allow_open_files(want: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let current = getrlimit(Resource::Nofile);
    if current.current.is_some_and(|soft| soft >= want) {
        return;
    }
    let hard = current.maximum.map_or(want, |h| h.max(want));
    let raised = Rlimit {
        current: Some(want),
        maximum: Some(hard),
    };
    if setrlimit(Resource::Nofile, raised).is_err() {
        let max = current.maximum.unwrap_or(want);
        assert!(
            max >= want,
            "this test holds {want} sockets; the open-file limit is {max} and cannot be raised"
        );
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: Some(max),
            },
        )
        .expect("raise the soft open-file limit");
    }
}

#[tokio::test]
async fn two_thousand_idle_admin_connections_stop_neither_ready_nor_the_proxy() {
    const IDLE: usize = 2000;
    allow_open_files(IDLE as u64 + 500);
    let up = HttpUpstream::start().await;
    let stitch = spawn_stitch(up.addr, &[]).await;
    let admin = stitch.admin;
    // In batches well under the listen backlog: a connection the kernel completes but drops
    // from a full accept queue would look open to us and never reach stitch at all.
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE / 100 {
        let connecting: Vec<_> = (0..100)
            .map(|_| tokio::spawn(async move { TcpStream::connect(admin).await }))
            .collect();
        for c in connecting {
            let stream = within("an idle admin connection", c)
                .await
                .expect("connect task")
                .expect("the admin port accepts (or queues) every connection");
            idle.push(stream);
        }
    }
    // All of them are open on our side; stitch holds at most its cap.
    assert_eq!(fetch(admin, "/ready").await.0, StatusCode::OK);
    let proxied = roundtrip(
        stitch.inbound,
        format!("GET /through HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr).as_bytes(),
    )
    .await;
    assert_eq!(proxied.status, 200);
    let fds = stitch.open_fds();
    let cap = AdminLimits::default().max_connections;
    assert!(
        fds < cap + 100,
        "stitch holds {fds} file descriptors with {IDLE} idle admin clients (cap {cap})"
    );
    // Stitch closed all but at most its cap of them (the idlest first, to make room).
    crate::support::eventually("stitch to close the idle connections beyond its cap", async || {
        let mut buf = [0u8; 16];
        let closed = idle
            .iter()
            .filter(|s| !matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock))
            .count();
        closed >= IDLE - cap
    })
    .await;
}

fn admin_state(limits: AdminLimits) -> AdminState {
    let mut state = AdminState::new(Arc::new(AtomicBool::new(true)));
    state.limits = limits;
    state
}

#[tokio::test]
async fn at_the_cap_the_idlest_connection_makes_room_for_a_probe() {
    // An idle timeout far beyond the test deadline: only eviction can make room in time.
    let (addr, _shutdown) = admin(admin_state(AdminLimits {
        max_connections: 4,
        idle_timeout: Duration::from_secs(600),
        ..AdminLimits::default()
    }))
    .await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(Wire::new(connect(addr).await));
        // Distinct accept times, so "idlest" is the first one.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Four silent clients fill the cap; a probe still gets its answer.
    assert_eq!(fetch(addr, "/ready").await.0, StatusCode::OK);
    silent[0]
        .expect_closed_within(crate::support::DEADLINE, "the idlest client evicted")
        .await;
    // A scrape on a kept-alive connection: busy or recently active, it outlives silent ones.
    assert_eq!(fetch(addr, "/metrics").await.0, StatusCode::OK);
    silent[1]
        .expect_closed_within(crate::support::DEADLINE, "the next idlest evicted")
        .await;
}

#[tokio::test]
async fn a_silent_admin_connection_is_closed_after_the_idle_timeout() {
    let idle_timeout = Duration::from_millis(500);
    let (addr, _shutdown) = admin(admin_state(AdminLimits {
        idle_timeout,
        ..AdminLimits::default()
    }))
    .await;
    let opened = Instant::now();
    let mut wire = Wire::new(connect(addr).await);
    wire.expect_closed_within(crate::support::DEADLINE, "a silent client timed out")
        .await;
    assert!(opened.elapsed() >= idle_timeout);
    // A client that asks something is answered as before.
    assert_eq!(fetch(addr, "/live").await.0, StatusCode::OK);
}

#[tokio::test]
async fn accept_backs_off_instead_of_spinning_when_file_descriptors_run_out() {
    let echo = echo_server().await;
    // One proxy worker: with two, one worker's accept and the other's upstream connect race
    // for the last descriptors, and a connection whose upstream connect lost is closed again,
    // so stitch could settle just short of the limit this test needs it at.
    let mut stitch = spawn_stitch(echo, &["--workers", "1"]).await;
    // A small descriptor budget, then opaque connections (two descriptors each: client and
    // upstream) until it is spent. They are not admin connections: nothing can be evicted.
    let budget = stitch.open_fds() as u64 + 12;
    let pid = rustix::process::Pid::from_raw(stitch.pid as i32).expect("a child pid");
    rustix::process::prlimit(
        Some(pid),
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(budget),
            maximum: Some(budget),
        },
    )
    .expect("prlimit on our own child");
    let mut held = Vec::new();
    for _ in 0..12 {
        let mut wire = Wire::connect(stitch.inbound).await;
        wire.send(b"\x00hold").await;
        held.push(wire);
    }
    // Wait until stitch holds every descriptor it may.
    crate::support::eventually("stitch to run out of file descriptors", async || {
        stitch.open_fds() as u64 >= budget
    })
    .await;
    // An admin client now finds accept failing with EMFILE for as long as this lasts.
    let waiting = TcpStream::connect(stitch.admin).await.expect("queued");
    let cpu_before = stitch.cpu_time();
    let window = Duration::from_secs(3);
    tokio::time::sleep(window).await;
    let spent = stitch.cpu_time() - cpu_before;
    assert!(
        spent < window / 4,
        "stitch used {spent:?} of CPU in {window:?} while out of file descriptors"
    );
    // Once descriptors come back, the admin server serves again.
    drop(held);
    drop(waiting);
    crate::support::eventually("/ready once descriptors are free", async || {
        tokio::time::timeout(Duration::from_secs(2), fetch(stitch.admin, "/ready"))
            .await
            .is_ok_and(|(status, _, _)| status == StatusCode::OK)
    })
    .await;
    assert!(matches!(stitch.child.try_wait(), Ok(None)), "stitch exited");
}
