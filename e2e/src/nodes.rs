//! Nodes without a kubelet: registered through the API and kept alive by renewing their
//! Lease, as a kubelet would. Enough for the scheduler to place pods on them.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use tokio::task::JoinHandle;

use crate::Error;

/// The node lease namespace kubelets heartbeat in.
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_DURATION_SECONDS: i32 = 40;
const RENEW_INTERVAL: Duration = Duration::from_secs(10);

/// What a fake node offers.
#[derive(Debug, Clone)]
pub struct FakeNodeSpec {
    pub name: String,
    /// `nvidia.com/gpu` capacity.
    pub gpus: u32,
    /// `nvidia.com/gpu.product` label, when set.
    pub gpu_product: Option<String>,
    pub cpu: String,
    pub memory: String,
    pub labels: BTreeMap<String, String>,
}

impl FakeNodeSpec {
    pub fn gpu_node(name: &str, gpus: u32) -> Self {
        Self {
            name: name.to_string(),
            gpus,
            gpu_product: None,
            cpu: "64".into(),
            memory: "512Gi".into(),
            labels: BTreeMap::new(),
        }
    }
}

/// A registered node whose Lease is renewed until this is dropped.
pub struct FakeNode {
    pub name: String,
    heartbeat: JoinHandle<()>,
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

/// The Node object for `spec`: Ready, with its capacity and labels.
pub fn node_object(spec: &FakeNodeSpec) -> Node {
    let mut labels = spec.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), spec.name.clone());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    if let Some(product) = &spec.gpu_product {
        labels.insert("nvidia.com/gpu.product".into(), product.clone());
    }
    let capacity: BTreeMap<String, Quantity> = [
        ("cpu", spec.cpu.clone()),
        ("memory", spec.memory.clone()),
        ("pods", "110".to_string()),
        ("nvidia.com/gpu", spec.gpus.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v)))
    .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        status: Some(NodeStatus {
            capacity: Some(capacity.clone()),
            allocatable: Some(capacity),
            conditions: Some(vec![ready_condition()]),
            ..NodeStatus::default()
        }),
        ..Node::default()
    }
}

fn ready_condition() -> NodeCondition {
    let now = Time(Timestamp::now());
    NodeCondition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: Some("KubeletReady".into()),
        message: Some("fake node is ready".into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// Registers a node (status included: nodes may set it on create) and starts renewing
/// its Lease so the node lifecycle controller keeps it Ready.
///
/// A new node carries the `node.kubernetes.io/not-ready` taint until the node lifecycle
/// controller has seen it Ready; with a controller-manager running, wait for
/// [`wait_schedulable`] before expecting pods on it.
pub async fn register(client: Client, spec: &FakeNodeSpec) -> Result<FakeNode, Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(&PostParams::default(), &node_object(spec))
        .await?;
    renew_lease(&client, &spec.name).await?;
    let name = spec.name.clone();
    let heartbeat = tokio::spawn(async move {
        loop {
            tokio::time::sleep(RENEW_INTERVAL).await;
            if let Err(err) = renew_lease(&client, &name).await {
                tracing::warn!(node = %name, error = %err, "renewing the node lease failed");
            }
        }
    });
    Ok(FakeNode {
        name: spec.name.clone(),
        heartbeat,
    })
}

async fn renew_lease(client: &Client, node: &str) -> Result<(), Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(node.to_string()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.to_string()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..LeaseSpec::default()
        }),
    };
    let params = PatchParams::apply("modelfleet-fake-node").force();
    leases.patch(node, &params, &Patch::Apply(&lease)).await?;
    Ok(())
}

/// Waits until the node carries no taints (the lifecycle controller has seen it Ready).
pub async fn wait_schedulable(client: Client, name: &str, timeout: Duration) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client);
    let started = std::time::Instant::now();
    loop {
        let node = nodes.get(name).await?;
        let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
        if taints.is_empty() {
            return Ok(());
        }
        if started.elapsed() > timeout {
            let keys: Vec<String> = taints.into_iter().map(|t| t.key).collect();
            return Err(Error::NotReady {
                what: format!("node {name} (still tainted: {})", keys.join(", ")),
                seconds: timeout.as_secs(),
                log_tail: String::new(),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
