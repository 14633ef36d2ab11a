//! The injected pod's shape, and every reason a pod is left alone.

use serde_json::{Value, json};

use crate::inject::{InjectOptions, Injected, Outcome, Owner, PodContext, SkipReason, inject_pod};

fn pod(extra_spec: Value, metadata: Value) -> Value {
    let mut spec = json!({
        "initContainers": [{"name": "migrate", "image": "m"}],
        "containers": [{"name": "app", "image": "a"}, {"name": "cache", "image": "c"}],
    });
    for (k, v) in extra_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({"metadata": metadata, "spec": spec})
}

fn opted_in() -> PodContext {
    PodContext {
        namespace: Some("shop".into()),
        namespace_opted_in: true,
        owner: None,
    }
}

fn inject(pod: &Value, context: &PodContext, options: &InjectOptions) -> Injected {
    match inject_pod(pod, context, options).expect("a pod") {
        Outcome::Injected(i) => i,
        Outcome::Skipped(s) => panic!("skipped: {s:?}"),
    }
}

fn skipped(pod: &Value, context: &PodContext) -> SkipReason {
    match inject_pod(pod, context, &InjectOptions::default()).expect("a pod") {
        Outcome::Skipped(s) => s.reason,
        Outcome::Injected(_) => panic!("injected"),
    }
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

#[test]
fn native_sidecar_starts_before_the_pods_own_init_containers() {
    let injected = inject(
        &pod(json!({}), json!({"name": "p"})),
        &opted_in(),
        &InjectOptions::default(),
    );
    let spec = &injected.pod["spec"];
    assert_eq!(
        names(&spec["initContainers"]),
        ["stitch-init", "stitch", "migrate"]
    );
    assert_eq!(
        names(&spec["containers"]),
        ["app", "cache"],
        "the app's order is kept"
    );
    let proxy = &spec["initContainers"][1];
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
    assert!(proxy.get("lifecycle").is_none());
    assert_eq!(
        injected.pod["metadata"]["labels"]["stitch.dev/injected"],
        "true"
    );
    let status: Value = serde_json::from_str(
        injected.pod["metadata"]["annotations"]["stitch.dev/status"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status["sidecar"], "native");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn classic_mode_holds_the_app_and_lets_it_drain() {
    let options = InjectOptions {
        native_sidecar: false,
        ..InjectOptions::default()
    };
    let p = pod(
        json!({"terminationGracePeriodSeconds": 60}),
        json!({"name": "p"}),
    );
    let injected = inject(&p, &opted_in(), &options);
    let spec = &injected.pod["spec"];
    // Own init containers run before any redirect exists (no proxy runs yet to receive it).
    assert_eq!(names(&spec["initContainers"]), ["migrate", "stitch-init"]);
    assert_eq!(names(&spec["containers"]), ["stitch", "app", "cache"]);
    let hooks = &spec["containers"][0]["lifecycle"];
    assert_eq!(hooks["postStart"]["exec"]["command"][1], "wait-ready");
    assert_eq!(
        hooks["preStop"]["exec"]["command"],
        json!(["/usr/local/bin/stitch", "wait-drain", "--timeout", "55s"])
    );
    assert!(spec["containers"][0].get("restartPolicy").is_none());
    assert_eq!(
        injected.pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"],
        "app"
    );
}

#[test]
fn the_annotation_switches_the_sidecar_mode_per_pod() {
    let p = pod(
        json!({}),
        json!({"annotations": {"stitch.dev/native-sidecar": "false"}}),
    );
    assert!(!inject(&p, &opted_in(), &InjectOptions::default()).native_sidecar);
}

#[test]
fn service_name_comes_from_annotation_labels_then_the_owner() {
    let name = |metadata: Value, owner: Option<Owner>| {
        let context = PodContext {
            owner,
            ..opted_in()
        };
        inject(
            &pod(json!({}), metadata),
            &context,
            &InjectOptions::default(),
        )
        .service_name
    };
    let rs = json!([{"kind": "ReplicaSet", "name": "web-5d4f8b7c9", "controller": true}]);
    assert_eq!(
        name(
            json!({"ownerReferences": rs, "labels": {"pod-template-hash": "5d4f8b7c9"}}),
            None
        ),
        "web"
    );
    assert_eq!(
        name(
            json!({"ownerReferences": rs, "labels": {"app": "shop", "pod-template-hash": "5d4f8b7c9"}}),
            None
        ),
        "shop"
    );
    assert_eq!(
        name(
            json!({"labels": {"app": "shop", "app.kubernetes.io/name": "orders"},
                    "annotations": {"stitch.dev/service-name": "checkout"}}),
            None
        ),
        "checkout"
    );
    let cron_run = json!([{"kind": "Job", "name": "report-28512345", "controller": true}]);
    assert_eq!(name(json!({"ownerReferences": cron_run}), None), "report");
    let job = json!([{"kind": "Job", "name": "migrate-2", "controller": true}]);
    assert_eq!(name(json!({"ownerReferences": job}), None), "migrate-2");
    assert_eq!(name(json!({"generateName": "worker-"}), None), "worker");
    let owner = Owner {
        kind: "StatefulSet".into(),
        name: "db".into(),
    };
    assert_eq!(name(json!({"name": "x"}), Some(owner)), "db");
}

#[test]
fn every_skip_reason() {
    let none = PodContext {
        namespace: Some("shop".into()),
        ..PodContext::default()
    };
    let plain = pod(json!({}), json!({"name": "p"}));
    assert_eq!(skipped(&plain, &none), SkipReason::NotOptedIn);
    let by_label = pod(
        json!({}),
        json!({"labels": {"stitch.dev/inject": "enabled"}}),
    );
    assert!(matches!(
        inject_pod(&by_label, &none, &InjectOptions::default()),
        Ok(Outcome::Injected(_))
    ));
    let out = pod(
        json!({}),
        json!({"annotations": {"stitch.dev/inject": "disabled"}}),
    );
    assert_eq!(skipped(&out, &opted_in()), SkipReason::OptedOut);
    let system = PodContext {
        namespace: Some("kube-system".into()),
        ..opted_in()
    };
    assert_eq!(skipped(&plain, &system), SkipReason::ExcludedNamespace);
    let host = pod(json!({"hostNetwork": true}), json!({}));
    assert_eq!(skipped(&host, &opted_in()), SkipReason::HostNetwork);
    let pod_uid = pod(json!({"securityContext": {"runAsUser": 2102}}), json!({}));
    assert_eq!(skipped(&pod_uid, &opted_in()), SkipReason::RunsAsProxyUid);
    let mut container_uid = pod(json!({}), json!({}));
    container_uid["spec"]["containers"][1]["securityContext"] = json!({"runAsUser": 2102});
    assert_eq!(
        skipped(&container_uid, &opted_in()),
        SkipReason::RunsAsProxyUid
    );
    let mut overridden = pod(json!({"securityContext": {"runAsUser": 2102}}), json!({}));
    for field in ["initContainers", "containers"] {
        for c in overridden["spec"][field].as_array_mut().unwrap() {
            c["securityContext"] = json!({"runAsUser": 1000});
        }
    }
    assert!(
        matches!(
            inject_pod(&overridden, &opted_in(), &InjectOptions::default()),
            Ok(Outcome::Injected(_))
        ),
        "every container overrides the pod's UID"
    );
    let mut port = pod(json!({}), json!({}));
    port["spec"]["containers"][0]["ports"] = json!([{"containerPort": 4191}]);
    assert_eq!(skipped(&port, &opted_in()), SkipReason::PortConflict);
    let bad = pod(
        json!({}),
        json!({"annotations": {"stitch.dev/skip-outbound-ports": "db"}}),
    );
    assert_eq!(skipped(&bad, &opted_in()), SkipReason::InvalidAnnotation);
    let hand_made = pod(json!({}), json!({}));
    let mut hand_made = hand_made;
    hand_made["spec"]["containers"][1]["name"] = json!("stitch");
    assert_eq!(
        skipped(&hand_made, &opted_in()),
        SkipReason::AlreadyInjected
    );
    let injected = inject(&plain, &opted_in(), &InjectOptions::default()).pod;
    assert_eq!(skipped(&injected, &opted_in()), SkipReason::AlreadyInjected);
}

#[test]
fn not_a_pod_is_an_error_not_a_panic() {
    for bad in [
        json!(null),
        json!({"spec": {}}),
        json!({"spec": {"containers": {}}}),
        json!([1]),
    ] {
        assert!(
            inject_pod(&bad, &opted_in(), &InjectOptions::default()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn options_reach_the_containers() {
    let options = InjectOptions {
        image: "registry.example/stitch:9".into(),
        otlp_endpoint: Some("http://collector:4318".into()),
        otlp_headers_secret: Some(crate::inject::options::SecretKey {
            name: "otlp".into(),
            key: "headers".into(),
        }),
        skip_outbound_ports: vec!["5432".into()],
        ..InjectOptions::default()
    };
    let injected = inject(&pod(json!({}), json!({})), &opted_in(), &options);
    let init = &injected.pod["spec"]["initContainers"][0];
    assert_eq!(init["image"], "registry.example/stitch:9");
    let args: Vec<&str> = init["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "iptables",
            "--proxy-uid",
            "2102",
            "--skip-outbound-ports",
            "5432",
            "--skip-outbound-cidrs",
            "169.254.169.254/32,fd00:ec2::254/128"
        ]
    );
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    let env = &injected.pod["spec"]["initContainers"][1]["env"];
    let find = |name: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        find("OTEL_EXPORTER_OTLP_ENDPOINT")["value"],
        "http://collector:4318"
    );
    assert_eq!(
        find("OTEL_EXPORTER_OTLP_HEADERS")["valueFrom"]["secretKeyRef"],
        json!({"name": "otlp", "key": "headers", "optional": true})
    );
    assert_eq!(
        find("POD_IP")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
}

#[test]
fn the_apps_own_native_sidecars_probes_are_rewritten_only_after_stitch() {
    let mut p = pod(json!({}), json!({}));
    p["spec"]["initContainers"][0] = json!({"name": "log-shipper", "image": "l",
        "restartPolicy": "Always", "startupProbe": {"tcpSocket": {"port": 24224}}});
    let native = inject(&p, &opted_in(), &InjectOptions::default());
    assert_eq!(native.probes_rewritten, 1);
    assert_eq!(
        native.pod["spec"]["initContainers"][2]["startupProbe"]["httpGet"]["path"],
        "/app-probe/log-shipper/startup"
    );
    let classic_options = InjectOptions {
        native_sidecar: false,
        ..InjectOptions::default()
    };
    let classic = inject(&p, &opted_in(), &classic_options);
    assert_eq!(
        classic.probes_rewritten, 0,
        "it starts before stitch exists"
    );
    assert_eq!(
        classic.pod["spec"]["initContainers"][0]["startupProbe"],
        json!({"tcpSocket": {"port": 24224}})
    );
}
