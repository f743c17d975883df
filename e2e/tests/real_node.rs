//! The harness's real node: containerd + runc + CNI, the pinned kubelet and kube-proxy, in a
//! network namespace of its own. A pod from an image `make images` built runs on it under the
//! restricted security context, requests a GPU the node advertises, reaches the API server
//! through the `kubernetes` Service, and is reached through its own Service from the host;
//! deleting it leaves no sandbox, container, veth or mount, and stopping the node leaves
//! nothing on the host.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use modelfleet_e2e::images::Image;
use modelfleet_e2e::real_node::{self, GPU_PRODUCT_LABEL, GPU_RESOURCE, RealNode, RealNodeOptions};
use modelfleet_e2e::{Cluster, ClusterOptions, wait};

/// Generous: the machine may be busy compiling or running other tests.
const TIMEOUT: Duration = Duration::from_secs(180);
const NAMESPACE: &str = "apps";
const NODE: &str = "gpu-node-1";
const PRODUCT: &str = "NVIDIA-H100-80GB-HBM3";

fn restricted_pod() -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": "web", "labels": { "app": "web" } },
        "spec": {
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                "fsGroup": 65532, "seccompProfile": { "type": "RuntimeDefault" },
            },
            "containers": [{
                "name": "web",
                "image": Image::TestServer.tag(),
                "args": ["--port", "8080"],
                "ports": [{ "name": "http", "containerPort": 8080 }],
                "readinessProbe": { "httpGet": { "path": "/healthz", "port": 8080 }, "periodSeconds": 1 },
                "resources": {
                    "requests": { "cpu": "50m", "memory": "64Mi", GPU_RESOURCE: "1" },
                    "limits": { "memory": "64Mi", GPU_RESOURCE: "1" },
                },
                "securityContext": {
                    "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                    "runAsNonRoot": true, "capabilities": { "drop": ["ALL"] },
                    "seccompProfile": { "type": "RuntimeDefault" },
                },
            }],
            "nodeSelector": { GPU_PRODUCT_LABEL: PRODUCT },
        },
    }))
    .expect("a pod")
}

fn service() -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": "web" },
        "spec": { "selector": { "app": "web" }, "ports": [{ "port": 80, "targetPort": 8080 }] },
    }))
    .expect("a service")
}

async fn get(url: &str) -> Option<String> {
    let response = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    response.status().is_success().then_some(())?;
    response.text().await.ok()
}

/// The value of a `Name:\tvalue` line of /proc/<pid>/status.
fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_pod_runs_on_the_real_node_behind_its_service_and_leaves_nothing() {
    let cluster = Cluster::start(
        ClusterOptions::full()
            .with_own_service_range()
            .expect("a free Service range"),
    )
    .await
    .expect("control plane starts");
    let client = cluster.client();
    let mut options = RealNodeOptions::new(NODE);
    options.gpus = 4;
    options.gpu_product = Some(PRODUCT.into());
    options.images = vec![Image::TestServer];
    let node = RealNode::start(&cluster, options)
        .await
        .expect("the real node starts");
    let footprint = node.footprint().clone();

    // The node as the API sees it: its own address, containerd, the GPUs and their model.
    let registered = Api::<Node>::all(client.clone())
        .get(NODE)
        .await
        .expect("node");
    let status = registered.status.clone().expect("status");
    let internal_ip = status
        .addresses
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address);
    assert_eq!(internal_ip, Some(node.node_ip().to_string()));
    let info = status.node_info.expect("node info");
    assert!(
        info.container_runtime_version
            .starts_with("containerd://1.6"),
        "{}",
        info.container_runtime_version
    );
    assert_eq!(info.kubelet_version, "v1.34.3");
    let gpus = |map: Option<BTreeMap<String, _>>| {
        map.and_then(
            |m: BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
                m.get(GPU_RESOURCE).map(|q| q.0.clone())
            },
        )
    };
    assert_eq!(gpus(status.capacity), Some("4".into()));
    assert_eq!(gpus(status.allocatable), Some("4".into()));
    assert_eq!(
        registered
            .metadata
            .labels
            .unwrap_or_default()
            .get(GPU_PRODUCT_LABEL)
            .map(String::as_str),
        Some(PRODUCT)
    );

    cluster
        .create_namespace(NAMESPACE)
        .await
        .expect("namespace");
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    pods.create(&PostParams::default(), &restricted_pod())
        .await
        .expect("create the pod");
    Api::<Service>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &service())
        .await
        .expect("create the service");
    let pod_ip = wait::until("the pod Ready with an IP", TIMEOUT, || async {
        let pod = pods.get("web").await.ok()?;
        let status = pod.status?;
        let ready = status
            .conditions?
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(status.pod_ip?)
    })
    .await;
    assert!(
        node.pod_cidr().contains(pod_ip.parse().expect("IPv4")),
        "{pod_ip} is in the node's pod range {}",
        node.pod_cidr()
    );

    // The restricted context for real: its user, no capabilities, a read-only root.
    let base = format!("http://{pod_ip}:8080");
    let proc_status = get(&format!("{base}/file/proc/self/status"))
        .await
        .expect("/proc/self/status");
    assert_eq!(
        status_field(&proc_status, "Uid"),
        Some("65532\t65532\t65532\t65532")
    );
    assert_eq!(
        status_field(&proc_status, "CapEff"),
        Some("0000000000000000")
    );
    assert_eq!(status_field(&proc_status, "NoNewPrivs"), Some("1"));
    assert_eq!(
        status_field(&proc_status, "Seccomp"),
        Some("2"),
        "seccomp filter on"
    );
    let mountinfo = get(&format!("{base}/file/proc/self/mountinfo"))
        .await
        .expect("mountinfo");
    let root = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .expect("the root mount");
    assert!(
        root.split(' ')
            .nth(5)
            .is_some_and(|o| o.split(',').any(|o| o == "ro")),
        "root filesystem read-only: {root}"
    );
    // The pod reaches the API server through the `kubernetes` Service (kube-proxy) with its
    // service account's token.
    assert_eq!(
        get(&format!("{base}/whoami")).await.as_deref(),
        Some("system:serviceaccount:apps:default")
    );

    // From the host, through the Service's cluster IP (kube-proxy on the node).
    let cluster_ip = Api::<Service>::namespaced(client.clone(), NAMESPACE)
        .get("web")
        .await
        .expect("service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a cluster IP");
    assert!(
        cluster
            .service_range()
            .contains(cluster_ip.parse().expect("IPv4"))
    );
    let through_service = wait::until("an answer through the Service", TIMEOUT, || async {
        get(&format!("http://{cluster_ip}/healthz")).await
    })
    .await;
    assert_eq!(through_service, "ok");

    // Logs through the API server (which asks the kubelet at the node's InternalIP).
    let logs = pods
        .logs("web", &LogParams::default())
        .await
        .expect("the pod's logs");
    assert!(logs.contains("serving on port 8080"), "{logs}");

    // The pod's traces on the node, then none once it is deleted.
    let running = node.pod_leftovers().expect("inspecting the node");
    assert!(
        running.iter().any(|l| l.starts_with("sandbox of apps/web"))
            && running.iter().any(|l| l.starts_with("veth"))
            && running.iter().any(|l| l.starts_with("mount")),
        "a running pod shows: {running:?}"
    );
    pods.delete("web", &DeleteParams::default())
        .await
        .expect("delete the pod");
    wait::until("the pod gone from the node", TIMEOUT, || async {
        let gone = pods.get_opt("web").await.ok()?.is_none();
        let left = node.pod_leftovers().ok()?;
        (gone && left.is_empty()).then_some(())
    })
    .await;

    // Stopping the node leaves nothing on the host; while it ran, the same check saw it.
    let while_running = real_node::footprint::on_host(&footprint);
    assert!(
        while_running
            .iter()
            .any(|l| l.starts_with("network namespace"))
            && while_running.iter().any(|l| l.starts_with("cgroup"))
            && while_running.iter().any(|l| l.starts_with("mount")),
        "a running node shows: {while_running:?}"
    );
    node.shutdown().await;
    let left = real_node::footprint::leftovers(&footprint);
    assert!(left.is_empty(), "left on the host: {left:?}");
    drop(cluster);
}
