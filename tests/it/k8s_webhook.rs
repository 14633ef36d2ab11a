//! `stitch webhook` as the chart runs it: the real binary with the rendered Deployment's
//! flags, serving the certificate `helm template` generated, called over real TLS that trusts
//! only the rendered `caBundle`. A corpus of AdmissionReviews (tests/k8s/corpus) gets patches
//! that apply, give the golden pods (tests/k8s/golden; `UPDATE_GOLDEN=1` rewrites them) and
//! validate strictly; `stitch inject` on the same pods gives the same pods; garbage gets 4xx
//! or a message and the webhook keeps serving; a rotated certificate is served without a
//! restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::k8s::{assert_valid, documents, find, render, root};
use crate::support::process::spawn_listening;
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SERVER_NAME: &str = "stitch-webhook.stitch-system.svc";
const NAMESPACE_ENTRY: &str = "/mutate/namespace-enabled";
const POD_ENTRY: &str = "/mutate";

/// The corpus: fixture, webhook entry, expected outcome (`None` = injected, else the skip
/// reason).
const CASES: &[(&str, &str, Option<&str>)] = &[
    ("deployment-pod", NAMESPACE_ENTRY, None),
    ("job-pod", NAMESPACE_ENTRY, None),
    ("init-containers-pod", NAMESPACE_ENTRY, None),
    ("probes-pod", NAMESPACE_ENTRY, None),
    ("classic-pod", NAMESPACE_ENTRY, None),
    ("annotation-opt-in-pod", POD_ENTRY, None),
    ("not-opted-in-pod", POD_ENTRY, Some("not-opted-in")),
    ("host-network-pod", NAMESPACE_ENTRY, Some("host-network")),
    (
        "already-injected-pod",
        NAMESPACE_ENTRY,
        Some("already-injected"),
    ),
    (
        "kube-system-pod",
        NAMESPACE_ENTRY,
        Some("excluded-namespace"),
    ),
    ("proxy-uid-pod", NAMESPACE_ENTRY, Some("runs-as-proxy-uid")),
];

/// The chart's webhook: its flags and the certificate files it would mount.
struct ChartWebhook {
    args: Vec<String>,
    ca_pem: Vec<u8>,
    dir: tempfile::TempDir,
}

impl ChartWebhook {
    fn render() -> Self {
        let docs = documents(&render(&["--kube-version", "1.31.0"]));
        let args =
            find(&docs, "Deployment", "stitch-webhook")["spec"]["template"]["spec"]["containers"]
                [0]["args"]
                .as_array()
                .expect("args")
                .iter()
                .map(|a| a.as_str().expect("string").to_owned())
                .collect();
        let secret = find(&docs, "Secret", "stitch-webhook-tls");
        let config = find(&docs, "MutatingWebhookConfiguration", "stitch-webhook");
        let decode = |v: &Value| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().expect("base64 string"))
                .expect("base64")
        };
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("tls.crt"),
            decode(&secret["data"]["tls.crt"]),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("tls.key"),
            decode(&secret["data"]["tls.key"]),
        )
        .unwrap();
        ChartWebhook {
            args,
            ca_pem: decode(&config["webhooks"][0]["clientConfig"]["caBundle"]),
            dir,
        }
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }

    /// The injection flags alone (what `stitch inject` takes).
    fn inject_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        let mut args = self.args.iter().skip(1);
        while let Some(a) = args.next() {
            if matches!(a.as_str(), "--listen" | "--tls-cert" | "--tls-key") {
                args.next();
            } else {
                flags.push(a.clone());
            }
        }
        flags
    }

    /// Starts the real binary with the chart's flags on a loopback port.
    async fn start(&self) -> Running {
        let mut args = vec!["webhook".to_owned()];
        args.extend(self.inject_flags());
        args.extend(["--listen".to_owned(), "127.0.0.1:0".to_owned()]);
        args.extend([
            "--tls-cert".to_owned(),
            self.cert_path().display().to_string(),
        ]);
        args.extend([
            "--tls-key".to_owned(),
            self.key_path().display().to_string(),
        ]);
        let (child, addrs, _log) = spawn_listening(&args, &["webhook"]).await;
        let addr = addrs[0];
        Running {
            _child: child,
            addr,
        }
    }
}

struct Running {
    _child: tokio::process::Child,
    addr: SocketAddr,
}

/// One HTTPS request to the webhook, trusting only `ca_pem`.
async fn request(
    addr: SocketAddr,
    ca_pem: &[u8],
    method: &str,
    path: &str,
    body: Vec<u8>,
    h2: bool,
) -> Result<(u16, Vec<u8>), String> {
    crate::support::k8s::https_request(addr, SERVER_NAME, ca_pem, method, path, body, h2).await
}

fn review(uid: &str, pod: &Value, operation: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": pod["metadata"]["namespace"],
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        }
    })
}

fn fixture(name: &str) -> (String, Value) {
    let path = root().join(format!("tests/k8s/corpus/{name}.yaml"));
    let text = std::fs::read_to_string(&path).expect("fixture");
    let pod = documents(&text).remove(0);
    (text, pod)
}

fn golden_path(name: &str) -> PathBuf {
    root().join(format!("tests/k8s/golden/{name}.json"))
}

/// Compares with the golden file, or writes it with `UPDATE_GOLDEN=1`.
fn check_golden(name: &str, pod: &Value, via: &str) {
    let path = golden_path(name);
    let pretty = serde_json::to_string_pretty(pod).expect("JSON") + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") && via == "webhook" {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("golden dir");
        std::fs::write(&path, &pretty).expect("write golden");
        return;
    }
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display())),
    )
    .expect("golden JSON");
    assert!(
        &golden == pod,
        "{name} through {via} differs from {} (UPDATE_GOLDEN=1 rewrites it after review):\n{pretty}",
        path.display()
    );
}

fn apply_patch(pod: &Value, response: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("patch"))
        .expect("base64 patch");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON Patch");
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).expect("the patch applies");
    patched
}

async fn metrics(webhook: &Running, ca: &[u8]) -> String {
    let (status, body) = request(webhook.addr, ca, "GET", "/metrics", vec![], false)
        .await
        .expect("metrics");
    assert_eq!(status, 200);
    String::from_utf8(body).expect("UTF-8")
}

fn count(metrics: &str, outcome: &str, reason: &str) -> u64 {
    let prefix =
        format!("stitch_webhook_admissions_total{{outcome=\"{outcome}\",reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

#[tokio::test]
async fn the_corpus_through_the_webhook_and_stitch_inject() {
    let chart = ChartWebhook::render();
    let webhook = chart.start().await;
    let mut patched_pods = String::new();
    for (i, (name, entry, expected)) in CASES.iter().enumerate() {
        let (text, pod) = fixture(name);
        let uid = format!("00000000-0000-4000-8000-{i:012}");
        let body = serde_json::to_vec(&review(&uid, &pod, "CREATE")).expect("JSON");
        // Alternate HTTP/1.1 and HTTP/2: the API server may use either.
        let (status, answer) =
            request(webhook.addr, &chart.ca_pem, "POST", entry, body, i % 2 == 1)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&answer));
        let answer: Value = serde_json::from_slice(&answer).expect("an AdmissionReview");
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        let response = &answer["response"];
        assert_eq!(response["uid"], uid.as_str(), "{name}");
        assert_eq!(response["allowed"], true, "{name}: never vetoed");

        // The same pod through `stitch inject` with the same flags.
        let file = chart.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, &text).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stitch"))
            .arg("inject")
            .arg("-f")
            .arg(&file)
            .args(chart.inject_flags())
            .output()
            .expect("stitch inject runs");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let injected_text = String::from_utf8(out.stdout).expect("UTF-8");
        let summary = String::from_utf8_lossy(&out.stderr);

        match expected {
            None => {
                let patched = apply_patch(&pod, response);
                check_golden(name, &patched, "webhook");
                let offline = documents(&injected_text).remove(0);
                check_golden(name, &offline, "stitch inject");
                assert!(summary.contains(": injected"), "{summary}");
                patched_pods.push_str(&format!("---\n{patched}\n"));
            }
            Some(reason) => {
                assert!(response.get("patch").is_none(), "{name} was patched");
                let warned = response.get("warnings").is_some();
                let should_warn = matches!(*reason, "host-network" | "runs-as-proxy-uid");
                assert_eq!(warned, should_warn, "{name}: warnings {response}");
                if *reason == "not-opted-in" {
                    // Naming a manifest to `stitch inject` is its opt-in.
                    assert!(summary.contains(": injected"), "{summary}");
                } else {
                    assert_eq!(injected_text, text, "{name}: skipped, byte for byte");
                    assert!(
                        summary.contains(&format!("skipped ({reason})")),
                        "{summary}"
                    );
                }
            }
        }
    }
    assert_valid("the patched pods", &patched_pods);

    let text = metrics(&webhook, &chart.ca_pem).await;
    assert_eq!(count(&text, "injected", "native-sidecar"), 5, "{text}");
    assert_eq!(count(&text, "injected", "classic-sidecar"), 1, "{text}");
    for reason in [
        "not-opted-in",
        "host-network",
        "already-injected",
        "excluded-namespace",
        "runs-as-proxy-uid",
    ] {
        assert_eq!(count(&text, "skipped", reason), 1, "{reason}: {text}");
    }
}

#[tokio::test]
async fn garbage_gets_an_answer_and_the_webhook_keeps_serving() {
    let chart = ChartWebhook::render();
    let webhook = chart.start().await;
    let ca = &chart.ca_pem;
    let post = |body: Vec<u8>| request(webhook.addr, ca, "POST", NAMESPACE_ENTRY, body, false);
    let (_, pod) = fixture("deployment-pod");

    assert_eq!(post(b"not json at all".to_vec()).await.unwrap().0, 400);
    assert_eq!(post(b"{}".to_vec()).await.unwrap().0, 400);
    let mut no_uid = review("x", &pod, "CREATE");
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    assert_eq!(
        post(serde_json::to_vec(&no_uid).unwrap()).await.unwrap().0,
        400
    );
    let mut v1beta1 = review("x", &pod, "CREATE");
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    assert_eq!(
        post(serde_json::to_vec(&v1beta1).unwrap()).await.unwrap().0,
        400
    );

    let allowed_unchanged = |body: Vec<u8>| async {
        let (status, answer) = post(body).await.unwrap();
        assert_eq!(status, 200);
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["response"]["allowed"], true);
        assert!(answer["response"].get("patch").is_none());
        answer
    };
    let mut deployment = review("d", &pod, "CREATE");
    deployment["request"]["kind"]["kind"] = json!("Deployment");
    deployment["request"]["resource"]["resource"] = json!("deployments");
    allowed_unchanged(serde_json::to_vec(&deployment).unwrap()).await;
    allowed_unchanged(serde_json::to_vec(&review("u", &pod, "UPDATE")).unwrap()).await;
    let mut broken = pod.clone();
    broken["spec"]["containers"] = json!("not a list");
    let answer =
        allowed_unchanged(serde_json::to_vec(&review("b", &broken, "CREATE")).unwrap()).await;
    assert!(
        answer["response"]["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("malformed pod")),
        "{answer}"
    );

    let huge = vec![b' '; 9 * 1024 * 1024];
    match post(huge).await {
        Ok((status, _)) => assert_eq!(status, 413),
        // The server may close before reading all of it; it must not have served it.
        Err(e) => assert!(!e.contains("TLS"), "{e}"),
    }
    let (status, _) = request(webhook.addr, ca, "GET", NAMESPACE_ENTRY, vec![], false)
        .await
        .unwrap();
    assert_eq!(status, 405);
    let (status, _) = request(webhook.addr, ca, "GET", "/nope", vec![], true)
        .await
        .unwrap();
    assert_eq!(status, 404);

    // Plain HTTP is refused, never served.
    let mut plain = TcpStream::connect(webhook.addr).await.unwrap();
    plain
        .write_all(b"POST /mutate HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), plain.read_to_string(&mut answer))
        .await
        .expect("the refusal comes at once")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("HTTPS only"), "{answer}");
    // A broken handshake: a TLS record header and then nothing.
    let mut broken_tls = TcpStream::connect(webhook.addr).await.unwrap();
    broken_tls
        .write_all(&[0x16, 0x03, 0x01, 0x00])
        .await
        .unwrap();
    drop(broken_tls);
    // A client that does not trust the certificate cannot talk to it.
    let other_ca = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()]).unwrap();
    assert!(
        request(
            webhook.addr,
            other_ca.cert.pem().as_bytes(),
            "GET",
            "/ready",
            vec![],
            false
        )
        .await
        .is_err()
    );

    // Still serving, and everything was counted.
    let (status, _) = request(webhook.addr, ca, "GET", "/ready", vec![], false)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, answer) = post(serde_json::to_vec(&review("ok", &pod, "CREATE")).unwrap())
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&answer).contains("\"patch\""));
    let text = metrics(&webhook, ca).await;
    assert_eq!(count(&text, "error", "malformed-json"), 1, "{text}");
    assert_eq!(count(&text, "error", "malformed-review"), 3, "{text}");
    assert_eq!(count(&text, "error", "malformed-pod"), 1, "{text}");
    assert_eq!(count(&text, "skipped", "not-a-pod"), 1, "{text}");
    assert_eq!(count(&text, "skipped", "not-create"), 1, "{text}");
    assert_eq!(count(&text, "injected", "native-sidecar"), 1, "{text}");
}

fn write_pair(dir: &Path, cert: &str, key: &str) {
    // Renamed into place, as a Secret volume swaps its files.
    for (name, text) in [("tls.key", key), ("tls.crt", cert)] {
        let tmp = dir.join(format!(".{name}.new"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

#[tokio::test]
async fn a_rotated_certificate_is_served_without_a_restart() {
    let chart = ChartWebhook::render();
    let webhook = chart.start().await;
    let ready = |ca: Vec<u8>| {
        let addr = webhook.addr;
        async move { request(addr, &ca, "GET", "/ready", vec![], false).await }
    };
    assert!(ready(chart.ca_pem.clone()).await.is_ok());

    // A new CA and serving certificate, as a renewal would bring.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    write_pair(chart.dir.path(), &cert.pem(), &key.serialize_pem());

    let new_ca = ca_cert.pem().into_bytes();
    assert!(
        ready(new_ca.clone()).await.is_ok(),
        "the new certificate is served"
    );
    assert!(
        ready(chart.ca_pem.clone()).await.is_err(),
        "the old one is gone"
    );

    // A broken pair keeps the last good certificate serving.
    write_pair(chart.dir.path(), "not a certificate", "not a key");
    assert!(ready(new_ca.clone()).await.is_ok());
    let text = metrics(&webhook, &new_ca).await;
    assert!(
        text.contains("stitch_webhook_certificate_reloads_total{result=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("stitch_webhook_certificate_reloads_total{result=\"rejected\"} 1"),
        "{text}"
    );
}
