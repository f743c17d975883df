//! The whole loop on one machine: a control plane, a real node (containerd, the kubelet and
//! kube-proxy) running engine pods from the image `make images` built, Prometheus discovering
//! and scraping the pods with its own Kubernetes discovery, and the operator with its
//! queue-depth autoscaler. The fleet scenarios and `modelfleet-dev demo` run on it.

mod endpoints;
mod model_deployment;

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use modelfleet_contract::labels::field_manager::HARNESS as FIELD_MANAGER;
use modelfleet_operator::api::ModelDeployment;

use crate::binaries::{repo_root, workspace_binary};
use crate::images::Image;
use crate::process::ManagedProcess;
use crate::prometheus::{KubernetesPods, Prometheus, PrometheusOptions};
use crate::real_node::{RealNode, RealNodeOptions};
use crate::{Cluster, ClusterOptions, Error};

pub use endpoints::{EndpointFollower, ready_endpoints};
pub use model_deployment::{
    ModelDeploymentStatus, apply, demo_model_deployment, demo_model_dir, model_deployments,
};

/// The fleet's node, and what it advertises.
pub const NODE_NAME: &str = "gpu-node-1";
pub const GPU_PRODUCT: &str = "NVIDIA-H100-80GB-HBM3";

const CRD_NAME: &str = "modeldeployments.modelfleet.dev";

#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// `nvidia.com/gpu` the node advertises.
    pub gpus: u32,
    /// Prometheus's scrape interval.
    pub scrape_interval: Duration,
    /// How often the operator's autoscaler reads queue depth.
    pub autoscale_interval: Duration,
}

impl Default for FleetOptions {
    fn default() -> Self {
        Self {
            gpus: 8,
            scrape_interval: Duration::from_secs(1),
            autoscale_interval: Duration::from_secs(2),
        }
    }
}

pub struct Fleet {
    // Dropped in this order: the operator first (nothing reconciles while the rest stops),
    // then Prometheus, the node (its pods, through the CRI), the cluster.
    operator: ManagedProcess,
    prometheus: Prometheus,
    node: RealNode,
    cluster: Cluster,
}

impl Fleet {
    pub async fn start(options: FleetOptions) -> Result<Self, Error> {
        let cluster = Cluster::start(ClusterOptions::full().with_own_service_range()?).await?;
        install_crd(&cluster.client()).await?;

        let node = RealNode::start(
            &cluster,
            RealNodeOptions {
                gpus: options.gpus,
                gpu_product: Some(GPU_PRODUCT.into()),
                images: vec![Image::Engine],
                ..RealNodeOptions::new(NODE_NAME)
            },
        )
        .await?;

        let prometheus = Prometheus::start(PrometheusOptions {
            scrape_interval: options.scrape_interval,
            kubernetes_pods: Some(KubernetesPods::for_cluster(&cluster).await?),
            ..PrometheusOptions::default()
        })
        .await?;

        let operator = start_operator(
            &cluster,
            Some(&prometheus.url()),
            options.autoscale_interval,
        )?;
        Ok(Self {
            operator,
            prometheus,
            node,
            cluster,
        })
    }

    /// `examples/modeldeployment.yaml` in `namespace`, its source the demo model where
    /// `make tools` put it (the node is this machine, so that is a path on the node), and
    /// requesting a tenth of a core per engine: the example asks two, and this node has two
    /// cores for every replica, surge pod and the harness.
    pub fn example(&self, namespace: &str) -> Result<ModelDeployment, Error> {
        let source = format!("file://{}", demo_model_dir().display());
        let mut md = demo_model_deployment(namespace, &source)?;
        md.spec.resources.cpu = Some(Quantity("100m".into()));
        Ok(md)
    }

    /// The cluster IP of the ModelDeployment `name`'s Service in `namespace`.
    pub async fn service_ip(&self, namespace: &str, name: &str) -> Result<String, Error> {
        Api::<Service>::namespaced(self.client(), namespace)
            .get(name)
            .await?
            .spec
            .and_then(|s| s.cluster_ip)
            .filter(|ip| !ip.is_empty() && ip != "None")
            .ok_or_else(|| {
                Error::Harness(format!("the Service {namespace}/{name} has no cluster IP"))
            })
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub fn client(&self) -> Client {
        self.cluster.client()
    }

    pub fn node(&self) -> &RealNode {
        &self.node
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

    /// The last lines of the operator's, Prometheus's and the node's logs, for failure
    /// messages.
    pub fn log_tails(&self) -> String {
        format!(
            "--- operator ---\n{}\n--- prometheus ---\n{}\n--- node ---\n{}",
            self.operator.log_tail(6000),
            self.prometheus.log_tail(),
            self.node.log_tails()
        )
    }

    /// Stops everything and removes what the node made on the host.
    pub async fn shutdown(self) {
        let Fleet {
            mut operator,
            prometheus,
            node,
            cluster,
        } = self;
        operator.stop();
        drop(prometheus);
        node.shutdown().await;
        drop(cluster);
    }
}

/// Runs the operator (the workspace's binary, beside the control plane) as the cluster's
/// administrator, autoscaling from `prometheus_url` when given.
pub fn start_operator(
    cluster: &Cluster,
    prometheus_url: Option<&str>,
    autoscale_interval: Duration,
) -> Result<ManagedProcess, Error> {
    start_operator_with_telemetry(cluster, prometheus_url, autoscale_interval)
        .map(|(process, _)| process)
}

/// [`start_operator`], also returning the address of its `/metrics`.
pub fn start_operator_with_telemetry(
    cluster: &Cluster,
    prometheus_url: Option<&str>,
    autoscale_interval: Duration,
) -> Result<(ManagedProcess, std::net::SocketAddr), Error> {
    let binary = workspace_binary("modelfleet-operator", "modelfleet-operator")?;
    let telemetry = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::io("choosing the operator's telemetry port", e))?;
    let mut args: Vec<String> = vec![
        "run".into(),
        "--autoscale-interval".into(),
        format!("{}ms", autoscale_interval.as_millis()),
        "--telemetry-addr".into(),
        telemetry.to_string(),
    ];
    if let Some(url) = prometheus_url {
        args.extend(["--prometheus-url".into(), url.to_string()]);
    }
    let process = ManagedProcess::spawn_with_env(
        "modelfleet-operator",
        &binary,
        &args,
        &[("KUBECONFIG", cluster.kubeconfig_path().as_os_str())],
        &cluster.dir().join("operator.log"),
    )?;
    Ok((process, telemetry))
}

/// Installs the generated CRD (`crds/`) and waits until the API server serves it.
pub async fn install_crd(client: &Client) -> Result<(), Error> {
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
