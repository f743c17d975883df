//! Proof that the local control plane is a real one: the controller-manager, the scheduler,
//! the garbage collector and RBAC all do their jobs.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Event, Pod, PodSpec, PodTemplateSpec, ResourceRequirements,
    ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};
use modelfleet_e2e::kwok::{Kwok, SimulatedNode};
use modelfleet_e2e::{Cluster, ClusterOptions, wait};

/// Generous: the machine running these may be busy compiling.
const TIMEOUT: Duration = Duration::from_secs(120);

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        ..ObjectMeta::default()
    }
}

fn labels(app: &str) -> BTreeMap<String, String> {
    [("app".to_string(), app.to_string())].into()
}

fn pod_template(app: &str, gpus: Option<u32>) -> PodTemplateSpec {
    let resources = gpus.map(|n| {
        let gpu: BTreeMap<String, Quantity> =
            [("nvidia.com/gpu".to_string(), Quantity(n.to_string()))].into();
        ResourceRequirements {
            requests: Some(gpu.clone()),
            limits: Some(gpu),
            ..ResourceRequirements::default()
        }
    });
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(app)),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "main".into(),
                image: Some("registry.example/engine:test".into()),
                resources,
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
    }
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    Deployment {
        metadata: meta(name),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels(name)),
                ..LabelSelector::default()
            },
            template: pod_template(name, None),
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn gpu_pod(name: &str, gpus: u32) -> Pod {
    let template = pod_template(name, Some(gpus));
    Pod {
        metadata: meta(name),
        spec: template.spec,
        ..Pod::default()
    }
}

fn owned_by(owner: &impl Resource<DynamicType = ()>, object: &impl ResourceExt) -> bool {
    let uid = owner.meta().uid.as_deref();
    object
        .owner_references()
        .iter()
        .any(|r| Some(r.uid.as_str()) == uid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_manager_gives_a_deployment_a_replicaset_and_pods() {
    let cluster = Cluster::start(ClusterOptions {
        controller_manager: true,
        ..ClusterOptions::default()
    })
    .await
    .expect("control plane starts");
    cluster.create_namespace("apps").await.expect("namespace");
    let client = cluster.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "apps");
    let replica_sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "apps");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "apps");

    let created = deployments
        .create(&PostParams::default(), &deployment("web", 3))
        .await
        .expect("deployment created");

    let replica_set = wait::until("a ReplicaSet owned by the Deployment", TIMEOUT, || async {
        let list = replica_sets.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|rs| owned_by(&created, rs))
    })
    .await;
    assert_eq!(replica_set.spec.as_ref().and_then(|s| s.replicas), Some(3));

    let owned_pods = wait::until("3 Pods owned by the ReplicaSet", TIMEOUT, || async {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        let owned: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| owned_by(&replica_set, p))
            .collect();
        (owned.len() == 3).then_some(owned)
    })
    .await;
    for pod in &owned_pods {
        assert_eq!(pod.labels().get("app").map(String::as_str), Some("web"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_binds_gpu_pods_and_leaves_an_oversized_one_pending() {
    let cluster = Cluster::start(ClusterOptions::full())
        .await
        .expect("control plane starts");
    cluster.create_namespace("gpu").await.expect("namespace");
    let client = cluster.client();
    let mut kwok = Kwok::start(&cluster).await.expect("kwok starts");
    kwok.add_node(&SimulatedNode::gpu_node("gpu-node-1", 8), TIMEOUT)
        .await
        .expect("a simulated node, Ready and untainted");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "gpu");

    for (name, gpus) in [("fits-a", 4), ("fits-b", 4), ("too-big", 16)] {
        pods.create(&PostParams::default(), &gpu_pod(name, gpus))
            .await
            .expect("pod created");
    }

    for name in ["fits-a", "fits-b"] {
        let node = wait::until(&format!("pod {name} to be bound"), TIMEOUT, || async {
            pods.get(name).await.ok()?.spec?.node_name
        })
        .await;
        assert_eq!(node, "gpu-node-1");
        // kwok plays the node's kubelet: the pod runs (in simulation).
        wait::until(&format!("pod {name} Running"), TIMEOUT, || async {
            let phase = pods.get(name).await.ok()?.status?.phase?;
            (phase == "Running").then_some(())
        })
        .await;
    }

    let events: Api<Event> = Api::namespaced(client.clone(), "gpu");
    let failed = wait::until("a FailedScheduling event for too-big", TIMEOUT, || async {
        let list = events
            .list(&ListParams::default().fields("involvedObject.name=too-big"))
            .await
            .ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("FailedScheduling"))
    })
    .await;
    let message = failed.message.unwrap_or_default();
    assert!(
        message.contains("nvidia.com/gpu"),
        "event names the missing resource: {message}"
    );

    let too_big = pods.get("too-big").await.expect("pod");
    assert_eq!(
        too_big.spec.and_then(|s| s.node_name),
        None,
        "16-GPU pod stays unbound"
    );
    assert_eq!(
        too_big.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_owner_garbage_collects_its_dependents() {
    let cluster = Cluster::start(ClusterOptions {
        controller_manager: true,
        ..ClusterOptions::default()
    })
    .await
    .expect("control plane starts");
    cluster.create_namespace("gc").await.expect("namespace");
    let client = cluster.client();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "gc");

    let owner = config_maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: meta("owner"),
                ..ConfigMap::default()
            },
        )
        .await
        .expect("owner created");
    let owner_ref = OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: owner.name_any(),
        uid: owner.uid().expect("uid"),
        ..OwnerReference::default()
    };
    for name in ["dependent-a", "dependent-b"] {
        let dependent = ConfigMap {
            metadata: ObjectMeta {
                owner_references: Some(vec![owner_ref.clone()]),
                ..meta(name)
            },
            ..ConfigMap::default()
        };
        config_maps
            .create(&PostParams::default(), &dependent)
            .await
            .expect("dependent created");
    }
    let bystander = ConfigMap {
        metadata: meta("bystander"),
        ..ConfigMap::default()
    };
    config_maps
        .create(&PostParams::default(), &bystander)
        .await
        .expect("bystander created");

    config_maps
        .delete("owner", &DeleteParams::background())
        .await
        .expect("owner deleted");

    wait::until(
        "the dependents to be garbage-collected",
        TIMEOUT,
        || async {
            let a = config_maps.get_opt("dependent-a").await.ok()?;
            let b = config_maps.get_opt("dependent-b").await.ok()?;
            (a.is_none() && b.is_none()).then_some(())
        },
    )
    .await;
    assert!(
        config_maps
            .get_opt("bystander")
            .await
            .expect("get")
            .is_some(),
        "an object without the owner reference survives"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rbac_limited_service_account_is_refused_what_its_role_does_not_allow() {
    let cluster = Cluster::start(ClusterOptions::default())
        .await
        .expect("control plane starts");
    let client = cluster.client();
    cluster.create_namespace("team").await.expect("namespace");
    cluster.create_namespace("other").await.expect("namespace");

    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "team");
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta("reader"),
                ..ServiceAccount::default()
            },
        )
        .await
        .expect("service account");
    let role = Role {
        metadata: meta("pod-reader"),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["pods".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..PolicyRule::default()
        }]),
    };
    Api::<Role>::namespaced(client.clone(), "team")
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    let binding = RoleBinding {
        metadata: meta("reader-reads-pods"),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "pod-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some("team".into()),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(client.clone(), "team")
        .create(&PostParams::default(), &binding)
        .await
        .expect("role binding");

    let token = accounts
        .create_token_request("reader", &PostParams::default(), &TokenRequest::default())
        .await
        .expect("token request")
        .status
        .expect("token status")
        .token;
    let reader = cluster
        .client_for_token(&token)
        .await
        .expect("token client");

    let team_pods: Api<Pod> = Api::namespaced(reader.clone(), "team");
    team_pods
        .list(&ListParams::default())
        .await
        .expect("the role allows listing pods in team");

    let forbidden = |result: Result<_, kube::Error>, what: &str| match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{what}: {status:?}");
            assert!(
                status.message.contains("system:serviceaccount:team:reader"),
                "{what}: {}",
                status.message
            );
        }
        other => panic!("{what} should be forbidden, got {other:?}"),
    };
    forbidden(
        Api::<ConfigMap>::namespaced(reader.clone(), "team")
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        "listing config maps",
    );
    forbidden(
        team_pods
            .create(&PostParams::default(), &gpu_pod("sneaky", 1))
            .await
            .map(|_| ()),
        "creating a pod",
    );
    forbidden(
        Api::<Pod>::namespaced(reader.clone(), "other")
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        "listing pods in another namespace",
    );
}

fn process_alive(pid: u32) -> bool {
    // A stopped child is reaped by the harness, so its /proc entry disappears.
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_cluster_stops_every_component_and_removes_its_directory() {
    let cluster = Cluster::start(ClusterOptions::full())
        .await
        .expect("control plane starts");
    let pids = cluster.component_pids();
    let dir = cluster.dir().to_path_buf();
    assert_eq!(
        pids.len(),
        4,
        "etcd, apiserver, controller-manager, scheduler: {pids:?}"
    );
    assert!(pids.iter().all(|(_, pid)| process_alive(*pid)));

    drop(cluster);

    for (name, pid) in pids {
        assert!(
            !process_alive(pid),
            "{name} ({pid}) still running after drop"
        );
    }
    assert!(!dir.exists(), "{} removed", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_test_still_stops_the_cluster_and_keeps_its_logs() {
    let cluster = Cluster::start(ClusterOptions::default())
        .await
        .expect("control plane starts");
    let pids = cluster.component_pids();
    let dir = cluster.dir().to_path_buf();

    // The cluster is dropped while the thread unwinds, as in a failing test.
    let outcome = std::thread::spawn(move || {
        let _cluster = cluster;
        panic!("a failing assertion");
    })
    .join();
    assert!(outcome.is_err(), "the thread panicked");

    for (name, pid) in pids {
        assert!(
            !process_alive(pid),
            "{name} ({pid}) still running after a panic"
        );
    }
    let apiserver_log = dir.join("logs/kube-apiserver.log");
    assert!(
        apiserver_log.exists(),
        "logs kept for inspection at {}",
        dir.display()
    );
    std::fs::remove_dir_all(&dir).expect("clean up the kept directory");
}
