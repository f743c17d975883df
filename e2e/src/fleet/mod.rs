//! The whole loop on one machine: a control plane, a node agent playing kubelet for fake
//! GPU nodes (engine pods run as `modelfleet-engine` processes, each in its own network
//! namespace), Prometheus discovering and scraping those pods, and the operator with its
//! queue-depth autoscaler. The fleet scenarios and `modelfleet-dev demo` run on it.

mod endpoints;
mod model_deployment;

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};

use crate::binaries::{repo_root, workspace_binary};
use crate::node_agent::{ImageMap, NodeAgent, NodeAgentConfig};
use crate::nodes::FakeNodeSpec;
use crate::process::ManagedProcess;
use crate::prometheus::{KubernetesPods, Prometheus, PrometheusOptions};
use crate::{Cluster, ClusterOptions, Error};

pub use endpoints::{EndpointFollower, ready_endpoints};
pub use model_deployment::{
    ModelDeploymentStatus, apply, demo_model_deployment, demo_model_dir, model_deployments,
};

/// The image the operator puts in engine pods (any tag): the node agent runs
/// `modelfleet-engine` for it.
pub const ENGINE_IMAGE: &str = "ghcr.io/modelfleet/engine";
/// The engine's ports, as the operator declares them.
pub const GRPC_PORT: u16 = 50051;
pub const HTTP_PORT: u16 = 8000;

const FIELD_MANAGER: &str = "modelfleet-e2e";
const CRD_NAME: &str = "modeldeployments.modelfleet.dev";

#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub gpu_nodes: u32,
    pub gpus_per_node: u32,
    /// Prometheus's scrape interval.
    pub scrape_interval: Duration,
    /// How often the operator's autoscaler reads queue depth.
    pub autoscale_interval: Duration,
    /// First delay before a crashed container is restarted (the kubelet's is 10s).
    pub restart_backoff: Duration,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            gpu_nodes: 4,
            gpus_per_node: 8,
            scrape_interval: Duration::from_secs(1),
            autoscale_interval: Duration::from_secs(2),
            restart_backoff: Duration::from_secs(1),
        }
    }
}

pub struct Fleet {
    // Dropped in this order: the operator first (nothing reconciles while the rest stops),
    // then Prometheus, the node agent (its pods' processes and namespaces), the cluster.
    operator: ManagedProcess,
    prometheus: Prometheus,
    agent: NodeAgent,
    cluster: Cluster,
}

impl Fleet {
    pub async fn start(options: FleetOptions) -> Result<Self, Error> {
        let engine = workspace_binary("modelfleet-engine", "modelfleet-engine")?;
        let operator_binary = workspace_binary("modelfleet-operator", "modelfleet-operator")?;
        let cluster = Cluster::start(ClusterOptions::full()).await?;
        install_crd(&cluster.client()).await?;

        let nodes = (1..=options.gpu_nodes)
            .map(|i| FakeNodeSpec::gpu_node(&format!("gpu-node-{i}"), options.gpus_per_node))
            .collect();
        let mut agent_config =
            NodeAgentConfig::new(nodes, ImageMap::new().with_binary(ENGINE_IMAGE, engine));
        agent_config.initial_backoff = options.restart_backoff;
        agent_config.max_backoff = options.restart_backoff * 8;
        let agent = NodeAgent::start(cluster.client(), agent_config)
            .await
            .map_err(|e| Error::NodeAgent(e.to_string()))?;

        let prometheus = Prometheus::start(PrometheusOptions {
            scrape_interval: options.scrape_interval,
            kubernetes_pods: Some(KubernetesPods::for_cluster(&cluster).await?),
            ..PrometheusOptions::default()
        })
        .await?;

        let telemetry = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::io("choosing the operator's telemetry port", e))?;
        let args: Vec<String> = vec![
            "run".into(),
            "--prometheus-url".into(),
            prometheus.url(),
            "--autoscale-interval".into(),
            format!("{}ms", options.autoscale_interval.as_millis()),
            "--telemetry-addr".into(),
            telemetry.to_string(),
        ];
        let operator = ManagedProcess::spawn_with_env(
            "modelfleet-operator",
            &operator_binary,
            &args,
            &[("KUBECONFIG", cluster.kubeconfig_path().as_os_str())],
            &cluster.dir().join("operator.log"),
        )?;
        Ok(Self {
            operator,
            prometheus,
            agent,
            cluster,
        })
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub fn client(&self) -> Client {
        self.cluster.client()
    }

    pub fn agent(&self) -> &NodeAgent {
        &self.agent
    }

    pub fn prometheus(&self) -> &Prometheus {
        &self.prometheus
    }

    pub fn prometheus_mut(&mut self) -> &mut Prometheus {
        &mut self.prometheus
    }

    pub fn operator_log(&self) -> PathBuf {
        self.operator.log_path().to_path_buf()
    }

    /// The last lines of the operator's and Prometheus's logs, for failure messages.
    pub fn log_tails(&self) -> String {
        format!(
            "--- operator ---\n{}\n--- prometheus ---\n{}",
            self.operator.log_tail(6000),
            self.prometheus.log_tail()
        )
    }

    /// Stops everything and removes what the node agent made on the host.
    pub async fn shutdown(self) {
        let Fleet {
            mut operator,
            prometheus,
            agent,
            cluster,
        } = self;
        operator.stop();
        drop(prometheus);
        agent.shutdown().await;
        drop(cluster);
    }
}

/// Installs the generated CRD (`crds/`) and waits until the API server serves it.
async fn install_crd(client: &Client) -> Result<(), Error> {
    let path = repo_root().join("crds/modelfleet.dev_modeldeployments.yaml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::io(&format!("reading {}", path.display()), e))?;
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text)
        .map_err(|e| Error::Harness(format!("{} is not a CRD: {e}", path.display())))?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        CRD_NAME,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let established = crds.get_opt(CRD_NAME).await?.is_some_and(|crd| {
            crd.status.and_then(|s| s.conditions).is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
        });
        if established {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(Error::Harness(format!(
                "the CRD {CRD_NAME} was not established in 60s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
