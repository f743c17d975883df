//! What the fleet scenarios share: starting a fleet, the demo ModelDeployment sized for a
//! small machine, waiting on its status, and talking to its pods.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use modelfleet_contract::ports;
use modelfleet_e2e::fleet::{self, Fleet, FleetOptions, ModelDeploymentStatus, model_deployments};
use modelfleet_loadgen::{
    Arrival, LoadConfig, LoadGenerator, Prompt, RequestSettings, StopAfter, Target,
};
use modelfleet_operator::api::ModelDeployment;
use modelfleet_proto::v1 as pb;
use modelfleet_proto::v1::generation_client::GenerationClient;

pub const NAME: &str = "smollm2";
/// `spec.model.servedName` of the example.
pub const SERVED_NAME: &str = "smollm2-135m-instruct";

/// Scenarios take turns (each test has its own runtime; tokio's mutex works across them).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fleet, and the right to be the only one running.
pub struct Scenario {
    pub fleet: Fleet,
    pub namespace: String,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Scenario {
    pub async fn start(namespace: &str) -> Scenario {
        let turn = ONE_AT_A_TIME.lock().await;
        let fleet = Fleet::start(FleetOptions::default())
            .await
            .expect("starting the fleet");
        fleet
            .cluster()
            .create_namespace(namespace)
            .await
            .expect("namespace");
        Scenario {
            fleet,
            namespace: namespace.to_string(),
            _turn: turn,
        }
    }

    /// The example with the demo model, each engine on one core and a small KV cache.
    pub fn example(&self) -> ModelDeployment {
        let mut md = self.fleet.example(&self.namespace).expect("the example");
        md.spec.engine.extra_args = vec![
            "--threads".into(),
            "1".into(),
            "--kv-cache-bytes".into(),
            (256 << 20).to_string(),
        ];
        md
    }

    pub async fn apply(&self, md: &ModelDeployment) {
        fleet::apply(&self.fleet.client(), md)
            .await
            .expect("applying the ModelDeployment");
    }

    pub async fn status(&self) -> ModelDeploymentStatus {
        model_deployments(&self.fleet.client(), &self.namespace)
            .get(NAME)
            .await
            .expect("the ModelDeployment")
            .status
            .unwrap_or_default()
    }

    /// Polls the status until `check` holds; fails with the last status and the logs.
    pub async fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&ModelDeploymentStatus) -> bool,
    ) -> ModelDeploymentStatus {
        let started = Instant::now();
        loop {
            let status = self.status().await;
            if check(&status) {
                eprintln!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());
                return status;
            }
            if started.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; status: {status:#?}\npods: {}\n{}",
                    self.pod_summary().await,
                    self.fleet.log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until exactly `n` pods exist, all ready, all of the template's revision.
    pub async fn wait_ready(&self, n: i32, timeout: Duration) -> ModelDeploymentStatus {
        self.wait_status(&format!("{n} ready replicas"), timeout, |s| {
            s.ready_replicas == n && s.replicas == n && s.updated_replicas == n
        })
        .await
    }

    pub async fn deployment_replicas(&self) -> i32 {
        Api::<Deployment>::namespaced(self.fleet.client(), &self.namespace)
            .get(NAME)
            .await
            .ok()
            .and_then(|d| d.spec)
            .and_then(|s| s.replicas)
            .unwrap_or(-1)
    }

    pub async fn pods(&self) -> Vec<Pod> {
        Api::<Pod>::namespaced(self.fleet.client(), &self.namespace)
            .list(&ListParams::default().labels(&format!("modelfleet.dev/deployment={NAME}")))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    }

    async fn pod_summary(&self) -> String {
        self.pods()
            .await
            .iter()
            .map(|p| {
                let status = p.status.clone().unwrap_or_default();
                format!(
                    "{} phase={:?} ip={:?} ready={:?}",
                    p.metadata.name.as_deref().unwrap_or("?"),
                    status.phase,
                    status.pod_ip,
                    status.container_statuses.map(|cs| cs
                        .iter()
                        .map(|c| (c.ready, c.restart_count))
                        .collect::<Vec<_>>())
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The cluster IP of the ModelDeployment's Service.
    pub async fn service_ip(&self) -> String {
        self.fleet
            .service_ip(&self.namespace, NAME)
            .await
            .expect("the Service's cluster IP")
    }

    pub async fn ready_endpoints(&self) -> Vec<String> {
        fleet::ready_endpoints(&self.fleet.client(), &self.namespace, NAME)
            .await
            .expect("reading EndpointSlices")
    }

    /// Notes of the events with `reason` recorded about the ModelDeployment.
    pub async fn event_messages(&self, reason: &str) -> Vec<String> {
        Api::<Event>::namespaced(self.fleet.client(), &self.namespace)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| {
                e.involved_object.kind.as_deref() == Some("ModelDeployment")
                    && e.reason.as_deref() == Some(reason)
            })
            .filter_map(|e| e.message)
            .collect()
    }

    pub async fn shutdown(self) {
        let Scenario { fleet, _turn, .. } = self;
        fleet.shutdown().await;
    }
}

pub fn grpc_target(address: &str) -> Target {
    Target::grpc(format!("{address}:{}", ports::GRPC.number))
}

/// The OpenAI completions endpoint at `address` (a pod's or the Service's).
pub fn http_target(address: &str) -> Target {
    Target::http_completions(&format!("http://{address}:{}", ports::HTTP.number))
        .expect("an HTTP target")
}

pub async fn grpc_client(address: &str) -> GenerationClient<tonic::transport::Channel> {
    GenerationClient::connect(format!("http://{address}:{}", ports::GRPC.number))
        .await
        .expect("connecting to the engine pod")
}

/// One greedy request to a pod; its text.
pub async fn generate(address: &str, prompt: &str, max_tokens: u32) -> String {
    let mut client = grpc_client(address).await;
    let mut stream = client
        .generate(pb::GenerateRequest {
            model: SERVED_NAME.into(),
            prompt: Some(pb::generate_request::Prompt::Text(prompt.into())),
            sampling: None,
            stop: Some(pb::StopParams {
                max_tokens,
                ..pb::StopParams::default()
            }),
        })
        .await
        .expect("Generate")
        .into_inner();
    let mut text = String::new();
    while let Some(message) = stream.message().await.expect("stream") {
        text.push_str(&message.text);
    }
    text
}

pub async fn served_revision(address: &str) -> String {
    grpc_client(address)
        .await
        .model_info(pb::ModelInfoRequest {})
        .await
        .expect("ModelInfo")
        .into_inner()
        .revision
}

/// Closed-loop load of `concurrency` clients with `max_tokens` each, until cancelled.
pub fn load(targets: Vec<Target>, concurrency: usize, max_tokens: u32) -> LoadGenerator {
    LoadGenerator::new(
        LoadConfig {
            arrival: Arrival::Closed { concurrency },
            stop: StopAfter::default(),
            request: RequestSettings {
                model: SERVED_NAME.into(),
                prompt: Prompt::Words(16),
                max_tokens,
                ignore_eos: true,
                temperature: None,
                timeout: Some(Duration::from_secs(120)),
            },
            seed: 7,
        },
        targets,
    )
    .expect("load settings")
}

pub fn condition<'a>(
    status: &'a ModelDeploymentStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status.condition(type_)
}
