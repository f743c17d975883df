//! Simulated nodes for tests at scale: kwok (sigs.k8s.io/kwok, built by `make tools`).
//!
//! [`Kwok::start`] runs kwok against a harness [`Cluster`]; [`Kwok::add_node`] registers a
//! Node carrying kwok's annotation, with the capacity (GPUs included) and labels asked for.
//! kwok keeps such nodes Ready through their Leases and plays their kubelet without running
//! anything: a pod bound to one goes Running and Ready with an IP from kwok's range, and is
//! removed at once when deleted. Thousands of pods cost a few megabytes, so the scheduler,
//! the controllers and the operator can be tested at fleet sizes no machine could run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::process::ManagedProcess;
use crate::real_node::{GPU_PRODUCT_LABEL, GPU_RESOURCE};
use crate::tools::tool;
use crate::{Cluster, Error};

/// The annotation kwok manages nodes by.
pub const KWOK_ANNOTATION: &str = "kwok.x-k8s.io/node";
const KWOK_ANNOTATION_VALUE: &str = "fake";
/// The label kwok's documentation puts on its nodes, for selecting them.
pub const TYPE_LABEL: &str = "type";
pub const TYPE_KWOK: &str = "kwok";
/// Pod IPs of simulated pods: never routed anywhere, so any private range will do.
const POD_CIDR: &str = "10.244.0.0/16";

/// What a simulated node offers.
#[derive(Debug, Clone)]
pub struct SimulatedNode {
    pub name: String,
    /// `nvidia.com/gpu` capacity.
    pub gpus: u32,
    /// `nvidia.com/gpu.product` label, when set.
    pub gpu_product: Option<String>,
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub labels: BTreeMap<String, String>,
}

impl SimulatedNode {
    /// An 8-GPU-class machine: 64 cores, 512 GiB, `gpus` GPUs.
    pub fn gpu_node(name: &str, gpus: u32) -> Self {
        Self {
            name: name.to_string(),
            gpus,
            gpu_product: None,
            cpu: "64".into(),
            memory: "512Gi".into(),
            pods: 110,
            labels: BTreeMap::new(),
        }
    }

    /// The Node object: kwok's annotation, the labels a kubelet and GPU feature discovery
    /// would set, and the capacity in both capacity and allocatable.
    pub fn to_node(&self) -> Node {
        let mut labels = self.labels.clone();
        labels.insert("kubernetes.io/hostname".into(), self.name.clone());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        labels.insert(TYPE_LABEL.into(), TYPE_KWOK.into());
        if let Some(product) = &self.gpu_product {
            labels.insert(GPU_PRODUCT_LABEL.into(), product.clone());
        }
        let capacity: BTreeMap<String, Quantity> = [
            ("cpu", self.cpu.clone()),
            ("memory", self.memory.clone()),
            ("pods", self.pods.to_string()),
            (GPU_RESOURCE, self.gpus.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Quantity(v)))
        .collect();
        Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(labels),
                annotations: Some(
                    [(
                        KWOK_ANNOTATION.to_string(),
                        KWOK_ANNOTATION_VALUE.to_string(),
                    )]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                capacity: Some(capacity.clone()),
                allocatable: Some(capacity),
                ..NodeStatus::default()
            }),
        }
    }
}

/// A running kwok. Dropping it stops it (its nodes go NotReady once their Leases expire).
pub struct Kwok {
    process: ManagedProcess,
    client: Client,
}

impl Kwok {
    /// Runs kwok with the Stage documents `make tools` cached (nodes Ready at once with a
    /// heartbeat through their Lease; pods Running and Ready, completed, deleted), managing
    /// the nodes that carry its annotation.
    pub async fn start(cluster: &Cluster) -> Result<Self, Error> {
        let program = tool("kwok")?;
        let stages: PathBuf = tool("kwok-stages.yaml")?;
        let log = cluster.dir().join("logs/kwok.log");
        let args = vec![
            format!("--kubeconfig={}", cluster.kubeconfig_path().display()),
            format!("--config={}", stages.display()),
            format!(
                "--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}={KWOK_ANNOTATION_VALUE}"
            ),
            format!("--cidr={POD_CIDR}"),
            // No kubelet API to serve: logs and exec are not simulated here.
            "--server-address=".into(),
        ];
        let mut process = ManagedProcess::spawn("kwok", &program, &args, &log)?;
        // kwok has no readiness endpoint; it is up once it has not exited for a moment and
        // manages the first node (see `add_node`).
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(status) = process.exit_status() {
            return Err(Error::ComponentExited {
                name: "kwok".into(),
                status: status.to_string(),
                log_tail: process.log_tail(4000),
            });
        }
        Ok(Self {
            process,
            client: cluster.client(),
        })
    }

    /// Registers `node` and waits until kwok reports it Ready and the lifecycle controller
    /// has lifted its not-ready taint (so pods can be scheduled onto it).
    pub async fn add_node(&mut self, node: &SimulatedNode, timeout: Duration) -> Result<(), Error> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        nodes
            .create(&PostParams::default(), &node.to_node())
            .await?;
        let started = Instant::now();
        loop {
            if let Some(status) = self.process.exit_status() {
                return Err(Error::ComponentExited {
                    name: "kwok".into(),
                    status: status.to_string(),
                    log_tail: self.process.log_tail(4000),
                });
            }
            let current = nodes.get(&node.name).await?;
            let ready = current
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let untainted = current
                .spec
                .as_ref()
                .is_none_or(|s| s.taints.as_ref().is_none_or(Vec::is_empty));
            if ready && untainted {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(Error::NotReady {
                    what: format!(
                        "simulated node {} (ready: {ready}, untainted: {untainted})",
                        node.name
                    ),
                    seconds: timeout.as_secs(),
                    log_tail: self.process.log_tail(4000),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The last bytes of kwok's log.
    pub fn log_tail(&self) -> String {
        self.process.log_tail(4000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_node_carries_kwoks_annotation_its_gpus_and_product() {
        let mut spec = SimulatedNode::gpu_node("gpu-7", 8);
        spec.gpu_product = Some("NVIDIA-A100-SXM4-80GB".into());
        let node = spec.to_node();
        let meta = &node.metadata;
        assert_eq!(
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(KWOK_ANNOTATION))
                .map(String::as_str),
            Some("fake")
        );
        let labels = meta.labels.as_ref().expect("labels");
        assert_eq!(labels[GPU_PRODUCT_LABEL], "NVIDIA-A100-SXM4-80GB");
        assert_eq!(labels[TYPE_LABEL], TYPE_KWOK);
        let status = node.status.expect("status");
        assert_eq!(status.capacity.expect("capacity")[GPU_RESOURCE].0, "8");
        assert_eq!(
            status.allocatable.expect("allocatable")[GPU_RESOURCE].0,
            "8"
        );
    }
}
