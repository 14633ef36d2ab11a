//! YAML streams: splitting, pass-through byte for byte, Lists, CronJobs, idempotence.

use super::*;

fn options() -> InjectOptions {
    InjectOptions::default()
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]
";

#[test]
fn splitting_keeps_every_byte() {
    for stream in [
        "",
        "a: 1\n",
        "---\na: 1\n---\nb: 2\n",
        "# lead\n---\na: 1\n...\n# after end\n---\nb: 2",
        "--- {a: 1}\n--- |\n  text\n---\r\nc: 3\r\n",
        "key: |\n  ----not a marker\n  --- indented is content\n",
    ] {
        let chunks = split_documents(stream);
        let joined: String = chunks.iter().map(|c| c.whole).collect();
        assert_eq!(joined, stream);
        for c in &chunks {
            assert_eq!(format!("{}{}{}", c.marker, c.body, c.trailer), c.whole);
        }
    }
    let chunks = split_documents("--- {a: 1}\n---\nb: 2\n...\n# tail\n");
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0].body, " {a: 1}\n");
    assert_eq!(
        (chunks[1].body, chunks[1].trailer),
        ("b: 2\n", "...\n# tail\n")
    );
}

#[test]
fn other_documents_pass_through_untouched_and_in_order() {
    let service = "# the service\napiVersion: v1\nkind: Service\nmetadata: {name: web}  # inline\n";
    let config = "---\napiVersion: v1\nkind: ConfigMap\ndata: {a: 'x'}\n";
    let garbage = "---\n: : not yaml [\n";
    let stream = format!("{service}---\n{DEPLOYMENT}{config}{garbage}");
    let out = transform(&stream, &options());
    assert!(out.text.starts_with(service), "{}", out.text);
    assert!(
        out.text.ends_with(&format!("{config}{garbage}")),
        "{}",
        out.text
    );
    assert_eq!(out.reports.len(), 1);
    assert!(out.reports[0].outcome.is_ok());
    assert_eq!(out.unreadable.len(), 1);
    assert_eq!(out.unreadable[0].0, 4);
}

#[test]
fn injecting_twice_changes_nothing() {
    let once = transform(DEPLOYMENT, &options());
    assert!(once.text.contains("stitch-init"));
    let twice = transform(&once.text, &options());
    assert_eq!(twice.text, once.text);
    assert_eq!(
        twice.reports[0].outcome.as_ref().map_err(|s| s.reason),
        Err(crate::inject::SkipReason::AlreadyInjected)
    );
}

#[test]
fn every_workload_kind_and_lists_are_injected() {
    let template = "{metadata: {labels: {app: x}}, spec: {containers: [{name: x, image: y}]}}";
    let stream = format!(
        "kind: Pod\nmetadata: {{name: p}}\nspec: {{containers: [{{name: x, image: y}}]}}\n\
         ---\nkind: ReplicaSet\nmetadata: {{name: rs}}\nspec: {{template: {template}}}\n\
         ---\nkind: StatefulSet\nmetadata: {{name: ss}}\nspec: {{template: {template}}}\n\
         ---\nkind: DaemonSet\nmetadata: {{name: ds}}\nspec: {{template: {template}}}\n\
         ---\nkind: Job\nmetadata: {{name: j}}\nspec: {{template: {template}}}\n\
         ---\nkind: CronJob\nmetadata: {{name: cj}}\nspec: {{jobTemplate: {{spec: {{template: {template}}}}}}}\n\
         ---\nkind: List\nitems:\n- kind: Deployment\n  metadata: {{name: d}}\n  spec: {{template: {template}}}\n\
         - kind: Service\n  metadata: {{name: s}}\n"
    );
    let out = transform(&stream, &options());
    let objects: Vec<&str> = out.reports.iter().map(|r| r.object.as_str()).collect();
    assert_eq!(
        objects,
        [
            "pod/p",
            "replicaset/rs",
            "statefulset/ss",
            "daemonset/ds",
            "job/j",
            "cronjob/cj",
            "deployment/d"
        ]
    );
    assert!(
        out.reports.iter().all(|r| r.outcome.is_ok()),
        "{:?}",
        out.reports
    );
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out.text).expect("output is YAML");
    assert_eq!(docs.len(), 7);
    let cron = &docs[5]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(cron["initContainers"][1]["name"], "stitch");
    assert_eq!(docs[6]["items"][1]["kind"], "Service");
    assert_eq!(
        docs[6]["items"][0]["spec"]["template"]["spec"]["initContainers"][0]["name"],
        "stitch-init"
    );
}

#[test]
fn a_pod_that_opts_out_is_reported_and_left_byte_for_byte() {
    let pod = "kind: Pod\nmetadata:\n  name: p\n  annotations: {stitch.dev/inject: disabled}\n\
               spec: {containers: [{name: x, image: y}]}\n";
    let out = transform(pod, &options());
    assert_eq!(out.text, pod);
    let report = out.reports[0].to_string();
    assert!(report.contains("skipped (opted-out)"), "{report}");
}
