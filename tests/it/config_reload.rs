//! Hot reload of the rules file with real files in a temp dir: in-place edits, rename-over,
//! Kubernetes ConfigMap `..data` symlink swaps, SIGHUP, and bad versions that must keep the last
//! good rules. Also `stitch check-config` as users run it.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use stitch::config::{ReloadResult, RulesHandle, reload_on_sighup, watch};
use stitch::propagation::Dialect;

use crate::support::{eventually, send_sighup};

fn inject_of(handle: &RulesHandle) -> Vec<Dialect> {
    handle.load().defaults().inject.clone()
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).expect("write rules");
}

#[tokio::test]
async fn edit_in_place_and_bad_version_keeps_last_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stitch.yaml");
    write(&path, "inject: [w3c]\n");
    let handle = RulesHandle::from_file(&path).expect("valid");
    let _guard = watch(path.clone(), handle.clone()).expect("watch");

    write(&path, "inject: [b3]\n");
    eventually("the edit", async || inject_of(&handle) == [Dialect::B3]).await;
    eventually("the ok count", async || handle.reloads().0 >= 1).await;

    write(&path, "inject: [zipkin]\n");
    eventually("the rejection", async || handle.reloads().1 >= 1).await;
    assert_eq!(
        inject_of(&handle),
        [Dialect::B3],
        "bad file keeps the last good rules"
    );
    let error = handle.last_error().expect("error recorded");
    assert!(
        error.contains("stitch.yaml:1:10: unknown dialect \"zipkin\""),
        "{error}"
    );
    let view = handle.to_json();
    assert_eq!(view["rules"]["inject"], serde_json::json!(["b3"]));
    assert!(
        view["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("zipkin"))
    );

    write(&path, "inject: [jaeger]\n");
    eventually("recovery", async || inject_of(&handle) == [Dialect::Jaeger]).await;
    eventually("the error cleared", async || handle.last_error().is_none()).await;
}

#[tokio::test]
async fn rename_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stitch.yaml");
    write(&path, "inject: [w3c]\n");
    let handle = RulesHandle::from_file(&path).expect("valid");
    let _guard = watch(path.clone(), handle.clone()).expect("watch");

    let tmp = dir.path().join(".stitch.yaml.swp");
    write(&tmp, "inject: [b3multi]\n");
    fs::rename(&tmp, &path).expect("rename");
    eventually("the rename", async || {
        inject_of(&handle) == [Dialect::B3Multi]
    })
    .await;
}

#[tokio::test]
async fn configmap_symlink_swap() {
    // The layout kubelet writes: stitch.yaml -> ..data/stitch.yaml, ..data -> ..<timestamp>.
    let dir = tempfile::tempdir().expect("tempdir");
    let v1 = dir.path().join("..2026_11_25_13_00_00.1");
    fs::create_dir(&v1).expect("mkdir");
    write(&v1.join("stitch.yaml"), "inject: [w3c]\n");
    symlink("..2026_11_25_13_00_00.1", dir.path().join("..data")).expect("symlink");
    let path = dir.path().join("stitch.yaml");
    symlink("..data/stitch.yaml", &path).expect("symlink");
    let handle = RulesHandle::from_file(&path).expect("valid");
    let _guard = watch(path, handle.clone()).expect("watch");

    let v2 = dir.path().join("..2026_11_25_13_05_00.2");
    fs::create_dir(&v2).expect("mkdir");
    write(&v2.join("stitch.yaml"), "inject: [jaeger]\n");
    symlink("..2026_11_25_13_05_00.2", dir.path().join("..data_tmp")).expect("symlink");
    fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).expect("atomic swap");
    fs::remove_dir_all(&v1).expect("kubelet removes the old version");
    eventually("the ConfigMap swap", async || {
        inject_of(&handle) == [Dialect::Jaeger]
    })
    .await;
}

/// `watch` is called on an async worker at start-up, so it must not read the file itself: a
/// FIFO stands in for a slow filesystem (opening it blocks until a writer comes). `watch`
/// returns at once; the re-read after installing the watch happens on the watch thread and
/// applies what the writer then sends.
#[test]
fn watch_reads_the_file_on_its_own_thread_never_the_callers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stitch.yaml");
    write(&path, "inject: [w3c]\n");
    let handle = RulesHandle::from_file(&path).expect("valid");
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    fs::rename(&fifo, &path).expect("the FIFO replaces the rules file");

    let (returned_tx, returned) = std::sync::mpsc::channel();
    let (watch_path, watch_handle) = (path.clone(), handle.clone());
    std::thread::spawn(move || {
        let guard = watch(watch_path, watch_handle).expect("watch");
        let _ = returned_tx.send(guard);
    });
    let _guard = returned
        .recv_timeout(crate::support::DEADLINE)
        .expect("watch() returned while the file could not be read yet");

    // The watch thread is waiting to read: give it the new rules, then a regular file again.
    let mut writer = fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open the FIFO for writing");
    std::io::Write::write_all(&mut writer, b"inject: [b3]\n").expect("write the FIFO");
    drop(writer);
    let regular = dir.path().join("regular.yaml");
    write(&regular, "inject: [b3]\n");
    fs::rename(&regular, &path).expect("a regular file again");
    let deadline = std::time::Instant::now() + crate::support::DEADLINE;
    while inject_of(&handle) != [Dialect::B3] {
        assert!(
            std::time::Instant::now() < deadline,
            "the watch thread never applied what it read"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn reload_is_validated_and_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stitch.yaml");
    write(&path, "inject: [w3c]\n");
    let handle = RulesHandle::from_file(&path).expect("valid");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    handle.on_reload(move |label| sink.lock().expect("lock").push(label));
    assert_eq!(
        handle.reload(),
        ReloadResult::Unchanged,
        "same bytes: no reload"
    );
    write(&path, "inject: [b3]\n");
    assert_eq!(handle.reload(), ReloadResult::Applied);
    assert_eq!(handle.reload(), ReloadResult::Unchanged);
    write(&path, "inject: [b3\n");
    assert!(matches!(handle.reload(), ReloadResult::Rejected(_)));
    assert_eq!(inject_of(&handle), [Dialect::B3]);
    assert_eq!(handle.reloads(), (1, 1));
    assert_eq!(*seen.lock().expect("lock"), ["ok", "rejected"]);
    // A request holding the old version keeps it while a new one is published.
    let held = handle.load_full();
    write(&path, "inject: [jaeger]\n");
    assert_eq!(handle.reload(), ReloadResult::Applied);
    assert_eq!(held.defaults().inject, [Dialect::B3]);
    assert_eq!(inject_of(&handle), [Dialect::Jaeger]);
}

#[test]
fn startup_with_an_invalid_file_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stitch.yaml");
    write(&path, "orphans: sometimes\n");
    let err = RulesHandle::from_file(&path).expect_err("invalid");
    assert_eq!(err.0[0].line, 1);
    assert!(RulesHandle::from_file(&dir.path().join("missing.yaml")).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stitch.yaml");
    write(&path, "inject: [w3c]\n");
    let handle = RulesHandle::from_file(&path).expect("valid");
    let task = reload_on_sighup(handle.clone()).expect("signal handler");
    write(&path, "inject: [b3]\n");
    send_sighup();
    eventually("the SIGHUP reload", async || {
        inject_of(&handle) == [Dialect::B3]
    })
    .await;
    task.abort();
}

#[test]
fn check_config_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.yaml");
    write(&good, "extract: [w3c, b3]\n");
    let out = Command::new(env!("CARGO_BIN_EXE_stitch"))
        .arg("check-config")
        .arg(&good)
        .output()
        .expect("run stitch");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}: ok\n", good.display())
    );

    let bad = dir.path().join("bad.yaml");
    write(
        &bad,
        "extract: [w3c, zipkin]\nrules:\n  - match: { authority: \"a b\" }\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_stitch"))
        .arg("check-config")
        .arg(&bad)
        .output()
        .expect("run stitch");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let b = bad.display();
    assert!(
        stderr.contains(&format!("{b}:1:16: unknown dialect \"zipkin\"")),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("{b}:3:25: bad glob")), "{stderr}");

    // The shipped example is valid.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/stitch.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_stitch"))
        .arg("check-config")
        .arg(&example)
        .output()
        .expect("run stitch");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
