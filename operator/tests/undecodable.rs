//! A stored ModelDeployment the operator cannot decode (a value an older, looser CRD let in,
//! as before `spec.rollout.maxSurge` was bounded) is a failure of that object alone: it says
//! so in its status and in `kubectl get md`, while every other ModelDeployment is still
//! reconciled and autoscaled, and the object is reconciled as soon as it is fixed. A stored
//! `null`, the other value the older CRD let in, needs no fixing: today's CRD is not
//! nullable there, so the API server drops the null and defaults the field on every read.
//!
//! This binary changes the CRD in the middle of its test, so it has its own control plane and
//! no other test.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use modelfleet_e2e::prometheus::{Prometheus, PrometheusOptions, StaticTarget};
use modelfleet_e2e::queue_depth_endpoint::serve_queue_depth;
use modelfleet_operator::api::ModelDeployment;
use modelfleet_operator::autoscaler::AutoscalerConfig;
use serde_json::json;

const NS: &str = "tenants";

/// The CRD as it was before `maxSurge` was bounded: any integer or string, and null.
fn looser_crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    let mut crd = serde_json::to_value(repo_crd().expect("the CRD")).expect("json");
    let rollout = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["rollout"];
    rollout["properties"]["maxSurge"] = json!({
        "x-kubernetes-int-or-string": true,
        "nullable": true,
        "default": 1,
    });
    rollout
        .as_object_mut()
        .expect("rollout schema")
        .remove("x-kubernetes-validations");
    serde_json::from_value(crd).expect("a CRD")
}

fn manifest(name: &str, rollout: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "modelfleet.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": { "name": name, "namespace": NS },
        "spec": {
            "model": { "source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "revision": "r1" },
            "resources": { "gpus": 0 },
            "replicas": { "min": 1, "max": 5 },
            "autoscaling": {
                "targetQueueDepth": 4, "window": "1s",
                "scaleUpStabilization": "0s", "scaleDownStabilization": "5s",
            },
            "rollout": rollout,
        },
    })
}

fn ready(md: &DynamicObject) -> Option<(String, String, String)> {
    let conditions = md.data["status"]["conditions"].as_array()?;
    let ready = conditions.iter().find(|c| c["type"] == "Ready")?;
    Some((
        ready["status"].as_str()?.to_string(),
        ready["reason"].as_str()?.to_string(),
        ready["message"].as_str()?.to_string(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_object_fails_alone_and_the_others_are_reconciled_and_autoscaled() {
    let cluster = cluster(false);
    let client = cluster.client().await;
    cluster.namespace(&client, NS).await;
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "modelfleet.dev",
        "v1alpha1",
        "ModelDeployment",
    ));
    let raw: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &resource);
    let typed: Api<ModelDeployment> = Api::namespaced(client.clone(), NS);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let create = |object: serde_json::Value| {
        let raw = raw.clone();
        async move {
            let object: DynamicObject = serde_json::from_value(object).expect("object");
            raw.create(&PostParams::default(), &object).await
        }
    };

    // Under the older schema, two objects get in that the Rust type cannot hold.
    apply_crd(&client, &looser_crd())
        .await
        .expect("the looser CRD");
    until(
        "the looser schema to take an out-of-range maxSurge",
        || async {
            create(manifest("too-big", json!({ "maxSurge": 3_000_000_000u64 })))
                .await
                .ok()
        },
    )
    .await;
    create(manifest("null-surge", json!({ "maxSurge": null })))
        .await
        .expect("null under the looser schema");
    let stored = raw.get("null-surge").await.expect("get");
    assert!(
        stored.data["spec"]["rollout"]["maxSurge"].is_null(),
        "the looser schema keeps the null: {:?}",
        stored.data["spec"]["rollout"]
    );
    // Back to today's CRD: stored objects are not revalidated, so they stay as they are,
    // while new ones with such values are refused.
    apply_crd(&client, &repo_crd().expect("the CRD"))
        .await
        .expect("today's CRD");
    until(
        "today's schema to refuse an out-of-range maxSurge",
        || async {
            match create(manifest("probe", json!({ "maxSurge": 3_000_000_000u64 }))).await {
                Err(kube::Error::Api(status)) if status.code == 422 => Some(()),
                Ok(_) => {
                    let _ = raw.delete("probe", &Default::default()).await;
                    None
                }
                Err(_) => None,
            }
        },
    )
    .await;
    create(manifest("healthy", json!({ "maxSurge": 1 })))
        .await
        .expect("a valid object");
    // The positive control for what follows: a typed list fails as a whole, as the
    // operator's watch did.
    assert!(
        typed.list(&Default::default()).await.is_err(),
        "the stored objects decode after all: the test proves nothing"
    );

    // The queue depth of "healthy" is 12 against a target of 4: it needs 3 replicas.
    let depth = Arc::new(AtomicU64::new(1200));
    let address = serve_queue_depth(depth.clone()).await;
    let prometheus = Prometheus::start(PrometheusOptions {
        scrape_interval: Duration::from_millis(250),
        static_targets: vec![
            StaticTarget::new(&address)
                .label("namespace", NS)
                .label("modeldeployment", "healthy"),
        ],
        ..PrometheusOptions::default()
    })
    .await
    .expect("Prometheus starts");
    let operator = start_autoscaling_operator(
        client.clone(),
        NS,
        "op-tenants",
        AutoscalerConfig {
            prometheus_url: prometheus.url(),
            interval: Duration::from_millis(500),
        },
    );

    until("healthy's Deployment autoscaled to 3 replicas", || async {
        deployments
            .get_opt("healthy")
            .await
            .ok()
            .flatten()
            .filter(|d| d.spec.as_ref().and_then(|s| s.replicas) == Some(3))
    })
    .await;
    // The stored null reads back as the default, so that object is reconciled like any other.
    let healed = raw.get("null-surge").await.expect("get");
    assert_eq!(healed.data["spec"]["rollout"]["maxSurge"], json!(1));
    until("null-surge's Deployment", || async {
        deployments.get_opt("null-surge").await.ok().flatten()
    })
    .await;
    let md = until("too-big: Ready=False, InvalidSpec", || async {
        raw.get("too-big")
            .await
            .ok()
            .filter(|md| ready(md).is_some_and(|(s, r, _)| s == "False" && r == "InvalidSpec"))
    })
    .await;
    let (_, _, message) = ready(&md).expect("ready");
    assert!(
        message.contains("spec.rollout.maxSurge"),
        "the message names the field: {message}"
    );
    assert_eq!(
        md.data["status"]["observedGeneration"],
        json!(md.metadata.generation)
    );
    assert!(
        deployments.get_opt("too-big").await.expect("get").is_none(),
        "nothing is built from a spec that does not decode"
    );

    // What `kubectl get md` shows a user.
    let kubectl = modelfleet_e2e::tools::tool("kubectl").expect("kubectl (make tools)");
    let output = tokio::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig_path())
        .args(["get", "md", "-n", NS])
        .output()
        .await
        .expect("run kubectl");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
            .to_string()
    };
    assert!(row("too-big").contains("InvalidSpec"), "{table}");
    assert!(!row("healthy").contains("InvalidSpec"), "{table}");

    // Fixed, the object is reconciled like any other.
    raw.patch(
        "too-big",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "rollout": { "maxSurge": 1 } } })),
    )
    .await
    .expect("fix too-big");
    until("too-big's Deployment once fixed", || async {
        deployments.get_opt("too-big").await.ok().flatten()
    })
    .await;
    until("too-big no longer InvalidSpec", || async {
        raw.get("too-big")
            .await
            .ok()
            .filter(|md| ready(md).is_some_and(|(_, reason, _)| reason != "InvalidSpec"))
    })
    .await;
    operator.stop().await.expect("the operator stops cleanly");
}
