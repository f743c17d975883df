//! Shared by the cluster tests: one real control plane per test binary, the operator run
//! in-process, and polling for a condition.
//!
//! Starting a control plane costs seconds of CPU, so each test binary starts one and every
//! test in it works in its own namespace with its own operator scoped to that namespace.
//! The cluster lives on a dedicated thread (its processes die with that thread, see
//! `modelfleet_e2e::process`), and each test talks to it through its own client, since a
//! kube client belongs to the Tokio runtime that made it and every test has its own.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use modelfleet_e2e::{Cluster, ClusterOptions};
use modelfleet_operator::api::ModelDeployment;
use modelfleet_operator::autoscaler::AutoscalerConfig;
use modelfleet_operator::controller::ControllerConfig;
use modelfleet_operator::crdgen::CRD_FILE;
use modelfleet_operator::leader::LeaseConfig;
use modelfleet_operator::metrics::Metrics;
use modelfleet_operator::operator::{OperatorConfig, run};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Generous: the tests share two cores with builds and other control planes.
pub const TIMEOUT: Duration = Duration::from_secs(180);
/// Field manager of the writes the tests make as "the user".
pub const USER_MANAGER: &str = "modelfleet-tests";

pub struct SharedCluster {
    kubeconfig: PathBuf,
    dir: PathBuf,
    controller_manager: bool,
}

static WITH_CONTROLLER_MANAGER: OnceLock<SharedCluster> = OnceLock::new();
static APISERVER_ONLY: OnceLock<SharedCluster> = OnceLock::new();

/// The test binary's control plane, started on first use, with the ModelDeployment CRD
/// from `crds/` installed (the file users install, not the in-memory types).
pub fn cluster(controller_manager: bool) -> &'static SharedCluster {
    let cell = if controller_manager {
        &WITH_CONTROLLER_MANAGER
    } else {
        &APISERVER_ONLY
    };
    cell.get_or_init(|| start_shared(controller_manager))
}

fn start_shared(controller_manager: bool) -> SharedCluster {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("control-plane".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let options = ClusterOptions {
                    controller_manager,
                    ..ClusterOptions::default()
                };
                let cluster = match Cluster::start(options).await {
                    Ok(cluster) => cluster,
                    Err(e) => {
                        let _ = tx.send(Err(format!("control plane did not start: {e}")));
                        return;
                    }
                };
                if let Err(e) = install_crd(cluster.client()).await {
                    let _ = tx.send(Err(format!("{e}\n{}", cluster.log_tails())));
                    return;
                }
                eprintln!(
                    "control plane for this test binary: {}",
                    cluster.dir().display()
                );
                // The cluster is never dropped: its directory goes when the binary exits.
                modelfleet_e2e::at_exit::remove_dir_at_exit(cluster.dir());
                let _ = tx.send(Ok(SharedCluster {
                    kubeconfig: cluster.kubeconfig_path().to_path_buf(),
                    dir: cluster.dir().to_path_buf(),
                    controller_manager,
                }));
                // Keep the cluster (and this thread) alive until the test binary exits.
                std::future::pending::<()>().await;
            });
        })
        .expect("spawn control-plane thread");
    match rx.recv() {
        Ok(Ok(shared)) => shared,
        Ok(Err(message)) => panic!("{message}"),
        Err(_) => panic!("control-plane thread died"),
    }
}

async fn install_crd(client: Client) -> Result<(), String> {
    apply_crd(&client, &repo_crd()?).await
}

/// The ModelDeployment CRD from `crds/`.
pub fn repo_crd() -> Result<CustomResourceDefinition, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crds")
        .join(CRD_FILE);
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_yaml::from_str(&text).map_err(|e| format!("parsing the CRD: {e}"))
}

/// Applies `crd` (as the user installing it) and waits until it is Established.
pub async fn apply_crd(client: &Client, crd: &CustomResourceDefinition) -> Result<(), String> {
    let name = crd.metadata.name.clone().unwrap_or_default();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        &name,
        &PatchParams::apply(USER_MANAGER).force(),
        &Patch::Apply(crd),
    )
    .await
    .map_err(|e| format!("the API server refused the CRD: {e}"))?;
    let established = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Ok(crd) = crds.get(&name).await {
                let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
                if conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    established.map_err(|_| "the CRD never became Established".to_string())
}

impl SharedCluster {
    /// A new admin client for the calling test's runtime.
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read kubeconfig");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig");
        Client::try_from(config).expect("client")
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a namespace (and, with a controller-manager, waits for its default service
    /// account, without which pods are refused).
    pub async fn namespace(&self, client: &Client, name: &str) {
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .expect("create namespace");
        if self.controller_manager {
            let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
            until("the default service account", || async {
                accounts.get_opt("default").await.ok().flatten()
            })
            .await;
        }
    }
}

/// An operator running in this test's runtime.
pub struct RunningOperator {
    pub metrics: Metrics,
    pub identity: String,
    shutdown: CancellationToken,
    task: JoinHandle<modelfleet_operator::Result<()>>,
}

/// Lease timings short enough for a test, long enough not to flap on a loaded machine.
pub fn test_lease(namespace: &str, identity: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_secs(8),
        renew_deadline: Duration::from_secs(6),
        retry_period: Duration::from_secs(1),
        ..LeaseConfig::new(namespace, "modelfleet-operator", identity)
    }
}

/// Starts an operator watching `namespace`, optionally behind leader election.
pub fn start_operator(
    client: Client,
    namespace: &str,
    identity: &str,
    lease: Option<LeaseConfig>,
) -> RunningOperator {
    start_operator_with(client, namespace, identity, lease, None)
}

pub fn start_operator_with(
    client: Client,
    namespace: &str,
    identity: &str,
    lease: Option<LeaseConfig>,
    telemetry_addr: Option<std::net::SocketAddr>,
) -> RunningOperator {
    start_operator_config(
        client,
        OperatorConfig {
            controller: ControllerConfig::new(Some(namespace.into()), identity),
            leader_election: lease,
            telemetry_addr,
        },
    )
}

/// Starts an operator watching `namespace` with the queue-depth autoscaler on.
pub fn start_autoscaling_operator(
    client: Client,
    namespace: &str,
    identity: &str,
    autoscaler: AutoscalerConfig,
) -> RunningOperator {
    start_operator_config(
        client,
        OperatorConfig {
            controller: ControllerConfig {
                autoscaler: Some(autoscaler),
                ..ControllerConfig::new(Some(namespace.into()), identity)
            },
            leader_election: None,
            telemetry_addr: None,
        },
    )
}

pub fn start_operator_config(client: Client, config: OperatorConfig) -> RunningOperator {
    let metrics = Metrics::new().expect("metrics");
    let shutdown = CancellationToken::new();
    let identity = config.controller.identity.clone();
    let task = tokio::spawn(run(client, config, metrics.clone(), shutdown.clone()));
    RunningOperator {
        metrics,
        identity,
        shutdown,
        task,
    }
}

impl RunningOperator {
    /// Ends the operator as a crash would: no clean-up, no lease release.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Asks the operator to shut down and waits for it.
    pub async fn stop(self) -> modelfleet_operator::Result<()> {
        self.shutdown.cancel();
        self.task.await.expect("operator task panicked")
    }

    pub fn reconciles(&self) -> u64 {
        self.metrics.reconciles.get()
    }
}

/// Polls `check` until it returns `Some`, failing the test after [`TIMEOUT`].
pub async fn until<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    modelfleet_e2e::wait::until(what, TIMEOUT, check).await
}

/// The example manifest users copy, placed in `namespace`.
pub fn example(namespace: &str) -> ModelDeployment {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/modeldeployment.yaml");
    let text = std::fs::read_to_string(&path).expect("read the example");
    let mut md: ModelDeployment =
        serde_yaml::from_str(&text).expect("the example parses as a ModelDeployment");
    md.metadata.namespace = Some(namespace.into());
    md
}

/// A minimal ModelDeployment: name, source and revision, nothing else.
pub fn minimal(namespace: &str, name: &str, revision: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "modelfleet.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": { "name": name, "namespace": namespace },
        "spec": { "model": { "source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "revision": revision },
                  "resources": { "gpus": 0 } },
    })
}

/// Applies `object` as the user would (`kubectl apply --server-side`).
pub async fn apply_as_user(
    client: &Client,
    namespace: &str,
    object: &serde_json::Value,
) -> ModelDeployment {
    let name = object["metadata"]["name"].as_str().expect("name");
    Api::<ModelDeployment>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply(USER_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .expect("apply the ModelDeployment")
}
