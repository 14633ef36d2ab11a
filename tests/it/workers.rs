//! Thread per core: how many proxy workers start and why (affinity, cgroup quota, the flag),
//! keep-alive clients spread over the workers, and one shutdown that drains — then, at its
//! deadline, closes — what every worker holds.

use std::num::NonZeroUsize;
use std::time::Duration;

use stitch::app::cpus::{WorkerCount, WorkersReason};

use crate::support::metrics::{metric, scrape};
use crate::support::process::{
    StitchProcess, fake_root, log_fields, spawn_stitch_with, wait_refused,
};
use crate::support::upstream::HttpUpstream;
use crate::support::wire::Wire;
use crate::support::{DEADLINE, Loopback, StitchUnderTest, eventually, http_request};

/// The `proxy workers started` log line of a child stitch, as JSON fields.
async fn workers_line(stitch: &mut StitchProcess) -> serde_json::Value {
    log_fields(stitch, "proxy workers started").await
}

/// CPUs in this test process's affinity mask (the child inherits it).
fn affinity_cpus() -> usize {
    rustix::thread::sched_getaffinity(None)
        .expect("sched_getaffinity")
        .count() as usize
}

/// CPUs online on this machine.
fn online_cpus() -> usize {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/online").expect("online CPUs");
    list.trim()
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().expect("cpu") - a.parse::<usize>().expect("cpu") + 1,
            None => 1,
        })
        .sum()
}

#[tokio::test]
async fn an_affinity_mask_of_one_cpu_gives_one_worker() {
    let up = HttpUpstream::start().await;
    let mut stitch = spawn_stitch_with(up.addr, &[], &["taskset", "-c", "0"], &[]).await;
    let line = workers_line(&mut stitch).await;
    assert_eq!(line["workers"], 1, "{line}");
    let why = if online_cpus() > 1 {
        "cpu affinity"
    } else {
        "no cpu limit: the default"
    };
    assert_eq!(line["reason"], why, "{line}");
    assert_eq!(
        metric(&scrape(stitch.admin).await, "stitch_workers", &[]),
        1.0
    );
}

#[tokio::test]
async fn a_cgroup_quota_of_one_and_a_half_cpus_gives_two_workers() {
    let root = fake_root(&[
        ("proc/self/cgroup", "0::/kubepods/pod-a/stitch\n"),
        ("sys/fs/cgroup/cpu.max", "max 100000\n"),
        (
            "sys/fs/cgroup/kubepods/pod-a/stitch/cpu.max",
            "150000 100000\n",
        ),
        ("sys/devices/system/cpu/online", "0-63\n"),
    ]);
    let root_dir = root.path().to_str().expect("a UTF-8 temp path");
    let up = HttpUpstream::start().await;
    let mut stitch =
        spawn_stitch_with(up.addr, &[], &[], &[("STITCH_CPU_FILES_ROOT", root_dir)]).await;
    let line = workers_line(&mut stitch).await;
    // The quota rounds up to 2; a machine with a single CPU still cannot run more than 1.
    let cpus = affinity_cpus();
    assert_eq!(line["workers"], 2.min(cpus), "{line}");
    if cpus >= 2 {
        assert_eq!(line["reason"], "cgroup cpu.max quota, rounded up", "{line}");
        assert_eq!(line["quota_cpus"], 1.5, "{line}");
    }
    let scraped = scrape(stitch.admin).await;
    assert_eq!(metric(&scraped, "stitch_workers", &[]), 2.min(cpus) as f64);
}

#[tokio::test]
async fn the_flag_sets_the_count_and_the_log_says_why() {
    let up = HttpUpstream::start().await;
    let mut stitch = spawn_stitch_with(up.addr, &["--workers", "3"], &[], &[]).await;
    let line = workers_line(&mut stitch).await;
    assert_eq!(
        (&line["workers"], &line["reason"]),
        (&3.into(), &"--workers".into()),
        "{line}"
    );
    assert_eq!(
        metric(&scrape(stitch.admin).await, "stitch_workers", &[]),
        3.0
    );

    let mut by_env = spawn_stitch_with(up.addr, &[], &[], &[("STITCH_WORKERS", "4")]).await;
    let line = workers_line(&mut by_env).await;
    assert_eq!(
        (&line["workers"], &line["reason"]),
        (&4.into(), &"--workers".into()),
        "{line}"
    );
}

/// An in-process stitch with `workers` workers in front of `up`.
async fn with_workers(up: &HttpUpstream, workers: usize, drain: Duration) -> StitchUnderTest {
    Loopback::to(up.addr)
        .with(|s| {
            s.workers = WorkerCount::fixed(
                NonZeroUsize::new(workers).expect("non-zero"),
                WorkersReason::Settings,
            );
            s.drain_timeout = drain;
        })
        .start()
        .await
}

/// Connections each worker has served so far.
async fn per_worker(admin: std::net::SocketAddr) -> [f64; 2] {
    let text = scrape(admin).await;
    ["0", "1"].map(|w| metric(&text, "stitch_worker_connections_total", &[("worker", w)]))
}

/// Two keep-alive clients that connect at the same moment, each with one request in flight
/// to `path`.
async fn two_clients(stitch: &StitchUnderTest, up: &HttpUpstream, path: &str) -> [Wire; 2] {
    let (a, b) = tokio::join!(Wire::connect(stitch.inbound), Wire::connect(stitch.inbound));
    let mut clients = [a, b];
    for wire in &mut clients {
        wire.send(format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", up.addr).as_bytes())
            .await;
    }
    clients
}

#[tokio::test]
async fn two_keep_alive_clients_are_served_by_two_workers() {
    let up = HttpUpstream::start().await;
    let stitch = with_workers(&up, 2, Duration::from_secs(30)).await;
    // Shared accept alone put both on one worker 72% of the time: ten rounds would pass by luck
    // with probability 0.28^10.
    for round in 1..=10 {
        let before = per_worker(stitch.admin).await;
        let mut clients = two_clients(&stitch, &up, "/").await;
        for wire in &mut clients {
            assert_eq!(wire.read_response(false).await.status, 200);
        }
        let after = per_worker(stitch.admin).await;
        assert_eq!(
            [after[0] - before[0], after[1] - before[1]],
            [1.0, 1.0],
            "round {round}: one connection per worker"
        );
        drop(clients);
        eventually("both connections to close", async || {
            let text = scrape(stitch.admin).await;
            metric(
                &text,
                "stitch_open_connections",
                &[("direction", "inbound")],
            ) == 0.0
        })
        .await;
    }
}

#[tokio::test]
async fn one_shutdown_drains_requests_in_flight_on_every_worker() {
    let up = HttpUpstream::start().await;
    let stitch = with_workers(&up, 2, Duration::from_secs(30)).await;
    let mut clients = two_clients(&stitch, &up, "/slow").await;
    up.wait_for(2).await;
    assert_eq!(
        per_worker(stitch.admin).await,
        [1.0, 1.0],
        "one request per worker"
    );
    let (status, _, _) = http_request(stitch.admin, "POST", "/shutdown", &[], Vec::new()).await;
    assert_eq!(status, 202);
    wait_refused(stitch.inbound).await;
    wait_refused(stitch.outbound).await;
    assert!(
        !stitch.task.is_finished(),
        "run() returned with requests in flight"
    );
    up.open_gate(2);
    for wire in &mut clients {
        let resp = wire.read_response(false).await;
        assert_eq!((resp.status, resp.text()), (200, "slow done".to_owned()));
    }
    let mut stitch = stitch;
    stitch.run_returns("run() to return after the drain").await;
}

#[tokio::test]
async fn the_drain_deadline_closes_what_is_left_on_every_worker() {
    let up = HttpUpstream::start().await;
    let stitch = with_workers(&up, 2, Duration::from_millis(300)).await;
    let mut clients = two_clients(&stitch, &up, "/slow").await;
    up.wait_for(2).await;
    assert_eq!(
        per_worker(stitch.admin).await,
        [1.0, 1.0],
        "one request per worker"
    );
    stitch.shutdown.trigger();
    let mut stitch = stitch;
    stitch
        .run_returns("run() to return at the drain deadline")
        .await;
    // The gate never opens: only stitch ending each worker's runtime closes these.
    for wire in &mut clients {
        wire.expect_closed_within(DEADLINE, "a client connection left at the deadline")
            .await;
    }
    eventually(
        "the upstream connections of both workers to close",
        async || up.closed_connections() == 2,
    )
    .await;
}
