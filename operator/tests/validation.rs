//! The API server itself refuses bad ModelDeployments, with a message that names the field,
//! and fills in defaults so a minimal manifest is enough; and what it accepts, the operator
//! can decode and the API server accepts the children built from it. Uses the CRD from
//! `crds/`.

mod common;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::ApiResource;
use modelfleet_operator::api::{DEFAULT_ENGINE_IMAGE, Dtype, ModelDeployment};
use modelfleet_operator::desired::desired_state;
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
        // Specs the schema used to accept though they could never run.
        (
            "cpu not a quantity",
            with("q1", &["resources"], json!({ "gpus": 0, "cpu": "lots" })),
            "spec.resources.cpu must be a quantity",
        ),
        (
            "negative memory",
            with("q2", &["resources"], json!({ "gpus": 0, "memory": "-1Gi" })),
            "spec.resources.memory must be a quantity",
        ),
        (
            "zero model cache",
            with("q3", &["resources"], json!({ "gpus": 0, "modelCache": 0 })),
            "spec.resources.modelCache must be a quantity",
        ),
        (
            "fractional cpu count",
            with("q4", &["resources"], json!({ "gpus": 0, "cpu": 1.5 })),
            "spec.resources.cpu",
        ),
        (
            "toleration operator outside Kubernetes' enum",
            with(
                "t1",
                &["scheduling"],
                json!({ "tolerations": [{ "key": "dedicated", "operator": "Matches", "value": "ml" }] }),
            ),
            "spec.scheduling.tolerations: operator must be Exists or Equal",
        ),
        (
            "toleration effect outside Kubernetes' enum",
            with(
                "t2",
                &["scheduling"],
                json!({ "tolerations": [{ "key": "dedicated", "operator": "Exists", "effect": "Sometimes" }] }),
            ),
            "spec.scheduling.tolerations: effect must be",
        ),
        (
            "toleration Exists with a value",
            with(
                "t3",
                &["scheduling"],
                json!({ "tolerations": [{ "key": "dedicated", "operator": "Exists", "value": "ml" }] }),
            ),
            "spec.scheduling.tolerations: a toleration with operator Exists must not have a value",
        ),
        (
            "toleration without key that is not Exists",
            with(
                "t4",
                &["scheduling"],
                json!({ "tolerations": [{ "operator": "Equal", "value": "ml" }] }),
            ),
            "spec.scheduling.tolerations: a toleration without a key must have operator Exists",
        ),
        (
            "tolerationSeconds without NoExecute",
            with(
                "t5",
                &["scheduling"],
                json!({ "tolerations": [{ "key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 30 }] }),
            ),
            "spec.scheduling.tolerations: tolerationSeconds needs effect NoExecute",
        ),
        (
            "image with spaces",
            with("i1", &["engine"], json!({ "image": "our engine" })),
            "spec.engine.image",
        ),
        (
            "image with upper-case path",
            with(
                "i2",
                &["engine"],
                json!({ "image": "ghcr.io/ModelFleet/engine:1" }),
            ),
            "spec.engine.image",
        ),
        (
            "image with a bad digest",
            with(
                "i3",
                &["engine"],
                json!({ "image": "ghcr.io/modelfleet/engine@sha256:xyz" }),
            ),
            "spec.engine.image",
        ),
        (
            "maxSurge and maxUnavailable both 0",
            with(
                "r1",
                &["rollout"],
                json!({ "maxSurge": 0, "maxUnavailable": 0 }),
            ),
            "spec.rollout: maxSurge and maxUnavailable must not both be 0",
        ),
        (
            "maxSurge 0% and maxUnavailable defaulted to 0",
            with("r2", &["rollout"], json!({ "maxSurge": "0%" })),
            "spec.rollout: maxSurge and maxUnavailable must not both be 0",
        ),
        (
            "canary settings with the rolling strategy",
            with(
                "c1",
                &["rollout"],
                json!({ "canary": { "steps": [{ "weight": 10 }] } }),
            ),
            "spec.rollout.canary is set but spec.rollout.strategy is not Canary",
        ),
        (
            "unknown rollout strategy",
            with("c2", &["rollout"], json!({ "strategy": "BlueGreen" })),
            "spec.rollout.strategy",
        ),
        (
            "canary step with both weight and replicas",
            with(
                "c3",
                &["rollout"],
                json!({ "strategy": "Canary", "canary": { "steps": [{ "weight": 10, "replicas": 1 }] } }),
            ),
            "spec.rollout.canary.steps: each step sets exactly one of weight",
        ),
        (
            "canary step of 100%",
            with(
                "c4",
                &["rollout"],
                json!({ "strategy": "Canary", "canary": { "steps": [{ "weight": 100 }] } }),
            ),
            "spec.rollout.canary.steps[0].weight",
        ),
        (
            "canary without steps",
            with(
                "c5",
                &["rollout"],
                json!({ "strategy": "Canary", "canary": { "steps": [] } }),
            ),
            "spec.rollout.canary.steps",
        ),
        (
            "canary pause that is no duration",
            with(
                "c6",
                &["rollout"],
                json!({ "strategy": "Canary", "canary": { "steps": [{ "weight": 10, "pause": "soon" }] } }),
            ),
            "spec.rollout.canary.steps[0].pause",
        ),
        (
            "failed-request ratio above 1",
            with(
                "c7",
                &["rollout"],
                json!({ "strategy": "Canary", "canary": { "analysis": { "maxFailedRequestRatio": 1.5 } } }),
            ),
            "spec.rollout.canary.analysis.maxFailedRequestRatio",
        ),
        (
            "unknown missing-metrics policy",
            with(
                "c8",
                &["rollout"],
                json!({ "strategy": "Canary", "canary": { "analysis": { "missingMetrics": "Ignore" } } }),
            ),
            "spec.rollout.canary.analysis.missingMetrics",
        ),
        (
            "maxUnavailable above 100%",
            with("r3", &["rollout"], json!({ "maxUnavailable": "101%" })),
            "spec.rollout.maxUnavailable must be a count from 0 to 2147483647 or a percentage",
        ),
        (
            "maxSurge above int32",
            with("r4", &["rollout"], json!({ "maxSurge": 2147483648u64 })),
            "spec.rollout.maxSurge must be a count",
        ),
        (
            "negative maxUnavailable",
            with("r5", &["rollout"], json!({ "maxUnavailable": -1 })),
            "spec.rollout.maxUnavailable must be a count",
        ),
        (
            "maxSurge neither count nor percentage",
            with("r6", &["rollout"], json!({ "maxSurge": "two" })),
            "spec.rollout.maxSurge must be a count",
        ),
        (
            "fractional maxSurge",
            with("r7", &["rollout"], json!({ "maxSurge": 1.5 })),
            "spec.rollout.maxSurge",
        ),
        (
            "s3 source without bucket",
            with("s1", &["model", "source"], json!("s3:///prefix")),
            "spec.model.source: s3:// needs a bucket",
        ),
        (
            "https source without host",
            with("s2", &["model", "source"], json!("https:///models/llama")),
            "spec.model.source: https:// needs a host",
        ),
        (
            "https source with credentials",
            with(
                "s3",
                &["model", "source"],
                json!("https://user:secret@models.example/llama"),
            ),
            "spec.model.source: https:// needs a host",
        ),
        (
            "source with a space",
            with("s4", &["model", "source"], json!("hf://org/my model")),
            "spec.model.source must not contain spaces",
        ),
        (
            "hub source without a name",
            with("s5", &["model", "source"], json!("hf://justaname")),
            "spec.model.source: hf:// needs an organisation and a repository name",
        ),
        (
            "claim name that is not a name",
            with("s6", &["model", "source"], json!("pvc://Weights_1/llama")),
            "spec.model.source: pvc:// needs the name of a PersistentVolumeClaim",
        ),
        (
            "relative node path",
            with("s7", &["model", "source"], json!("file://models/llama")),
            "spec.model.source: file:// needs an absolute path",
        ),
        (
            "node path climbing out",
            with(
                "s8",
                &["model", "source"],
                json!("file:///var/lib/models/../../etc"),
            ),
            "spec.model.source must not contain '.' or '..' path segments",
        ),
        (
            "extraArgs repeating --model",
            with(
                "x1",
                &["engine"],
                json!({ "extraArgs": ["--model", "/elsewhere"] }),
            ),
            "spec.engine.extraArgs must not repeat a flag the operator sets",
        ),
        (
            "extraArgs repeating --http-port=",
            with(
                "x2",
                &["engine"],
                json!({ "extraArgs": ["--http-port=9000"] }),
            ),
            "spec.engine.extraArgs must not repeat a flag the operator sets",
        ),
        (
            "API key reference without a key",
            with(
                "k1",
                &["engine"],
                json!({ "apiKeySecretRef": { "name": "chat-key" } }),
            ),
            "spec.engine.apiKeySecretRef.key",
        ),
        (
            "network policy peer selecting nothing",
            with("n1", &["networkPolicy"], json!({ "clients": [{}] })),
            "spec.networkPolicy: each peer needs a podSelector, a namespaceSelector or both",
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
    assert_eq!(
        spec.engine.image, None,
        "no image is filled in at admission: the operator's default applies"
    );
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
        vec![
            "NAME", "READY", "DESIRED", "REVISION", "QUEUE", "STATUS", "ROLLOUT", "AGE"
        ],
        "{stdout}"
    );
    assert!(
        stdout.lines().nth(1).is_some_and(|l| l.starts_with("chat")),
        "{stdout}"
    );
}

/// Every edge of what the schema accepts decodes into the Rust type, survives a round trip
/// through the type and the API server unchanged, and yields children the API server accepts
/// (a server-side dry run): nothing the schema lets in is undecodable or unrunnable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_valid_edge_values_round_trip_and_build_runnable_children() {
    let ns = "edges";
    let cluster = cluster(false);
    let client = cluster.client().await;
    cluster.namespace(&client, ns).await;
    let digest = format!("sha256:{}", "a".repeat(64));
    let edges: Vec<(&str, &[&str], Value)> = vec![
        (
            "surge-zero",
            &["rollout"],
            json!({ "maxSurge": 0, "maxUnavailable": 1 }),
        ),
        ("surge-max", &["rollout"], json!({ "maxSurge": 2147483647 })),
        (
            "surge-zero-pct",
            &["rollout"],
            json!({ "maxSurge": "0%", "maxUnavailable": "1%" }),
        ),
        (
            "surge-huge-pct",
            &["rollout"],
            json!({ "maxSurge": "999999999%" }),
        ),
        (
            "surge-null",
            &["rollout"],
            json!({ "maxSurge": null, "maxUnavailable": null }),
        ),
        (
            "unavail-max",
            &["rollout"],
            json!({ "maxUnavailable": 2147483647 }),
        ),
        (
            "unavail-full",
            &["rollout"],
            json!({ "maxSurge": 0, "maxUnavailable": "100%" }),
        ),
        (
            "cpu-int",
            &["resources"],
            json!({ "gpus": 0, "cpu": 2, "memory": 1073741824 }),
        ),
        (
            "cpu-milli",
            &["resources"],
            json!({ "gpus": 0, "cpu": "500m", "memory": "1.5Gi", "modelCache": "20Gi" }),
        ),
        (
            "cpu-exp",
            &["resources"],
            json!({ "gpus": 0, "cpu": "1.5", "memory": "1e9", "modelCache": "1Ti" }),
        ),
        (
            "tolerate-all",
            &["scheduling"],
            json!({ "tolerations": [{ "operator": "Exists" }] }),
        ),
        (
            "tolerate-some",
            &["scheduling"],
            json!({ "tolerations": [
            { "key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule" },
            { "key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30 },
            { "key": "pool", "value": "gpu" },
        ] }),
        ),
        (
            "image-local",
            &["engine"],
            json!({ "image": "localhost:5000/engine" }),
        ),
        (
            "image-digest",
            &["engine"],
            json!({ "image": format!("registry.example:443/team/engine:v1.2_rc-3@{digest}") }),
        ),
        ("image-short", &["engine"], json!({ "image": "engine" })),
        (
            "extra-args",
            &["engine"],
            json!({ "extraArgs": ["--max-queued-requests", "64", "--model-cache-note=x"] }),
        ),
        (
            "api-key",
            &["engine"],
            json!({ "apiKeySecretRef": { "name": "chat.keys", "key": "api_key-1" } }),
        ),
        ("pvc-whole", &["model", "source"], json!("pvc://weights")),
        (
            "pvc-path",
            &["model", "source"],
            json!("pvc://weights.v2/llama/8b"),
        ),
        (
            "file-gguf",
            &["model", "source"],
            json!("file:///var/lib/models/smollm2.gguf"),
        ),
        (
            "https-port",
            &["model", "source"],
            json!("https://models.example:8443/llama?rev=1"),
        ),
        ("s3-bucket", &["model", "source"], json!("s3://bucket")),
        (
            "hf-dots",
            &["model", "source"],
            json!("hf://Org.AI/Model-1.5_instruct"),
        ),
        ("policy-empty", &["networkPolicy"], json!({})),
        (
            "policy-peers",
            &["networkPolicy"],
            json!({
                "clients": [
                    { "podSelector": { "matchLabels": { "app": "gateway" } } },
                    { "namespaceSelector": { "matchExpressions": [{ "key": "team", "operator": "In", "values": ["ml"] }] } },
                ],
                "prometheus": [{
                    "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "monitoring" } },
                    "podSelector": { "matchLabels": { "app.kubernetes.io/name": "prometheus" } },
                }],
            }),
        ),
    ];
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "modelfleet.dev",
        "v1alpha1",
        "ModelDeployment",
    ));
    let raw: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    let typed: Api<ModelDeployment> = Api::namespaced(client.clone(), ns);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let mut failures = Vec::new();
    for (name, path, value) in &edges {
        let mut manifest = with(name, path, value.clone());
        manifest["metadata"]["namespace"] = json!(ns);
        if let Err(e) = raw
            .create(
                &PostParams::default(),
                &serde_json::from_value(manifest).expect("object"),
            )
            .await
        {
            failures.push(format!("{name}: refused: {e}"));
            continue;
        }
        let md = match typed.get(name).await {
            Ok(md) => md,
            Err(e) => {
                failures.push(format!("{name}: accepted but does not decode: {e}"));
                continue;
            }
        };
        // Through the type and back: the same spec.
        let copy_name = format!("{name}-copy");
        let copy = json!({
            "apiVersion": "modelfleet.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": { "name": copy_name },
            "spec": serde_json::to_value(&md.spec).expect("spec"),
        });
        let copied = typed
            .create(
                &PostParams::default(),
                &serde_json::from_value(copy).expect("copy"),
            )
            .await;
        match copied {
            Ok(copied) if copied.spec == md.spec => {}
            Ok(copied) => failures.push(format!(
                "{name}: the spec changed on a round trip:\n{:?}\n{:?}",
                md.spec, copied.spec
            )),
            Err(e) => failures.push(format!("{name}: its own encoding is refused: {e}")),
        }
        // What the operator builds from it, the API server takes.
        let desired = desired_state(&md, 1, DEFAULT_ENGINE_IMAGE).expect("desired state");
        let results = [
            (
                "Deployment",
                Api::<Deployment>::namespaced(client.clone(), ns)
                    .create(&dry_run, &desired.deployment)
                    .await
                    .err(),
            ),
            (
                "Service",
                Api::<Service>::namespaced(client.clone(), ns)
                    .create(&dry_run, &desired.service)
                    .await
                    .err(),
            ),
            (
                "PodDisruptionBudget",
                Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
                    .create(&dry_run, &desired.pdb)
                    .await
                    .err(),
            ),
        ];
        for (kind, error) in results {
            if let Some(e) = error {
                failures.push(format!("{name}: the API server refuses its {kind}: {e}"));
            }
        }
        if let Some(policy) = &desired.network_policy
            && let Err(e) = Api::<NetworkPolicy>::namespaced(client.clone(), ns)
                .create(&dry_run, policy)
                .await
        {
            failures.push(format!(
                "{name}: the API server refuses its NetworkPolicy: {e}"
            ));
        }
    }
    // Every object, listed at once, decodes: one bad object would fail the whole list.
    if let Err(e) = typed.list(&Default::default()).await {
        failures.push(format!("listing them all: {e}"));
    }
    let surge_null = typed.get("surge-null").await.expect("surge-null");
    assert_eq!(
        (
            surge_null.spec.rollout.max_surge,
            surge_null.spec.rollout.max_unavailable
        ),
        (
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1),
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0)
        ),
        "an explicit null takes the default"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
