//! The Helm chart: `helm lint --strict`, renders with default values and with overrides, every
//! rendered object strictly valid against Kubernetes 1.31 and 1.33, and the values really
//! reaching what they configure (the webhook's flags are fed to the real `stitch inject`).

use std::process::Command;

use crate::support::k8s::{assert_valid, chart, documents, find, helm, render, run};
use serde_json::{Value, json};

/// Renders, validates strictly, and returns the objects.
fn render_valid(what: &str, args: &[&str]) -> Vec<Value> {
    let text = render(args);
    assert_valid(what, &text);
    documents(&text)
}

fn webhook_args(docs: &[Value]) -> Vec<String> {
    find(docs, "Deployment", "stitch-webhook")["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect()
}

fn has_arg(args: &[String], arg: &str) -> bool {
    args.iter().any(|a| a == arg)
}

fn value_after<'a>(args: &'a [String], flag: &str) -> &'a str {
    let at = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag}"));
    &args[at + 1]
}

/// Runs the real `stitch inject` with the injection flags the chart gives the webhook, on a
/// one-container pod, and returns the injected pod.
fn inject_with_chart_flags(args: &[String]) -> Value {
    let mut flags = Vec::new();
    let mut rest = args.iter().skip(1); // `webhook`
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--listen" | "--tls-cert" | "--tls-key" => {
                rest.next();
            }
            _ => flags.push(a.clone()),
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let pod = dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\n\
         spec: {containers: [{name: app, image: app}]}\n",
    )
    .expect("write");
    let out = run(Command::new(env!("CARGO_BIN_EXE_stitch"))
        .arg("inject")
        .arg("-f")
        .arg(&pod)
        .args(&flags));
    documents(&out).remove(0)
}

fn proxy_container(pod: &Value) -> &Value {
    let spec = &pod["spec"];
    spec["initContainers"]
        .as_array()
        .into_iter()
        .chain(spec["containers"].as_array())
        .flatten()
        .find(|c| c["name"] == "stitch")
        .expect("a stitch container")
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

#[test]
fn lint_passes_strictly_with_every_feature() {
    for args in [
        &[][..],
        &["--set", "certManager.enabled=true"][..],
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.podMonitor.enabled=true",
            "--set",
            "dashboards.enabled=true",
        ][..],
    ] {
        let out = run(Command::new(helm())
            .args(["lint", "--strict"])
            .arg(chart())
            .args(args));
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

#[test]
fn default_values_render_a_safe_webhook() {
    let docs = render_valid("the default render", &["--kube-version", "1.31.0"]);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "Deployment",
        "Service",
        "ServiceAccount",
        "PodDisruptionBudget",
        "Secret",
        "MutatingWebhookConfiguration",
        "ConfigMap",
    ] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    for kind in ["ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding"] {
        assert!(!kinds.contains(&kind), "the webhook needs no {kind}");
    }
    for kind in ["ServiceMonitor", "PodMonitor", "Certificate"] {
        assert!(!kinds.contains(&kind), "{kind} is off by default");
    }

    let config = find(&docs, "MutatingWebhookConfiguration", "stitch-webhook");
    let secret = find(&docs, "Secret", "stitch-webhook-tls");
    let entries = config["webhooks"].as_array().expect("webhooks");
    assert_eq!(entries.len(), 2);
    for entry in entries {
        assert_eq!(entry["admissionReviewVersions"], json!(["v1"]));
        assert_eq!(entry["sideEffects"], "None");
        assert_eq!(entry["failurePolicy"], "Ignore");
        assert!(entry["timeoutSeconds"].as_i64().expect("timeout") <= 5);
        assert_eq!(entry["rules"][0]["operations"], json!(["CREATE"]));
        assert_eq!(entry["rules"][0]["resources"], json!(["pods"]));
        assert_eq!(entry["clientConfig"]["caBundle"], secret["data"]["ca.crt"]);
        let excluded = &entry["namespaceSelector"]["matchExpressions"][1];
        assert_eq!(excluded["key"], "kubernetes.io/metadata.name");
        assert_eq!(excluded["operator"], "NotIn");
        assert_eq!(
            excluded["values"],
            json!([
                "kube-system",
                "kube-public",
                "kube-node-lease",
                "stitch-system"
            ])
        );
    }
    let paths: Vec<&Value> = entries
        .iter()
        .map(|e| &e["clientConfig"]["service"]["path"])
        .collect();
    assert_eq!(
        paths,
        [&json!("/mutate/namespace-enabled"), &json!("/mutate")]
    );

    let pod = &find(&docs, "Deployment", "stitch-webhook")["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(container["resources"]["limits"]["memory"].is_string());
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["scheme"], "HTTPS");
        assert_eq!(container[probe]["httpGet"]["port"], "https");
    }
    let args = webhook_args(&docs);
    assert!(
        has_arg(&args, "--native-sidecar=true"),
        "1.31 has native sidecars"
    );

    // The default rules are a valid rules file.
    let rules = find(&docs, "ConfigMap", "stitch-rules")["data"]["rules.yaml"]
        .as_str()
        .expect("rules.yaml");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("rules.yaml");
    std::fs::write(&file, rules).expect("write");
    run(Command::new(env!("CARGO_BIN_EXE_stitch"))
        .arg("check-config")
        .arg(&file));

    // The default injection: native sidecar, the metadata servers skipped.
    let injected = inject_with_chart_flags(&args);
    let init = &injected["spec"]["initContainers"][0];
    assert_eq!(init["image"], "stitch:0.1.0");
    assert!(
        init["args"]
            .to_string()
            .contains("169.254.169.254/32,fd00:ec2::254/128"),
        "{init}"
    );
    assert_eq!(proxy_container(&injected)["restartPolicy"], "Always");
}

#[test]
fn overrides_are_honoured_end_to_end() {
    let docs = render_valid(
        "the render with overrides",
        &[
            "--kube-version",
            "1.33.0",
            "--set",
            "image.repository=registry.example/stitch",
            "--set",
            "image.tag=9.9.9",
            "--set",
            "otlp.endpoint=http://otel-collector.observability:4318",
            "--set",
            "otlp.protocol=http/protobuf",
            "--set",
            "otlp.headersSecret.name=otlp-auth",
            "--set",
            "proxy.resources.requests.cpu=50m",
            "--set",
            "proxy.resources.limits.memory=128Mi",
            "--set",
            "proxy.skipOutboundPorts={5432,6379}",
            "--set",
            "proxy.logLevel=debug",
            "--set",
            "proxy.nativeSidecar=false",
            "--set",
            "webhook.resources.limits.memory=100Mi",
            "--set",
            "webhook.replicas=1",
            "--set",
            "webhook.failurePolicy=Fail",
            "--set",
            "rulesNamespaces={shop,billing}",
        ],
    );
    let deployment = find(&docs, "Deployment", "stitch-webhook");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/stitch:9.9.9");
    assert_eq!(container["resources"]["limits"]["memory"], "100Mi");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert!(
        !docs.iter().any(|d| d["kind"] == "PodDisruptionBudget"),
        "one replica: no PDB"
    );
    let config = find(&docs, "MutatingWebhookConfiguration", "stitch-webhook");
    assert_eq!(config["webhooks"][0]["failurePolicy"], "Fail");
    let rule_namespaces: Vec<&str> = docs
        .iter()
        .filter(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "stitch-rules")
        .filter_map(|d| d["metadata"]["namespace"].as_str())
        .collect();
    assert_eq!(rule_namespaces, ["stitch-system", "shop", "billing"]);

    let args = webhook_args(&docs);
    assert_eq!(
        value_after(&args, "--image"),
        "registry.example/stitch:9.9.9"
    );
    let injected = inject_with_chart_flags(&args);
    let proxy = proxy_container(&injected);
    assert_eq!(proxy["image"], "registry.example/stitch:9.9.9");
    assert_eq!(
        env_value(proxy, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        Some("http://otel-collector.observability:4318")
    );
    assert_eq!(
        env_value(proxy, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        Some("http/protobuf")
    );
    assert_eq!(
        env_value(proxy, "RUST_LOG"),
        Some("debug,opentelemetry=error")
    );
    let headers = proxy["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "OTEL_EXPORTER_OTLP_HEADERS")
        .expect("headers from the Secret");
    assert_eq!(headers["valueFrom"]["secretKeyRef"]["name"], "otlp-auth");
    assert_eq!(proxy["resources"]["requests"]["cpu"], "50m");
    assert_eq!(proxy["resources"]["limits"]["memory"], "128Mi");
    assert!(
        proxy.get("lifecycle").is_some(),
        "nativeSidecar=false: classic hooks"
    );
    assert_eq!(injected["spec"]["containers"][0]["name"], "stitch");
    let init_args = injected["spec"]["initContainers"][0]["args"].to_string();
    assert!(
        init_args.contains("\"--skip-outbound-ports\",\"5432,6379\""),
        "{init_args}"
    );
}

#[test]
fn native_sidecar_auto_follows_the_cluster_version() {
    for (version, native) in [("1.28.9", false), ("1.29.0", true), ("1.33.1", true)] {
        let docs = documents(&render(&["--kube-version", version]));
        let args = webhook_args(&docs);
        assert!(
            has_arg(&args, &format!("--native-sidecar={native}")),
            "{version}: {args:?}"
        );
    }
    let out = Command::new(helm())
        .args(["template", "stitch"])
        .arg(chart())
        .args(["--set", "proxy.nativeSidecar=sometimes"])
        .output()
        .expect("helm runs");
    assert!(
        !out.status.success(),
        "an invalid nativeSidecar must fail the render"
    );
}

#[test]
fn cert_manager_replaces_the_generated_certificate() {
    let docs = render_valid(
        "the cert-manager render",
        &[
            "--kube-version",
            "1.31.0",
            "--set",
            "certManager.enabled=true",
        ],
    );
    assert!(
        !docs.iter().any(|d| d["kind"] == "Secret"),
        "cert-manager writes the Secret"
    );
    let certificate = find(&docs, "Certificate", "stitch-webhook");
    assert_eq!(certificate["spec"]["secretName"], "stitch-webhook-tls");
    assert_eq!(
        certificate["spec"]["dnsNames"],
        json!([
            "stitch-webhook",
            "stitch-webhook.stitch-system",
            "stitch-webhook.stitch-system.svc",
            "stitch-webhook.stitch-system.svc.cluster.local"
        ])
    );
    assert_eq!(
        certificate["spec"]["issuerRef"]["name"],
        "stitch-webhook-selfsigned"
    );
    find(&docs, "Issuer", "stitch-webhook-selfsigned");
    let config = find(&docs, "MutatingWebhookConfiguration", "stitch-webhook");
    assert_eq!(
        config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "stitch-system/stitch-webhook"
    );
    for entry in config["webhooks"].as_array().expect("webhooks") {
        assert!(
            entry["clientConfig"].get("caBundle").is_none(),
            "cainjector fills it"
        );
    }
    let volume =
        &find(&docs, "Deployment", "stitch-webhook")["spec"]["template"]["spec"]["volumes"][0];
    assert_eq!(volume["secret"]["secretName"], "stitch-webhook-tls");

    let own_issuer = documents(&render(&[
        "--set",
        "certManager.enabled=true",
        "--set",
        "certManager.issuerRef.name=corp-ca",
        "--set",
        "certManager.issuerRef.kind=ClusterIssuer",
    ]));
    assert!(!own_issuer.iter().any(|d| d["kind"] == "Issuer"));
    assert_eq!(
        find(&own_issuer, "Certificate", "stitch-webhook")["spec"]["issuerRef"],
        json!({"name": "corp-ca", "kind": "ClusterIssuer"})
    );
}

#[test]
fn monitors_and_dashboard_render_when_enabled() {
    let docs = render_valid(
        "the render with monitors and the dashboard",
        &[
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "metrics.serviceMonitor.labels.release=prometheus",
            "--set",
            "metrics.podMonitor.enabled=true",
            "--set",
            "dashboards.enabled=true",
        ],
    );
    let service_monitor = find(&docs, "ServiceMonitor", "stitch-webhook");
    assert_eq!(
        service_monitor["metadata"]["labels"]["release"],
        "prometheus"
    );
    let service = find(&docs, "Service", "stitch-webhook");
    for (key, value) in service_monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("selector")
    {
        assert_eq!(
            &service["metadata"]["labels"][key], value,
            "selects the Service"
        );
    }
    let endpoint = &service_monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["scheme"], "https");
    assert_eq!(
        endpoint["tlsConfig"]["ca"]["secret"]["name"],
        "stitch-webhook-tls"
    );
    let pod_monitor = find(&docs, "PodMonitor", "stitch-proxies");
    assert_eq!(
        pod_monitor["spec"]["selector"]["matchLabels"],
        json!({"stitch.dev/injected": "true"})
    );
    assert_eq!(
        pod_monitor["spec"]["podMetricsEndpoints"][0]["port"],
        "stitch-admin"
    );
    assert_eq!(pod_monitor["spec"]["namespaceSelector"]["any"], true);

    let dashboard = find(&docs, "ConfigMap", "stitch-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json_text = dashboard["data"]["stitch-dashboard.json"]
        .as_str()
        .expect("the dashboard");
    let embedded: Value = serde_json::from_str(json_text).expect("JSON");
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(chart().join("dashboards/stitch-dashboard.json"))
            .expect("dashboard file"),
    )
    .expect("JSON");
    assert_eq!(embedded, file);
}

#[test]
fn the_validator_rejects_what_kubernetes_would() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, bad) in [
        (
            "unknown field",
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 1}], bogus: 1}\n",
        ),
        (
            "CRD unknown field",
            "apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\nmetadata: {name: p}\n\
             spec: {selector: {}, podMetricsEndpoints: [{port: a, bogus: 1}]}\n",
        ),
        (
            "unknown kind",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\nspec: {}\n",
        ),
        (
            "wrong type",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: b, ports: [{containerPort: http}]}]}\n",
        ),
    ] {
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, bad).expect("write");
        assert!(
            crate::support::k8s::validate(&file).is_err(),
            "the validator accepted an object with an {name}"
        );
    }
}

#[test]
fn typos_and_impossible_values_fail_the_render() {
    for bad in [
        "proxy.nativeSidcar=true",
        "webhook.failurePolicy=Never",
        "webhook.timeoutSeconds=60",
        "otlp.protocol=udp",
    ] {
        let out = Command::new(helm())
            .args(["template", "stitch"])
            .arg(chart())
            .args(["--set", bad])
            .output()
            .expect("helm runs");
        assert!(!out.status.success(), "{bad} rendered");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("schema"),
            "{bad}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
