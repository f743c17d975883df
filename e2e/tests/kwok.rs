//! Simulated nodes at scale (kwok): a dozen GPU machines of two models, the scheduler and the
//! operator at a fleet size no test machine could run. A ModelDeployment asking for one GPU
//! model lands only on those machines, fills them, and the replica that no longer fits
//! stays Pending with the scheduler naming the GPUs it lacks.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use modelfleet_e2e::fleet::{
    self, ModelDeploymentStatus, demo_model_deployment, model_deployments,
};
use modelfleet_e2e::kwok::{Kwok, SimulatedNode};
use modelfleet_e2e::real_node::GPU_PRODUCT_LABEL;
use modelfleet_e2e::{Cluster, ClusterOptions, wait};

const TIMEOUT: Duration = Duration::from_secs(180);
const NAMESPACE: &str = "fleet";
const H100: &str = "NVIDIA-H100-80GB-HBM3";
const A100: &str = "NVIDIA-A100-SXM4-80GB";
/// The example's name.
const NAME: &str = "smollm2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_deployment_fills_the_simulated_nodes_of_its_gpu_model_and_no_more() {
    let cluster = Cluster::start(ClusterOptions::full())
        .await
        .expect("control plane starts");
    let client = cluster.client();
    fleet::install_crd(&client).await.expect("the CRD");
    let mut kwok = Kwok::start(&cluster).await.expect("kwok starts");
    for (i, product) in [H100, H100, H100, H100, H100, H100, A100, A100, A100, A100]
        .into_iter()
        .enumerate()
    {
        let mut node = SimulatedNode::gpu_node(&format!("gpu-node-{i}"), 8);
        node.gpu_product = Some(product.into());
        kwok.add_node(&node, TIMEOUT)
            .await
            .expect("a simulated node, Ready");
    }
    let mut operator =
        fleet::start_operator(&cluster, None, Duration::from_secs(2)).expect("the operator starts");
    cluster
        .create_namespace(NAMESPACE)
        .await
        .expect("namespace");

    // Four GPUs a replica, twelve replicas: the six H100 machines' 48 GPUs exactly. (Nothing
    // runs on a simulated node, so the source is never fetched.)
    let mut md =
        demo_model_deployment(NAMESPACE, "https://models.example/smollm2").expect("the example");
    md.spec.resources.gpus = 4;
    md.spec.resources.gpu_product = Some(H100.into());
    md.spec.replicas.min = 12;
    md.spec.replicas.max = 12;
    fleet::apply(&client, &md).await.expect("apply");
    let mds = model_deployments(&client, NAMESPACE);
    let status = |s: &ModelDeploymentStatus| s.ready_replicas == 12 && s.replicas == 12;
    wait::until("12 ready replicas", TIMEOUT, || async {
        let current = mds.get(NAME).await.ok()?.status?;
        status(&current).then_some(())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let products: BTreeMap<String, String> = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("nodes")
        .items
        .into_iter()
        .map(|n| {
            let product = n
                .labels()
                .get(GPU_PRODUCT_LABEL)
                .cloned()
                .unwrap_or_default();
            (n.name_any(), product)
        })
        .collect();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for pod in pods.list(&ListParams::default()).await.expect("pods").items {
        let node = pod.spec.and_then(|s| s.node_name).expect("bound");
        assert_eq!(
            products[&node],
            H100,
            "{} on {node}",
            pod.metadata.name.unwrap_or_default()
        );
        *per_node.entry(node).or_default() += 1;
    }
    assert_eq!(per_node.len(), 6, "{per_node:?}");
    assert!(
        per_node.values().all(|n| *n == 2),
        "two 4-GPU replicas a machine: {per_node:?}"
    );

    // One replica more than the H100 machines hold: it is never bound, though the A100
    // machines have 32 GPUs free, and the scheduler says why.
    md.spec.replicas.min = 13;
    md.spec.replicas.max = 13;
    fleet::apply(&client, &md).await.expect("apply");
    let pending = wait::until("the 13th replica Pending", TIMEOUT, || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        let unbound: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_none()))
            .collect();
        (unbound.len() == 1).then(|| unbound[0].name_any())
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    let message = wait::until("a FailedScheduling event for it", TIMEOUT, || async {
        events
            .list(&ListParams::default().fields(&format!("involvedObject.name={pending}")))
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("FailedScheduling"))?
            .message
    })
    .await;
    assert!(message.contains("nvidia.com/gpu"), "{message}");
    let current = mds.get(NAME).await.expect("get").status.expect("status");
    assert_eq!(current.ready_replicas, 12, "{current:?}");
    assert_eq!(current.desired_replicas, 13, "{current:?}");
    operator.stop();
    drop(kwok);
}
