//! The API server itself refuses bad ModelDeployments, with a message that names the field,
//! and fills in defaults so a minimal manifest is enough. Uses the CRD from `crds/`.

mod common;

use common::*;
use kube::api::{Api, DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::ApiResource;
use modelfleet_operator::api::{DEFAULT_ENGINE_IMAGE, Dtype, ModelDeployment};
use serde_json::{Value, json};

const NS: &str = "validation";

fn base(name: &str) -> Value {
    json!({
        "apiVersion": "modelfleet.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": { "name": name, "namespace": NS },
        "spec": { "model": { "source": "hf://org/model", "revision": "abc123" } },
    })
}

/// `base` with `spec.<path>` set to `value` (`null` removes the field).
fn with(name: &str, path: &[&str], value: Value) -> Value {
    let mut object = base(name);
    let mut cursor = &mut object["spec"];
    for key in &path[..path.len() - 1] {
        cursor = &mut cursor[*key];
    }
    let last = path[path.len() - 1];
    match value {
        Value::Null => {
            if let Some(map) = cursor.as_object_mut() {
                map.remove(last);
            }
        }
        value => cursor[last] = value,
    }
    object
}

async fn create(client: &kube::Client, object: &Value) -> Result<(), kube::Error> {
    let gvk = GroupVersionKind::gvk("modelfleet.dev", "v1alpha1", "ModelDeployment");
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &ApiResource::from_gvk(&gvk));
    let object: DynamicObject = serde_json::from_value(object.clone()).expect("dynamic object");
    api.create(&PostParams::default(), &object)
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifests_are_refused_naming_the_field() {
    let cluster = cluster(false);
    let client = cluster.client().await;
    cluster.namespace(&client, NS).await;

    // (what is wrong, manifest, text the API server's message must contain)
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "no source",
            with("a", &["model", "source"], Value::Null),
            "spec.model.source",
        ),
        (
            "no revision",
            with("b", &["model", "revision"], Value::Null),
            "spec.model.revision",
        ),
        (
            "empty revision",
            with("c", &["model", "revision"], json!("")),
            "spec.model.revision",
        ),
        (
            "unknown URI scheme",
            with("d", &["model", "source"], json!("ftp://host/model")),
            "spec.model.source",
        ),
        (
            "min above max",
            with("e", &["replicas"], json!({ "min": 3, "max": 2 })),
            "spec.replicas.min must be less than or equal to spec.replicas.max",
        ),
        (
            "negative gpus",
            with("f", &["resources"], json!({ "gpus": -1 })),
            "spec.resources.gpus",
        ),
        (
            "zero GPU memory share",
            with("g", &["engine"], json!({ "gpuMemoryUtilization": 0 })),
            "spec.engine.gpuMemoryUtilization",
        ),
        (
            "GPU memory share above 1",
            with("h", &["engine"], json!({ "gpuMemoryUtilization": 1.5 })),
            "spec.engine.gpuMemoryUtilization",
        ),
        (
            "unknown dtype",
            with("i", &["engine"], json!({ "dtype": "fp8" })),
            "spec.engine.dtype",
        ),
        (
            "odd block size",
            with("j", &["engine"], json!({ "blockSize": 12 })),
            "spec.engine.blockSize",
        ),
        (
            "zero max sequences",
            with("k", &["engine"], json!({ "maxNumSeqs": 0 })),
            "spec.engine.maxNumSeqs",
        ),
        (
            "not a duration",
            with("l", &["rollout"], json!({ "progressDeadline": "soon" })),
            "spec.rollout.progressDeadline",
        ),
        (
            "scale count out of range",
            with(
                "m",
                &["replicas"],
                json!({ "min": 1, "max": 2, "count": 5000 }),
            ),
            "spec.replicas.count",
        ),
        (
            "bad GPU product label",
            with(
                "n",
                &["resources"],
                json!({ "gpus": 1, "gpuProduct": "H100 80GB" }),
            ),
            "spec.resources.gpuProduct",
        ),
        (
            "name not a DNS label",
            base("chat.v2"),
            "metadata.name must be a DNS-1035 label",
        ),
        (
            "no spec",
            json!({ "apiVersion": "modelfleet.dev/v1alpha1", "kind": "ModelDeployment", "metadata": { "name": "o", "namespace": NS } }),
            "spec: Required value",
        ),
    ];
    assert!(cases.len() >= 8);
    let mut failures = Vec::new();
    for (what, manifest, expected) in &cases {
        match create(&client, manifest).await {
            Ok(()) => failures.push(format!("{what}: accepted")),
            Err(kube::Error::Api(status)) if status.code == 422 => {
                if !status.message.contains(expected) {
                    failures.push(format!(
                        "{what}: message does not contain {expected:?}: {}",
                        status.message
                    ));
                }
            }
            Err(other) => failures.push(format!("{what}: unexpected error {other}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minimal_manifest_is_accepted_and_defaulted() {
    let cluster = cluster(false);
    let client = cluster.client().await;
    cluster.namespace(&client, "defaults").await;
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), "defaults");
    let minimal = json!({
        "apiVersion": "modelfleet.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": { "name": "tiny" },
        "spec": { "model": { "source": "s3://bucket/prefix", "revision": "etag-1" } },
    });
    let md: ModelDeployment = serde_json::from_value(minimal).expect("parse");
    let created = mds
        .create(&PostParams::default(), &md)
        .await
        .expect("a minimal manifest is valid");
    let spec = created.spec;
    assert_eq!(spec.engine.image, DEFAULT_ENGINE_IMAGE);
    assert_eq!(spec.engine.dtype, Dtype::Auto);
    assert_eq!(spec.engine.block_size, 16);
    assert_eq!(spec.resources.gpus, 0, "a minimal manifest requests no GPU");
    assert_eq!(
        (spec.replicas.min, spec.replicas.max, spec.replicas.count),
        (1, 1, None)
    );
    assert_eq!(spec.rollout.progress_deadline, "15m");
    assert_eq!(spec.autoscaling.target_queue_depth, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_manifest_is_valid() {
    let cluster = cluster(false);
    let client = cluster.client().await;
    cluster.namespace(&client, "example").await;
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), "example");
    let example = example("example");
    let created = mds
        .create(&PostParams::default(), &example)
        .await
        .expect("the example is valid");
    assert_eq!(
        created.spec, example.spec,
        "the example spells out every default it relies on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_md_shows_the_printer_columns() {
    let cluster = cluster(false);
    let client = cluster.client().await;
    cluster.namespace(&client, "printer").await;
    apply_as_user(&client, "printer", &minimal("printer", "chat", "r1")).await;
    let kubectl =
        modelfleet_e2e::tools::tool("kubectl").expect("kubectl is provisioned by `make tools`");
    let output = tokio::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(["get", "md", "-n", "printer"])
        .output()
        .await
        .expect("run kubectl");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let header: Vec<&str> = stdout
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        vec!["NAME", "READY", "DESIRED", "REVISION", "QUEUE", "AGE"],
        "{stdout}"
    );
    assert!(
        stdout.lines().nth(1).is_some_and(|l| l.starts_with("chat")),
        "{stdout}"
    );
}
