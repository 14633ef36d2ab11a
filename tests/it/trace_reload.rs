//! Hot reload through real sockets (issue 7, "Rules file and hot reload"): a rules file in a
//! temp dir is changed while requests flow; no request fails, the new rules apply within 2 s,
//! a bad file keeps the last good rules and shows at `/config`, and editor renames and
//! Kubernetes ConfigMap `..data` symlink swaps are picked up.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::metrics::{metric, scrape};
use crate::support::trace::{Setup, config_json, copy_w3c, raw_get, setup};
use crate::support::{Loopback, StitchUnderTest, holds_within, send_sighup};

const W3C_ONLY: &str = "inject: [w3c]\n";
const W3C_B3: &str = "inject: [w3c, b3]\n";
/// The bound for picking up a change.
const PICKUP: Duration = Duration::from_secs(2);

/// One request; whether the app saw a `b3` header (the marker of the `W3C_B3` rules), after
/// checking the request saw one rules version from start to end (b3 and traceparent agree).
async fn app_sees_b3(s: &Setup) -> bool {
    let (app, _) = s.send("/", &[]).await;
    match app.get("b3") {
        None => false,
        Some(b3) => {
            let span = b3.split('-').nth(1).expect("b3 span id").to_owned();
            assert_eq!(span, app.tp().parent_id, "one span in both dialects");
            true
        }
    }
}

async fn until_b3(s: &Setup, wanted: bool) -> bool {
    holds_within(PICKUP, async || app_sees_b3(s).await == wanted).await
}

#[tokio::test]
async fn change_under_load_fails_no_request_and_applies_within_2s() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stitch.yaml");
    std::fs::write(&path, W3C_ONLY).expect("write rules");
    let s = setup(Some(path.clone()), 1, copy_w3c()).await;
    assert!(!app_sees_b3(&s).await, "v1 rules: w3c only");

    // 4 clients, each tagging its requests so the app's view can be matched to send times.
    let started = Instant::now();
    let written_at = started + Duration::from_millis(500);
    let stop_at = written_at + PICKUP + Duration::from_millis(500);
    let inbound = s.stitch.inbound;
    let clients: Vec<_> = (0..4)
        .map(|c| {
            tokio::spawn(async move {
                let mut sent = Vec::new();
                let mut n = 0;
                while Instant::now() < stop_at {
                    let tag = format!("{c}-{n}");
                    let at = Instant::now();
                    let status = raw_get(inbound, "/load", &[("x-req", &tag)]).await;
                    sent.push((tag, at, status));
                    n += 1;
                }
                sent
            })
        })
        .collect();
    tokio::time::sleep_until(written_at.into()).await;
    let written = Instant::now();
    std::fs::write(&path, W3C_B3).expect("rewrite rules");

    let mut sent = Vec::new();
    for c in clients {
        sent.extend(c.await.expect("client task did not panic"));
    }
    let failed: Vec<_> = sent.iter().filter(|(_, _, st)| *st != 200).collect();
    assert!(
        failed.is_empty(),
        "requests failed during reload: {failed:?}"
    );
    assert!(sent.len() >= 20, "a real load ran: {} requests", sent.len());

    let seen = s.app.all();
    let has_b3 = |tag: &str| {
        let app = seen
            .iter()
            .find(|a| a.get("x-req").as_deref() == Some(tag))
            .unwrap_or_else(|| panic!("the app saw request {tag}"));
        app.get("b3").is_some()
    };
    let late: Vec<_> = sent
        .iter()
        .filter(|(_, at, _)| *at >= written + PICKUP)
        .collect();
    assert!(!late.is_empty(), "requests ran after the pickup bound");
    let stale: Vec<_> = late.iter().filter(|(tag, _, _)| !has_b3(tag)).collect();
    assert!(
        stale.is_empty(),
        "{} requests sent ≥2 s after the change still saw the old rules",
        stale.len()
    );
    let first_new = sent
        .iter()
        .filter(|(tag, _, _)| has_b3(tag))
        .map(|(_, at, _)| at.saturating_duration_since(written))
        .min()
        .expect("the new rules applied");
    eprintln!("new rules applied {first_new:?} after the write");

    let config = config_json(s.stitch.admin).await;
    assert_eq!(config["rules"]["inject"], serde_json::json!(["w3c", "b3"]));
    assert_eq!(config["reloads"]["ok"], 1, "{config}");
    assert_eq!(config["last_reload_error"], serde_json::Value::Null);
}

#[tokio::test]
async fn bad_file_is_rejected_shown_at_config_and_old_rules_stay() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stitch.yaml");
    std::fs::write(&path, W3C_B3).expect("write rules");
    let s = setup(Some(path.clone()), 1, copy_w3c()).await;
    assert!(app_sees_b3(&s).await);

    std::fs::write(&path, "inject: [w3c, b3]\nextract: [w3c, nosuch]\n").expect("write bad");
    let admin = s.stitch.admin;
    let shown = holds_within(PICKUP, async || {
        config_json(admin).await["last_reload_error"].is_string()
    })
    .await;
    assert!(shown, "the error shows at /config within 2 s");
    let config = config_json(admin).await;
    let error = config["last_reload_error"].as_str().expect("error text");
    assert!(error.contains("nosuch"), "names the bad dialect: {error}");
    assert!(error.contains(":2:"), "names line 2: {error}");
    assert_eq!(config["reloads"]["error"], 1, "{config}");
    assert_eq!(config["rules"]["inject"], serde_json::json!(["w3c", "b3"]));
    for _ in 0..3 {
        assert!(app_sees_b3(&s).await, "the last good rules still apply");
    }

    // Fixing the file clears the error and applies.
    std::fs::write(&path, W3C_ONLY).expect("write good");
    assert!(
        until_b3(&s, false).await,
        "the fixed file applies within 2 s"
    );
    let config = config_json(admin).await;
    assert_eq!(config["last_reload_error"], serde_json::Value::Null);
    assert_eq!(config["reloads"]["ok"], 1);
}

#[tokio::test]
async fn reload_results_are_counted_in_metrics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stitch.yaml");
    std::fs::write(&path, W3C_ONLY).expect("write rules");
    let s = setup(Some(path.clone()), 1, copy_w3c()).await;
    std::fs::write(&path, W3C_B3).expect("write good");
    assert!(until_b3(&s, true).await);
    std::fs::write(&path, "inject: [nosuch]\n").expect("write bad");
    let admin = s.stitch.admin;
    assert!(
        holds_within(PICKUP, async || {
            config_json(admin).await["reloads"]["error"] == 1
        })
        .await
    );
    let m = scrape(admin).await;
    let ok = metric(&m, "stitch_config_reloads_total", &[("result", "ok")]);
    let all = metric(&m, "stitch_config_reloads_total", &[]);
    assert_eq!(
        (ok, all - ok),
        (1.0, 1.0),
        "stitch_config_reloads_total{{result}} counts one ok and one rejected reload; /metrics has:\n{}",
        m.lines()
            .filter(|l| l.contains("config_reloads"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test]
async fn editor_rename_over_the_file_is_picked_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stitch.yaml");
    std::fs::write(&path, W3C_ONLY).expect("write rules");
    let s = setup(Some(path.clone()), 1, copy_w3c()).await;
    assert!(!app_sees_b3(&s).await);
    let tmp = dir.path().join(".stitch.yaml.swp");
    std::fs::write(&tmp, W3C_B3).expect("write temp");
    std::fs::rename(&tmp, &path).expect("rename over");
    assert!(until_b3(&s, true).await, "picked up within 2 s");
}

/// Lays out a ConfigMap volume: `..<version>/stitch.yaml`, `..data -> ..<version>`,
/// `stitch.yaml -> ..data/stitch.yaml`.
fn configmap_version(dir: &Path, version: &str, text: &str) {
    let versioned = dir.join(version);
    std::fs::create_dir(&versioned).expect("version dir");
    std::fs::write(versioned.join("stitch.yaml"), text).expect("write rules");
}

#[tokio::test]
async fn configmap_data_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    configmap_version(d, "..2026_11_25_14_00_00.1", W3C_ONLY);
    symlink("..2026_11_25_14_00_00.1", d.join("..data")).expect("..data");
    symlink("..data/stitch.yaml", d.join("stitch.yaml")).expect("file link");
    let s = setup(Some(d.join("stitch.yaml")), 1, copy_w3c()).await;
    assert!(!app_sees_b3(&s).await);

    // What the kubelet does: new timestamped dir, `..data_tmp` link, atomic rename over `..data`,
    // old dir removed.
    configmap_version(d, "..2026_11_25_14_05_00.2", W3C_B3);
    symlink("..2026_11_25_14_05_00.2", d.join("..data_tmp")).expect("..data_tmp");
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).expect("swap ..data");
    std::fs::remove_dir_all(d.join("..2026_11_25_14_00_00.1")).expect("remove old version");
    assert!(until_b3(&s, true).await, "the swap is picked up within 2 s");
    let config = config_json(s.stitch.admin).await;
    assert_eq!(config["reloads"]["ok"], 1, "{config}");
}

#[tokio::test]
async fn deleted_file_keeps_the_rules_and_its_return_applies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stitch.yaml");
    std::fs::write(&path, W3C_B3).expect("write rules");
    let s = setup(Some(path.clone()), 1, copy_w3c()).await;
    assert!(app_sees_b3(&s).await);
    std::fs::remove_file(&path).expect("delete");
    let admin = s.stitch.admin;
    let shown = holds_within(PICKUP, async || {
        config_json(admin).await["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot read"))
    })
    .await;
    assert!(shown, "the missing file shows at /config");
    assert!(app_sees_b3(&s).await, "the last good rules still apply");
    // The same bytes coming back are a new version again.
    std::fs::write(&path, W3C_ONLY).expect("write again");
    assert!(until_b3(&s, false).await, "the returned file applies");
    assert_eq!(
        config_json(admin).await["last_reload_error"],
        serde_json::Value::Null
    );
}

#[tokio::test]
async fn change_between_start_up_load_and_watch_is_not_lost() {
    use crate::support::listener;
    use crate::support::trace::{copying_app, ring_only, serve_app, upstream};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stitch.yaml");
    std::fs::write(&path, W3C_ONLY).expect("write rules");
    let (up_addr, up_log) = upstream().await;
    let (app_listener, app_addr) = listener().await;
    let stitch = Loopback::to(app_addr)
        .rules(Some(path.clone()))
        .telemetry(ring_only("late-watch"))
        .bind()
        .await;
    // The file changes after it was loaded (bind) and before the watcher exists (run).
    std::fs::write(&path, W3C_B3).expect("rewrite rules");
    let running = StitchUnderTest::serve(stitch).await;
    let app = serve_app(
        app_listener,
        copying_app(running.outbound, up_addr, 1, copy_w3c()),
    );
    let s = Setup {
        stitch: running,
        app,
        upstream: up_log,
    };
    assert!(
        until_b3(&s, true).await,
        "the file on disk when the watch starts is what applies within 2 s"
    );
}

#[tokio::test]
async fn sighup_reloads_a_change_the_watcher_cannot_see() {
    // The configured path is a symlink into another directory: an in-place edit there fires no
    // event in the watched directory, so only SIGHUP can pick it up.
    let watched = tempfile::tempdir().expect("temp dir");
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let real = elsewhere.path().join("real.yaml");
    std::fs::write(&real, W3C_ONLY).expect("write rules");
    let path = watched.path().join("stitch.yaml");
    std::os::unix::fs::symlink(&real, &path).expect("symlink");
    let s = setup(Some(path), 1, copy_w3c()).await;
    assert!(!app_sees_b3(&s).await);
    std::fs::write(&real, W3C_B3).expect("edit in place");
    send_sighup();
    assert!(until_b3(&s, true).await, "SIGHUP reloaded the rules");
}
