//! The queue-depth autoscaler against a real kube-apiserver and a real Prometheus that
//! scrapes a `/metrics` endpoint this test serves, standing in for the engines: the
//! Deployment follows the queue depth up at once and down after the stabilization window,
//! holds its size while Prometheus is down (also across an operator restart), and resumes
//! when Prometheus is back.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use modelfleet_e2e::prometheus::{Prometheus, PrometheusOptions, StaticTarget};
use modelfleet_e2e::queue_depth_endpoint::serve_queue_depth;
use modelfleet_operator::api::ModelDeployment;
use modelfleet_operator::autoscaler::AutoscalerConfig;

const INTERVAL: Duration = Duration::from_millis(500);

fn autoscaled(ns: &str, name: &str) -> serde_json::Value {
    let mut manifest = minimal(ns, name, "r1");
    manifest["spec"]["replicas"] = serde_json::json!({ "min": 1, "max": 5 });
    manifest["spec"]["autoscaling"] = serde_json::json!({
        "targetQueueDepth": 4,
        "window": "1s",
        "scaleUpStabilization": "0s",
        "scaleDownStabilization": "5s",
    });
    manifest
}

fn scaling_active(md: &ModelDeployment) -> Option<(String, String)> {
    let c = md.status.as_ref()?.condition("ScalingActive")?;
    Some((c.status.clone(), c.reason.clone()))
}

async fn wait_condition(
    mds: &Api<ModelDeployment>,
    name: &str,
    status: &str,
    reason: &str,
) -> ModelDeployment {
    let want = Some((status.to_string(), reason.to_string()));
    until(
        &format!("{name}: ScalingActive={status} ({reason})"),
        || {
            let want = want.clone();
            async move {
                mds.get(name)
                    .await
                    .ok()
                    .filter(|md| scaling_active(md) == want)
            }
        },
    )
    .await
}

fn replicas(d: &Deployment) -> Option<i32> {
    d.spec.as_ref()?.replicas
}

async fn wait_replicas(deployments: &Api<Deployment>, name: &str, want: i32) -> Deployment {
    until(&format!("Deployment {name} at {want} replicas"), || async {
        deployments
            .get(name)
            .await
            .ok()
            .filter(|d| replicas(d) == Some(want))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_the_queue_depth_and_hold_while_prometheus_is_down() {
    let ns = "autoscale";
    let shared = cluster(false);
    let client = shared.client().await;
    shared.namespace(&client, ns).await;
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);

    let depth = Arc::new(AtomicU64::new(0));
    let address = serve_queue_depth(depth.clone()).await;
    let mut prometheus = Prometheus::start(PrometheusOptions {
        scrape_interval: Duration::from_millis(250),
        static_targets: vec![
            StaticTarget::new(&address)
                .label("namespace", ns)
                .label("modeldeployment", "chat"),
        ],
        ..PrometheusOptions::default()
    })
    .await
    .expect("Prometheus starts");
    let config = AutoscalerConfig {
        prometheus_url: prometheus.url(),
        interval: INTERVAL,
    };
    let operator = start_autoscaling_operator(client.clone(), ns, "op-autoscale", config.clone());

    // "chat" has its queue depth scraped; "quiet" has no series at all.
    apply_as_user(&client, ns, &autoscaled(ns, "chat")).await;
    apply_as_user(&client, ns, &autoscaled(ns, "quiet")).await;
    let md = wait_condition(&mds, "chat", "True", "QueueDepth").await;
    assert_eq!(md.status.as_ref().and_then(|s| s.queue_depth), Some(0.0));
    wait_replicas(&deployments, "chat", 1).await;
    let quiet = wait_condition(&mds, "quiet", "False", "NoMetrics").await;
    assert_eq!(quiet.status.map(|s| s.desired_replicas), Some(1));

    // 12 waiting over a target of 4 per replica: 3 replicas.
    depth.store(1200, Ordering::SeqCst);
    wait_replicas(&deployments, "chat", 3).await;
    let md = until("status desiredReplicas 3 with queue depth 12", || async {
        mds.get("chat").await.ok().filter(|md| {
            md.status
                .as_ref()
                .is_some_and(|s| s.desired_replicas == 3 && s.queue_depth == Some(12.0))
        })
    })
    .await;
    let status = md.status.expect("status");
    assert!(status.last_scale_time.is_some(), "lastScaleTime is set");
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let event = until("a Scaled event that names the queue depth", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("Scaled")
                && e.note.as_deref().is_some_and(|n| {
                    // The rise may pass through 2 while the window average climbs.
                    n.starts_with("scaled from ")
                        && n.contains(" to 3 replicas: queue depth ")
                        && n.ends_with(" over target 4 per replica")
                })
        })
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Normal"));
    // Never more than the queue asks for.
    let d = deployments.get("chat").await.expect("deployment");
    assert_eq!(replicas(&d), Some(3));

    // Prometheus goes away and the queue empties: nothing can be read, so nothing moves.
    prometheus.stop();
    depth.store(0, Ordering::SeqCst);
    let md = wait_condition(&mds, "chat", "False", "PrometheusUnavailable").await;
    let condition = md
        .status
        .as_ref()
        .and_then(|s| s.condition("ScalingActive"))
        .expect("condition");
    assert!(
        condition.message.contains("holding 3 replicas"),
        "{}",
        condition.message
    );
    // An operator restart in the middle of the outage still holds the size: it comes from
    // the status, not from memory.
    operator.stop().await.expect("operator stops");
    let operator = start_autoscaling_operator(client.clone(), ns, "op-autoscale-2", config);
    // Longer than the down-stabilization window, with an empty queue the whole time.
    for _ in 0..16 {
        tokio::time::sleep(INTERVAL).await;
        let d = deployments.get("chat").await.expect("deployment");
        assert_eq!(
            replicas(&d),
            Some(3),
            "replicas held while Prometheus is down"
        );
    }
    let md = mds.get("chat").await.expect("chat");
    assert_eq!(
        scaling_active(&md),
        Some(("False".into(), "PrometheusUnavailable".into()))
    );
    assert_eq!(md.status.map(|s| s.desired_replicas), Some(3));

    // Prometheus returns with an empty queue: scaling resumes, and after the down window
    // the fleet is back at its minimum.
    prometheus
        .start_again()
        .await
        .expect("Prometheus starts again");
    wait_condition(&mds, "chat", "True", "QueueDepth").await;
    wait_replicas(&deployments, "chat", 1).await;
    let md = until("status desiredReplicas 1", || async {
        mds.get("chat")
            .await
            .ok()
            .filter(|md| md.status.as_ref().is_some_and(|s| s.desired_replicas == 1))
    })
    .await;
    assert_eq!(md.status.and_then(|s| s.queue_depth), Some(0.0));
    until(
        "a Scaled event back to 1 that names the queue depth",
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find(|e| {
                e.reason.as_deref() == Some("Scaled")
                    && e.note.as_deref().is_some_and(|n| {
                        n.starts_with("scaled from 3 to 1 replicas: queue depth 0 under target 4")
                    })
            })
        },
    )
    .await;
    operator.stop().await.expect("operator stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_prometheus_scaling_is_inactive_and_the_size_stays_put() {
    let ns = "no-prometheus";
    let shared = cluster(false);
    let client = shared.client().await;
    shared.namespace(&client, ns).await;
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let operator = start_operator(client.clone(), ns, "op-no-prometheus", None);
    let mut manifest = autoscaled(ns, "chat");
    manifest["spec"]["replicas"] = serde_json::json!({ "min": 2, "max": 5 });
    apply_as_user(&client, ns, &manifest).await;
    let md = wait_condition(&mds, "chat", "False", "NoPrometheus").await;
    assert_eq!(md.status.map(|s| s.desired_replicas), Some(2));
    wait_replicas(&deployments, "chat", 2).await;
    operator.stop().await.expect("operator stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scale_subresource_takes_the_fleet_over_and_hands_it_back_at_its_size() {
    let ns = "handover";
    let shared = cluster(false);
    let client = shared.client().await;
    shared.namespace(&client, ns).await;
    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let operator = start_operator(client.clone(), ns, "op-handover", None);
    apply_as_user(&client, ns, &autoscaled(ns, "chat")).await;
    wait_condition(&mds, "chat", "False", "NoPrometheus").await;
    // Unset count: the built-in autoscaler decides, and reading the scale subresource is
    // refused with the field named (an HPA reports FailedGetScale rather than fight it).
    let refused = mds
        .get_scale("chat")
        .await
        .expect_err("no spec replicas to read");
    assert!(
        refused.to_string().contains(".spec.replicas.count"),
        "{refused}"
    );

    // What `kubectl scale md chat --replicas=4` (or an HPA) does: it takes over.
    mds.patch_scale(
        "chat",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "spec": { "replicas": 4 } })),
    )
    .await
    .expect("scale");
    wait_condition(&mds, "chat", "False", "ScaleSubresource").await;
    wait_replicas(&deployments, "chat", 4).await;
    let scale = mds.get_scale("chat").await.expect("get scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(4));

    // Removing count hands the fleet back at the size it has, not at min.
    mds.patch(
        "chat",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "spec": { "replicas": { "count": null } } })),
    )
    .await
    .expect("remove count");
    let md = wait_condition(&mds, "chat", "False", "NoPrometheus").await;
    assert_eq!(md.spec.replicas.count, None);
    assert_eq!(md.status.map(|s| s.desired_replicas), Some(4));
    let d = deployments.get("chat").await.expect("deployment");
    assert_eq!(replicas(&d), Some(4));
    operator.stop().await.expect("operator stops");
}
