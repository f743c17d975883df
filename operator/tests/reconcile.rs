//! The reconciler against a real kube-apiserver and kube-controller-manager: what the
//! cluster really does with the objects the operator applies.

mod common;

use std::collections::BTreeMap;

use common::*;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use modelfleet_operator::api::ModelDeployment;
use modelfleet_operator::controller::FIELD_MANAGER;
use modelfleet_operator::desired::REVISION_ANNOTATION;

const MANAGED: &str = "app.kubernetes.io/managed-by=modelfleet-operator";

struct Apis {
    mds: Api<ModelDeployment>,
    deployments: Api<Deployment>,
    services: Api<Service>,
    pdbs: Api<PodDisruptionBudget>,
}

fn apis(client: &Client, ns: &str) -> Apis {
    Apis {
        mds: Api::namespaced(client.clone(), ns),
        deployments: Api::namespaced(client.clone(), ns),
        services: Api::namespaced(client.clone(), ns),
        pdbs: Api::namespaced(client.clone(), ns),
    }
}

async fn setup(ns: &str) -> (Client, Apis) {
    let cluster = cluster(true);
    let client = cluster.client().await;
    cluster.namespace(&client, ns).await;
    let apis = apis(&client, ns);
    (client, apis)
}

async fn wait_for_status<F>(
    mds: &Api<ModelDeployment>,
    name: &str,
    what: &str,
    check: F,
) -> ModelDeployment
where
    F: Fn(&ModelDeployment) -> bool,
{
    let check = &check;
    until(what, move || async move {
        mds.get_opt(name)
            .await
            .ok()
            .flatten()
            .filter(|md| check(md))
    })
    .await
}

fn template_revision(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(REVISION_ANNOTATION)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_the_example_creates_children_with_expected_fields_and_owner_refs() {
    let ns = "example";
    let (client, apis) = setup(ns).await;
    let operator = start_operator(client.clone(), ns, "op-example", None);
    let example = example(ns);
    let md = apply_as_user(&client, ns, &serde_json::to_value(&example).expect("json")).await;
    let uid = md.uid().expect("uid");
    let name = md.name_any();

    let deployment = until("the Deployment", || async {
        apis.deployments.get_opt(&name).await.ok().flatten()
    })
    .await;
    let service = until("the Service", || async {
        apis.services.get_opt(&name).await.ok().flatten()
    })
    .await;
    let pdb = until("the PodDisruptionBudget", || async {
        apis.pdbs.get_opt(&name).await.ok().flatten()
    })
    .await;

    for (kind, meta) in [
        ("Deployment", &deployment.metadata),
        ("Service", &service.metadata),
        ("PDB", &pdb.metadata),
    ] {
        let owners = meta
            .owner_references
            .as_ref()
            .unwrap_or_else(|| panic!("{kind} has no owner refs"));
        assert_eq!(owners.len(), 1, "{kind}");
        assert_eq!(owners[0].uid, uid, "{kind} owner uid");
        assert_eq!(owners[0].kind, "ModelDeployment", "{kind}");
        assert_eq!(owners[0].controller, Some(true), "{kind}");
        assert_eq!(owners[0].block_owner_deletion, Some(true), "{kind}");
        let labels = meta.labels.as_ref().expect("labels");
        assert_eq!(
            labels.get("modelfleet.dev/deployment"),
            Some(&name),
            "{kind}"
        );
    }

    let spec = deployment.spec.as_ref().expect("deployment spec");
    assert_eq!(spec.replicas, Some(example.spec.replicas.min));
    assert_eq!(
        template_revision(&deployment).as_deref(),
        Some(example.spec.model.revision.as_str())
    );
    let pod = spec.template.spec.as_ref().expect("pod spec");
    let fetch = &pod.init_containers.as_ref().expect("init containers")[0];
    let fetch_args = fetch.args.clone().unwrap_or_default();
    // The example's source is a node path: a read-only hostPath, which the fetch reads
    // below its own root.
    let node_path = example
        .spec
        .model
        .source
        .strip_prefix("file://")
        .expect("the example reads a node path");
    assert!(
        fetch_args.contains(&format!("file:///mnt/node{node_path}")),
        "{fetch_args:?}"
    );
    let host_paths: Vec<_> = pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.host_path.as_ref().map(|h| h.path.as_str()))
        .collect();
    assert_eq!(host_paths, vec![node_path]);
    assert!(
        fetch_args.contains(&example.spec.model.revision),
        "{fetch_args:?}"
    );
    let engine = &pod.containers[0];
    let ports: Vec<_> = engine
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        vec![(Some("grpc".into()), 50051), (Some("http".into()), 8000)]
    );
    assert_eq!(
        engine
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("memory"))
            .map(|q| q.0.as_str()),
        Some("2Gi")
    );
    let svc_ports: Vec<_> = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(svc_ports, vec![50051, 8000]);

    // The controller-manager accepts the template: a ReplicaSet and a Pod get created from it.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("modelfleet.dev/deployment={name}");
    until("a pod created from the template", || async {
        pods.list(&ListParams::default().labels(&selector))
            .await
            .ok()
            .filter(|l| !l.items.is_empty())
    })
    .await;

    let md = wait_for_status(
        &apis.mds,
        &name,
        "status with updatedRevision and conditions",
        |md| {
            md.status.as_ref().is_some_and(|s| {
                s.updated_revision.as_deref() == Some(example.spec.model.revision.as_str())
                    && s.conditions.len() == 4
            })
        },
    )
    .await;
    let status = md.status.clone().expect("status");
    assert_eq!(status.observed_generation, md.metadata.generation);
    assert_eq!(status.desired_replicas, example.spec.replicas.min);
    assert_eq!(
        status.endpoint.as_deref(),
        Some("http://smollm2.example.svc:8000")
    );
    assert_eq!(
        status.condition("Ready").map(|c| c.status.as_str()),
        Some("False"),
        "no kubelet, so nothing is available"
    );
    assert_eq!(
        status.condition("Degraded").map(|c| c.status.as_str()),
        Some("False")
    );

    // The operator writes status only; the spec belongs to the user (GitOps sees no drift).
    for entry in md.metadata.managed_fields.iter().flatten() {
        if entry.manager.as_deref() == Some(FIELD_MANAGER) {
            assert_eq!(
                entry.subresource.as_deref(),
                Some("status"),
                "operator wrote outside status: {entry:?}"
            );
        }
    }

    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    until("a Created event on the ModelDeployment", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("Created")
                && e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid.as_str())
        })
    })
    .await;
    operator.stop().await.expect("operator stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_revision_rolls_the_pod_template_and_moves_updated_revision() {
    let ns = "revision";
    let (client, apis) = setup(ns).await;
    let _operator = start_operator(client.clone(), ns, "op-revision", None);
    apply_as_user(&client, ns, &minimal(ns, "chat", "rev-one")).await;
    wait_for_status(&apis.mds, "chat", "updatedRevision rev-one", |md| {
        md.status
            .as_ref()
            .and_then(|s| s.updated_revision.as_deref())
            == Some("rev-one")
    })
    .await;
    let before = apis.deployments.get("chat").await.expect("deployment");

    apply_as_user(&client, ns, &minimal(ns, "chat", "rev-two")).await;
    let after = until("the pod template to carry rev-two", || async {
        apis.deployments
            .get("chat")
            .await
            .ok()
            .filter(|d| template_revision(d).as_deref() == Some("rev-two"))
    })
    .await;
    let fetch_args = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.init_containers.as_ref())
            .map(|c| c[0].args.clone())
    };
    assert_ne!(fetch_args(&before), fetch_args(&after));
    assert!(
        fetch_args(&after)
            .flatten()
            .is_some_and(|a| a.contains(&"rev-two".to_string()))
    );
    assert_eq!(
        before.spec.as_ref().map(|s| &s.selector),
        after.spec.as_ref().map(|s| &s.selector),
        "the selector is immutable and must not change"
    );

    let md = wait_for_status(&apis.mds, "chat", "updatedRevision rev-two", |md| {
        md.status
            .as_ref()
            .and_then(|s| s.updated_revision.as_deref())
            == Some("rev-two")
    })
    .await;
    assert_eq!(
        md.status.as_ref().and_then(|s| s.current_revision.clone()),
        None,
        "no pod ever became available"
    );

    // The Deployment controller rolls: a second ReplicaSet for the new template.
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    until("a ReplicaSet per revision", || async {
        let list = replicasets
            .list(&ListParams::default().labels("modelfleet.dev/deployment=chat"))
            .await
            .ok()?;
        let revisions: std::collections::BTreeSet<_> = list
            .items
            .iter()
            .filter_map(|rs| {
                rs.spec
                    .as_ref()?
                    .template
                    .as_ref()?
                    .metadata
                    .as_ref()?
                    .annotations
                    .as_ref()?
                    .get(REVISION_ANNOTATION)
                    .cloned()
            })
            .collect();
        (revisions.len() == 2).then_some(())
    })
    .await;

    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    until("a RolloutStarted event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("RolloutStarted"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_model_deployment_garbage_collects_its_children() {
    let ns = "deletion";
    let (client, apis) = setup(ns).await;
    let _operator = start_operator(client.clone(), ns, "op-deletion", None);
    apply_as_user(&client, ns, &minimal(ns, "chat", "r1")).await;
    until("the Deployment", || async {
        apis.deployments.get_opt("chat").await.ok().flatten()
    })
    .await;
    until("the Service", || async {
        apis.services.get_opt("chat").await.ok().flatten()
    })
    .await;
    until("the PDB", || async {
        apis.pdbs.get_opt("chat").await.ok().flatten()
    })
    .await;

    apis.mds
        .delete("chat", &DeleteParams::default())
        .await
        .expect("delete");
    until("the Deployment to be garbage-collected", || async {
        apis.deployments
            .get_opt("chat")
            .await
            .ok()
            .filter(Option::is_none)
    })
    .await;
    until("the Service to be garbage-collected", || async {
        apis.services
            .get_opt("chat")
            .await
            .ok()
            .filter(Option::is_none)
    })
    .await;
    until("the PDB to be garbage-collected", || async {
        apis.pdbs.get_opt("chat").await.ok().filter(Option::is_none)
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    until("the pods to be garbage-collected", || async {
        pods.list(&ListParams::default().labels("modelfleet.dev/deployment=chat"))
            .await
            .ok()
            .filter(|l| l.items.is_empty())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restarted_midway_converges_without_duplicates() {
    let ns = "restart";
    let (client, apis) = setup(ns).await;
    let first = start_operator(client.clone(), ns, "op-restart-1", None);
    apply_as_user(&client, ns, &minimal(ns, "alpha", "a1")).await;
    until("alpha's Deployment", || async {
        apis.deployments.get_opt("alpha").await.ok().flatten()
    })
    .await;
    first.kill().await;

    // While no operator runs: change one object and create another.
    apply_as_user(&client, ns, &minimal(ns, "alpha", "a2")).await;
    apply_as_user(&client, ns, &minimal(ns, "beta", "b1")).await;

    let second = start_operator(client.clone(), ns, "op-restart-2", None);
    until("alpha's template to carry a2", || async {
        apis.deployments
            .get("alpha")
            .await
            .ok()
            .filter(|d| template_revision(d).as_deref() == Some("a2"))
    })
    .await;
    for name in ["alpha", "beta"] {
        wait_for_status(&apis.mds, name, "status of the current generation", |md| {
            md.status.as_ref().and_then(|s| s.observed_generation) == md.metadata.generation
        })
        .await;
    }
    until("beta's PDB", || async {
        apis.pdbs.get_opt("beta").await.ok().flatten()
    })
    .await;

    let managed = ListParams::default().labels(MANAGED);
    let names = |items: Vec<String>| -> Vec<String> {
        let mut items = items;
        items.sort();
        items
    };
    let deployments = apis.deployments.list(&managed).await.expect("list").items;
    let services = apis.services.list(&managed).await.expect("list").items;
    let pdbs = apis.pdbs.list(&managed).await.expect("list").items;
    let expected = vec!["alpha".to_string(), "beta".to_string()];
    assert_eq!(
        names(deployments.iter().map(ResourceExt::name_any).collect()),
        expected
    );
    assert_eq!(
        names(services.iter().map(ResourceExt::name_any).collect()),
        expected
    );
    assert_eq!(
        names(pdbs.iter().map(ResourceExt::name_any).collect()),
        expected
    );
    for d in &deployments {
        assert_eq!(
            d.owner_references().len(),
            1,
            "{} has one owner",
            d.name_any()
        );
    }
    second.stop().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edited_owned_field_is_reverted_while_another_managers_label_survives() {
    let ns = "drift";
    let (client, apis) = setup(ns).await;
    let _operator = start_operator(client.clone(), ns, "op-drift", None);
    apply_as_user(&client, ns, &minimal(ns, "chat", "r1")).await;
    until("the Deployment", || async {
        apis.deployments.get_opt("chat").await.ok().flatten()
    })
    .await;

    // Someone edits the Deployment by hand: scales it and adds their own label.
    let edit = serde_json::json!({
        "metadata": { "labels": { "team": "search" } },
        "spec": { "replicas": 4, "progressDeadlineSeconds": 42 },
    });
    let edited = apis
        .deployments
        .patch(
            "chat",
            &PatchParams {
                field_manager: Some("kubectl-edit".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&edit),
        )
        .await
        .expect("hand edit");
    assert_eq!(edited.spec.as_ref().and_then(|s| s.replicas), Some(4));

    let reverted = until(
        "the operator to put back replicas and the deadline",
        || async {
            apis.deployments.get("chat").await.ok().filter(|d| {
                let spec = d.spec.as_ref();
                spec.and_then(|s| s.replicas) == Some(1)
                    && spec.and_then(|s| s.progress_deadline_seconds) == Some(900)
            })
        },
    )
    .await;
    let labels: BTreeMap<String, String> = reverted.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("team").map(String::as_str),
        Some("search"),
        "another manager's label must survive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciling_an_unchanged_object_writes_nothing() {
    let ns = "steady";
    let (client, apis) = setup(ns).await;
    let operator = start_operator(client.clone(), ns, "op-steady", None);
    apply_as_user(&client, ns, &minimal(ns, "chat", "r1")).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    until("the pod", || async {
        pods.list(&ListParams::default().labels("modelfleet.dev/deployment=chat"))
            .await
            .ok()
            .filter(|l| !l.items.is_empty())
    })
    .await;

    // Let the Deployment controller and the disruption controller finish their own status
    // updates (they react to the pod), so only the operator could write from here on.
    let snapshot = || async {
        let md = apis.mds.get("chat").await.ok()?;
        let d = apis.deployments.get("chat").await.ok()?;
        let s = apis.services.get("chat").await.ok()?;
        let p = apis.pdbs.get("chat").await.ok()?;
        let settled = d.status.as_ref().and_then(|st| st.observed_generation)
            == d.metadata.generation
            && d.status.as_ref().and_then(|st| st.replicas) == Some(1)
            && p.status.as_ref().and_then(|st| st.observed_generation) == p.metadata.generation
            && md.status.as_ref().and_then(|st| st.observed_generation) == md.metadata.generation;
        settled.then(|| {
            (
                d.resource_version(),
                s.resource_version(),
                p.resource_version(),
                md.status.clone(),
            )
        })
    };
    let mut previous = until("a settled state", snapshot).await;
    let started = std::time::Instant::now();
    let settled = loop {
        // Polling interval: a state counts as settled when two reads 2 s apart agree.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let now = until("a settled state", snapshot).await;
        if now == previous {
            break now;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "the objects never stopped changing"
        );
        previous = now;
    };
    let (deployment_rv, service_rv, pdb_rv, status) = settled;

    // Trigger reconciles without changing anything the operator computes from.
    let writes_before = operator.metrics.status_writes.get();
    for round in 0..3 {
        let reconciles = operator.reconciles();
        let poke = serde_json::json!({ "metadata": { "annotations": { "example.com/poke": round.to_string() } } });
        let poked = apis
            .mds
            .patch(
                "chat",
                &PatchParams {
                    field_manager: Some(USER_MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(&poke),
            )
            .await
            .expect("poke");
        until("a reconcile after the poke", || async {
            (operator.reconciles() > reconciles).then_some(())
        })
        .await;
        // Once the reconcile has run, every object must still be at the version it had.
        let md = apis.mds.get("chat").await.expect("md");
        assert_eq!(
            md.resource_version(),
            poked.resource_version(),
            "the operator wrote the ModelDeployment"
        );
        assert_eq!(md.status, status, "status changed");
        let d = apis.deployments.get("chat").await.expect("deployment");
        assert_eq!(
            d.resource_version(),
            deployment_rv,
            "the Deployment was written: {:?}",
            d.metadata.managed_fields
        );
        assert_eq!(
            apis.services
                .get("chat")
                .await
                .expect("service")
                .resource_version(),
            service_rv,
            "the Service was written"
        );
        assert_eq!(
            apis.pdbs.get("chat").await.expect("pdb").resource_version(),
            pdb_rv,
            "the PDB was written"
        );
    }
    assert_eq!(
        operator.metrics.status_writes.get(),
        writes_before,
        "status writes happened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_past_its_progress_deadline_makes_the_model_deployment_degraded() {
    let ns = "deadline";
    let (client, apis) = setup(ns).await;
    let _operator = start_operator(client.clone(), ns, "op-deadline", None);
    let mut manifest = minimal(ns, "chat", "r1");
    manifest["spec"]["rollout"] = serde_json::json!({ "progressDeadline": "5s" });
    apply_as_user(&client, ns, &manifest).await;
    // No kubelet runs, so no pod ever becomes available and the deadline passes.
    let md = wait_for_status(&apis.mds, "chat", "Degraded=True", |md| {
        md.status
            .as_ref()
            .and_then(|s| s.condition("Degraded"))
            .is_some_and(|c| c.status == "True")
    })
    .await;
    let status = md.status.expect("status");
    let degraded = status.condition("Degraded").expect("degraded");
    assert_eq!(degraded.reason, "ProgressDeadlineExceeded");
    assert!(
        degraded.message.contains("spec.rollout.progressDeadline"),
        "{}",
        degraded.message
    );
    assert_eq!(
        status.condition("Progressing").map(|c| c.reason.as_str()),
        Some("ProgressDeadlineExceeded")
    );
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    until("a Warning event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some("ProgressDeadlineExceeded")
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scale_subresource_drives_the_replica_count() {
    let ns = "scale";
    let (client, apis) = setup(ns).await;
    let _operator = start_operator(client.clone(), ns, "op-scale", None);
    let mut manifest = minimal(ns, "chat", "r1");
    manifest["spec"]["replicas"] = serde_json::json!({ "min": 1, "max": 4 });
    apply_as_user(&client, ns, &manifest).await;
    wait_for_status(&apis.mds, "chat", "a selector in status", |md| {
        md.status.as_ref().is_some_and(|s| s.selector.is_some())
    })
    .await;

    // What `kubectl scale md chat --replicas=3` (or an HPA) does.
    let scale = serde_json::json!({ "spec": { "replicas": 3 } });
    apis.mds
        .patch_scale("chat", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .expect("scale");
    until("the Deployment at 3 replicas", || async {
        apis.deployments
            .get("chat")
            .await
            .ok()
            .filter(|d| d.spec.as_ref().and_then(|s| s.replicas) == Some(3))
    })
    .await;
    wait_for_status(&apis.mds, "chat", "desiredReplicas 3", |md| {
        md.status.as_ref().is_some_and(|s| s.desired_replicas == 3)
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    until("a Scaled event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("Scaled")
                && e.note.as_deref() == Some("scaled from 1 to 3 replicas")
        })
    })
    .await;
    let scale = apis.mds.get_scale("chat").await.expect("get scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(3));
    assert_eq!(
        scale.status.and_then(|s| s.selector).as_deref(),
        Some("app.kubernetes.io/name=modelfleet-engine,modelfleet.dev/deployment=chat")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_pod_makes_the_model_deployment_degraded() {
    let ns = "crashloop";
    let (client, apis) = setup(ns).await;
    let _operator = start_operator(client.clone(), ns, "op-crashloop", None);
    apply_as_user(&client, ns, &minimal(ns, "chat", "r1")).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod = until("the pod", || async {
        let list = pods
            .list(&ListParams::default().labels("modelfleet.dev/deployment=chat"))
            .await
            .ok()?;
        list.items.into_iter().next()
    })
    .await;
    let pod_name = pod.name_any();
    wait_for_status(&apis.mds, "chat", "Degraded=False first", |md| {
        md.status
            .as_ref()
            .and_then(|s| s.condition("Degraded"))
            .is_some_and(|c| c.status == "False")
    })
    .await;

    // No kubelet runs here, so write what a kubelet reports for a container that keeps
    // crashing, through the pod's status subresource.
    let image = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers[0].image.clone())
        .unwrap_or_default();
    let status = serde_json::json!({ "status": { "phase": "Running", "containerStatuses": [{
        "name": "engine", "image": image, "imageID": "", "ready": false, "restartCount": 5,
        "state": { "waiting": { "reason": "CrashLoopBackOff", "message": "back-off 5m0s" } },
    }]}});
    pods.patch_status(&pod_name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("write the pod status");

    let md = wait_for_status(&apis.mds, "chat", "Degraded=True", |md| {
        md.status
            .as_ref()
            .and_then(|s| s.condition("Degraded"))
            .is_some_and(|c| c.status == "True")
    })
    .await;
    let degraded = md
        .status
        .as_ref()
        .and_then(|s| s.condition("Degraded"))
        .cloned()
        .expect("degraded");
    assert_eq!(degraded.reason, "CrashLoopBackOff");
    assert!(degraded.message.contains(&pod_name), "{}", degraded.message);
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    until("a CrashLoopBackOff warning event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|e| {
            e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some("CrashLoopBackOff")
        })
    })
    .await;
}

fn ready_condition(md: &ModelDeployment) -> Option<(String, String, String)> {
    let c = md.status.as_ref()?.condition("Ready")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn pod_template_spec(d: &Deployment) -> &k8s_openapi::api::core::v1::PodSpec {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod template spec")
}

/// `kubectl get md NAME -n NS` as a user sees it.
async fn kubectl_get_md(ns: &str, name: &str) -> String {
    let kubectl = modelfleet_e2e::tools::tool("kubectl").expect("kubectl (make tools)");
    let output = tokio::process::Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(cluster(true).kubeconfig_path())
        .args(["get", "md", name, "-n", ns])
        .output()
        .await
        .expect("run kubectl");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_someone_else_made_is_never_taken_over_or_garbage_collected() {
    let ns = "foreign";
    let (client, apis) = setup(ns).await;
    // A team's own Service that happens to have the name the ModelDeployment will get.
    let theirs: Service = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "chat", "labels": { "team": "search" } },
        "spec": { "selector": { "app": "search-api" }, "ports": [{ "name": "web", "port": 80 }] },
    }))
    .expect("service");
    let theirs = apis
        .services
        .create(&Default::default(), &theirs)
        .await
        .expect("create their Service");
    let _operator = start_operator(client.clone(), ns, "op-foreign", None);
    apply_as_user(&client, ns, &minimal(ns, "chat", "r1")).await;

    let md = wait_for_status(&apis.mds, "chat", "Ready=False, NotOwned", |md| {
        ready_condition(md).is_some_and(|(s, r, _)| s == "False" && r == "NotOwned")
    })
    .await;
    let (_, _, message) = ready_condition(&md).expect("ready");
    assert!(message.contains("Service foreign/chat"), "{message}");
    let degraded = md.status.as_ref().and_then(|s| s.condition("Degraded"));
    assert_eq!(
        degraded.map(|c| (c.status.as_str(), c.reason.as_str())),
        Some(("True", "NotOwned"))
    );
    assert!(kubectl_get_md(ns, "chat").await.contains("NotOwned"));
    // The positive control: the reconcile ran and applied what is its own.
    until("the Deployment and the PDB", || async {
        let d = apis.deployments.get_opt("chat").await.ok().flatten()?;
        apis.pdbs.get_opt("chat").await.ok().flatten().map(|_| d)
    })
    .await;
    let now = apis.services.get("chat").await.expect("their Service");
    assert_eq!(
        now.resource_version(),
        theirs.resource_version(),
        "their Service was written: {:?}",
        now.metadata.managed_fields
    );
    assert!(now.owner_references().is_empty());
    assert_eq!(
        now.spec.and_then(|s| s.selector),
        Some(BTreeMap::from([(
            "app".to_string(),
            "search-api".to_string()
        )]))
    );

    // Deleting the ModelDeployment removes what it owns and nothing else.
    apis.mds
        .delete("chat", &DeleteParams::default())
        .await
        .expect("delete");
    until("the Deployment to be garbage-collected", || async {
        apis.deployments
            .get_opt("chat")
            .await
            .ok()
            .filter(Option::is_none)
    })
    .await;
    until("the PDB to be garbage-collected", || async {
        apis.pdbs.get_opt("chat").await.ok().filter(Option::is_none)
    })
    .await;
    let still = apis
        .services
        .get("chat")
        .await
        .expect("their Service stays");
    assert_eq!(still.resource_version(), theirs.resource_version());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_orphaned_by_a_cascade_orphan_delete_are_taken_back() {
    let ns = "orphans";
    let (client, apis) = setup(ns).await;
    let _operator = start_operator(client.clone(), ns, "op-orphans", None);
    let first = apply_as_user(&client, ns, &minimal(ns, "chat", "r1")).await;
    until("the Service", || async {
        apis.services.get_opt("chat").await.ok().flatten()
    })
    .await;
    // `kubectl delete md chat --cascade=orphan`: the children stay, without an owner.
    apis.mds
        .delete("chat", &DeleteParams::orphan())
        .await
        .expect("orphan delete");
    until("the Service orphaned", || async {
        apis.services
            .get("chat")
            .await
            .ok()
            .filter(|s| s.owner_references().is_empty())
    })
    .await;
    let second = apply_as_user(&client, ns, &minimal(ns, "chat", "r2")).await;
    assert_ne!(first.uid(), second.uid());
    let uid = second.uid().expect("uid");
    until("the Service owned by the new ModelDeployment", || async {
        apis.services
            .get("chat")
            .await
            .ok()
            .filter(|s| s.owner_references().iter().any(|o| o.uid == uid))
    })
    .await;
    until("the Deployment at r2", || async {
        apis.deployments.get("chat").await.ok().filter(|d| {
            template_revision(d).as_deref() == Some("r2")
                && d.owner_references().iter().any(|o| o.uid == uid)
        })
    })
    .await;
    wait_for_status(&apis.mds, "chat", "no NotOwned", |md| {
        md.status.as_ref().and_then(|s| s.observed_generation) == md.metadata.generation
            && ready_condition(md).is_some_and(|(_, r, _)| r != "NotOwned")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_the_api_server_refuses_shows_in_status_and_loses_nothing() {
    let ns = "refused";
    let (client, apis) = setup(ns).await;
    let _operator = start_operator(client.clone(), ns, "op-refused", None);
    apply_as_user(&client, ns, &minimal(ns, "chat", "r1")).await;
    let before = until("the Deployment", || async {
        apis.deployments.get_opt("chat").await.ok().flatten()
    })
    .await;

    // Schema-valid, but not a label key: the Deployment built from it is refused.
    let mut manifest = minimal(ns, "chat", "r2");
    manifest["spec"]["scheduling"] =
        serde_json::json!({ "nodeSelector": { "not a label key": "x" } });
    apply_as_user(&client, ns, &manifest).await;
    let md = wait_for_status(&apis.mds, "chat", "Ready=False, InvalidSpec", |md| {
        ready_condition(md).is_some_and(|(s, r, _)| s == "False" && r == "InvalidSpec")
    })
    .await;
    let (_, _, message) = ready_condition(&md).expect("ready");
    assert!(
        message.contains("nodeSelector") && message.contains("not a label key"),
        "the API server's message: {message}"
    );
    assert_eq!(
        md.status.as_ref().and_then(|s| s.observed_generation),
        md.metadata.generation
    );
    let table = kubectl_get_md(ns, "chat").await;
    assert!(table.contains("InvalidSpec"), "{table}");
    // What ran keeps running as it was.
    let during = apis.deployments.get("chat").await.expect("deployment");
    // Its generation, not its resourceVersion: the Deployment's status may move meanwhile.
    assert_eq!(during.metadata.generation, before.metadata.generation);
    assert_eq!(template_revision(&during).as_deref(), Some("r1"));

    apply_as_user(&client, ns, &minimal(ns, "chat", "r3")).await;
    until("the Deployment at r3", || async {
        apis.deployments
            .get("chat")
            .await
            .ok()
            .filter(|d| template_revision(d).as_deref() == Some("r3"))
    })
    .await;
    wait_for_status(&apis.mds, "chat", "no longer InvalidSpec", |md| {
        ready_condition(md).is_some_and(|(_, r, _)| r != "InvalidSpec")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_policy_follows_the_spec_and_is_garbage_collected() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let ns = "netpol";
    let (client, apis) = setup(ns).await;
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), ns);
    let _operator = start_operator(client.clone(), ns, "op-netpol", None);
    let mut manifest = minimal(ns, "chat", "r1");
    manifest["spec"]["networkPolicy"] = serde_json::json!({
        "clients": [{ "podSelector": { "matchLabels": { "app": "gateway" } } }],
        "prometheus": [{ "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "monitoring" } } }],
    });
    let md = apply_as_user(&client, ns, &manifest).await;
    let policy = until("the NetworkPolicy", || async {
        policies.get_opt("chat").await.ok().flatten()
    })
    .await;
    let owners = policy.owner_references();
    assert_eq!(owners.len(), 1);
    assert_eq!(Some(owners[0].uid.clone()), md.uid());
    let spec = policy.spec.expect("spec");
    assert_eq!(
        spec.pod_selector
            .and_then(|s| s.match_labels)
            .and_then(|l| l.get("modelfleet.dev/deployment").cloned())
            .as_deref(),
        Some("chat")
    );
    let ingress = spec.ingress.expect("ingress");
    let ports = |i: usize| -> Vec<String> {
        ingress[i]
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.port.as_ref().map(|p| format!("{p:?}")))
            .collect()
    };
    assert_eq!(ingress.len(), 2);
    assert_eq!(ports(0), vec!["Int(50051)", "Int(8000)"]);
    assert_eq!(
        ports(1),
        vec!["Int(8000)"],
        "Prometheus reaches /metrics only"
    );

    // No longer asked for: removed.
    apply_as_user(&client, ns, &minimal(ns, "chat", "r1")).await;
    until("the NetworkPolicy removed", || async {
        policies.get_opt("chat").await.ok().filter(Option::is_none)
    })
    .await;
    // Asked for again, then the ModelDeployment goes: collected with it.
    apply_as_user(&client, ns, &manifest).await;
    until("the NetworkPolicy again", || async {
        policies.get_opt("chat").await.ok().flatten()
    })
    .await;
    apis.mds
        .delete("chat", &DeleteParams::default())
        .await
        .expect("delete");
    until("the NetworkPolicy garbage-collected", || async {
        policies.get_opt("chat").await.ok().filter(Option::is_none)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_engine_image_is_the_default_and_the_spec_wins() {
    let ns = "images";
    let (client, apis) = setup(ns).await;
    let config = modelfleet_operator::operator::OperatorConfig {
        controller: modelfleet_operator::controller::ControllerConfig {
            engine_image: "registry.example/team/engine:7".into(),
            ..modelfleet_operator::controller::ControllerConfig::new(Some(ns.into()), "op-images")
        },
        leader_election: None,
        telemetry_addr: None,
    };
    let _operator = start_operator_config(client.clone(), config);
    let images = |d: &Deployment| -> Vec<Option<String>> {
        let pod = pod_template_spec(d);
        pod.init_containers
            .iter()
            .flatten()
            .chain(pod.containers.iter())
            .map(|c| c.image.clone())
            .collect()
    };
    apply_as_user(&client, ns, &minimal(ns, "chat", "r1")).await;
    let d = until("the Deployment", || async {
        apis.deployments.get_opt("chat").await.ok().flatten()
    })
    .await;
    let default = Some("registry.example/team/engine:7".to_string());
    assert_eq!(images(&d), vec![default.clone(), default]);
    let stored = apis.mds.get("chat").await.expect("md");
    assert_eq!(stored.spec.engine.image, None, "nothing filled it in");

    let mut manifest = minimal(ns, "chat", "r1");
    manifest["spec"]["engine"] = serde_json::json!({ "image": "localhost:5000/engine:dev" });
    apply_as_user(&client, ns, &manifest).await;
    let own = Some("localhost:5000/engine:dev".to_string());
    until("the spec's image", || async {
        apis.deployments
            .get("chat")
            .await
            .ok()
            .filter(|d| images(d) == vec![own.clone(), own.clone()])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_sources_cache_size_and_api_key_reach_the_pods() {
    let ns = "sources";
    let (client, _) = setup(ns).await;
    let _operator = start_operator(client.clone(), ns, "op-sources", None);
    let mut manifest = minimal(ns, "claim", "r1");
    manifest["spec"]["model"]["source"] = serde_json::json!("pvc://weights/llama/8b");
    manifest["spec"]["resources"] = serde_json::json!({ "gpus": 0, "modelCache": "20Gi" });
    manifest["spec"]["engine"] =
        serde_json::json!({ "apiKeySecretRef": { "name": "chat-keys", "key": "api-key" } });
    apply_as_user(&client, ns, &manifest).await;
    let mut manifest = minimal(ns, "node", "r1");
    manifest["spec"]["model"]["source"] = serde_json::json!("file:///var/lib/models/smollm2");
    apply_as_user(&client, ns, &manifest).await;

    // The pods the controller-manager makes from the templates: what a kubelet is given.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod_of = |name: &'static str| {
        let pods = pods.clone();
        async move {
            until(&format!("a pod of {name}"), || async {
                let selector = format!("modelfleet.dev/deployment={name}");
                let list = pods
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .ok()?;
                list.items.into_iter().next()
            })
            .await
        }
    };
    let pod = pod_of("claim").await;
    let spec = pod.spec.expect("pod spec");
    let volume = |name: &str| {
        spec.volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("volume {name}"))
    };
    let claim = volume("model-source")
        .persistent_volume_claim
        .expect("a claim");
    assert_eq!(
        (claim.claim_name.as_str(), claim.read_only),
        ("weights", Some(true))
    );
    let cache = volume("model-cache").empty_dir.expect("emptyDir");
    assert_eq!(cache.size_limit.map(|q| q.0).as_deref(), Some("20Gi"));
    let secret = volume("api-key").secret.expect("a secret volume");
    assert_eq!(secret.secret_name.as_deref(), Some("chat-keys"));
    let fetch = &spec.init_containers.as_ref().expect("init")[0];
    let source_mount = fetch
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "model-source")
        .expect("the source mount");
    assert_eq!(source_mount.mount_path, "/mnt/pvc/weights");
    assert_eq!(source_mount.read_only, Some(true));
    let fetch_args = fetch.args.clone().unwrap_or_default();
    assert!(
        fetch_args
            .windows(2)
            .any(|w| w[0] == "--pvc-root" && w[1] == "/mnt/pvc"),
        "{fetch_args:?}"
    );
    let requests = |c: &k8s_openapi::api::core::v1::Container| {
        c.resources
            .as_ref()
            .and_then(|r| r.requests.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        requests(fetch)
            .get("ephemeral-storage")
            .map(|q| q.0.as_str()),
        Some("20Gi")
    );
    assert!(requests(fetch).contains_key("cpu") && requests(fetch).contains_key("memory"));
    assert!(
        fetch
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .is_some_and(|l| l.contains_key("memory")),
        "the fetch's memory is bounded"
    );
    let engine = &spec.containers[0];
    assert_eq!(
        requests(engine)
            .get("ephemeral-storage")
            .map(|q| q.0.as_str()),
        Some("20Gi")
    );
    let args = engine.args.clone().unwrap_or_default();
    assert!(
        args.windows(2)
            .any(|w| w[0] == "--api-key-file" && w[1] == "/etc/modelfleet/api-key/key"),
        "{args:?}"
    );
    let key_mount = engine
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "api-key")
        .expect("the key mount");
    assert_eq!(key_mount.read_only, Some(true));
    assert!(
        !fetch
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == "api-key"),
        "the fetch never sees the key"
    );

    let pod = pod_of("node").await;
    let spec = pod.spec.expect("pod spec");
    let host = spec
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.host_path.clone())
        .expect("a hostPath volume");
    assert_eq!(host.path, "/var/lib/models/smollm2");
    let fetch = &spec.init_containers.as_ref().expect("init")[0];
    let mount = fetch
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "model-source")
        .expect("the node path mount");
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only),
        ("/mnt/node/var/lib/models/smollm2", Some(true))
    );
    let args = fetch.args.clone().unwrap_or_default();
    assert!(
        args.windows(2)
            .any(|w| w[0] == "--source" && w[1] == "file:///mnt/node/var/lib/models/smollm2"),
        "{args:?}"
    );
}
