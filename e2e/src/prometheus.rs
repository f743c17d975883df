//! Prometheus for the tests and the demo: the pinned release built from its Go module
//! (provisioned by `make tools`) on a free local port with its own data directory.
//!
//! Two ways to find what to scrape, usable together:
//! - [`KubernetesPods`]: Prometheus's own `kubernetes_sd_configs` (role `pod`) against a
//!   harness [`Cluster`]'s API server, through a kubeconfig for a service account that may
//!   only read pods. Pods that carry the label `modelfleet.dev/deployment` and run are
//!   scraped at `<pod IP>:<container port named http>/metrics`, and their series get the
//!   labels `namespace`, `pod` and `modeldeployment` (from that pod label): what the
//!   operator's autoscaler queries. The relabelling is the one a cluster's Prometheus uses.
//! - [`StaticTarget`]s: fixed `host:port` targets with fixed labels (for tests without pods).
//!
//! [`Prometheus::stop`] and [`Prometheus::start_again`] keep the port and the data, as a
//! Prometheus pod restarting would. Dropping it stops the process; if the drop happens while
//! a test panics, the directory is kept and the log tail printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use modelfleet_contract::labels::field_manager::HARNESS as FIELD_MANAGER;
use modelfleet_contract::labels::{
    DEPLOYMENT as DEPLOYMENT_LABEL, TRACK as TRACK_LABEL, prometheus_pod_meta_label,
};
use modelfleet_contract::metrics::{MODEL_DEPLOYMENT, NAMESPACE, POD, TRACK};
use modelfleet_contract::ports;
pub use modelfleet_contract::prometheus::Sample;
use modelfleet_contract::prometheus::{PrometheusClient, sum};
use serde::Deserialize;
use serde_json::json;

use crate::kubeconfig;
use crate::process::ManagedProcess;
use crate::{Cluster, Error};

/// Job names in the generated configuration (the `job` label of every series).
pub const PODS_JOB: &str = "modelfleet-pods";
pub const STATIC_JOB: &str = "static";

/// Name of the service account (in `kube-system`) Prometheus discovers pods as.
const SERVICE_ACCOUNT: &str = "modelfleet-prometheus";
const SYSTEM_NAMESPACE: &str = "kube-system";
/// Bytes of the log printed when something fails.
const LOG_TAIL_BYTES: u64 = 4000;

/// What to run and what to scrape.
#[derive(Clone, Debug)]
pub struct PrometheusOptions {
    /// Scrape interval, also the rule evaluation interval and the scrape timeout.
    pub scrape_interval: Duration,
    /// Discover pods through the Kubernetes API.
    pub kubernetes_pods: Option<KubernetesPods>,
    /// Fixed targets.
    pub static_targets: Vec<StaticTarget>,
    /// How long to wait for `/-/ready`.
    pub ready_timeout: Duration,
}

impl Default for PrometheusOptions {
    fn default() -> Self {
        Self {
            scrape_interval: Duration::from_secs(1),
            kubernetes_pods: None,
            static_targets: Vec::new(),
            ready_timeout: Duration::from_secs(60),
        }
    }
}

/// How Prometheus reaches a cluster's API server to discover pods.
#[derive(Clone, Debug)]
pub struct KubernetesPods {
    /// `https://127.0.0.1:<port>`.
    pub api_server: String,
    /// The CA the API server's certificate chains to, PEM.
    pub ca_pem: String,
    /// A bearer token allowed to list and watch pods.
    pub token: String,
    /// Watch only these namespaces; empty watches all.
    pub namespaces: Vec<String>,
}

impl KubernetesPods {
    /// Access to `cluster` as the service account `kube-system/modelfleet-prometheus`,
    /// created (idempotently) with a ClusterRole that may only get, list and watch pods,
    /// and a token from the TokenRequest API valid for a day.
    pub async fn for_cluster(cluster: &Cluster) -> Result<Self, Error> {
        let client = cluster.client();
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        let meta = |name: &str, namespace: Option<&str>| ObjectMeta {
            name: Some(name.to_string()),
            namespace: namespace.map(String::from),
            ..ObjectMeta::default()
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
        let account = ServiceAccount {
            metadata: meta(SERVICE_ACCOUNT, Some(SYSTEM_NAMESPACE)),
            ..ServiceAccount::default()
        };
        accounts
            .patch(SERVICE_ACCOUNT, &apply, &Patch::Apply(&account))
            .await?;
        let role = ClusterRole {
            metadata: meta(SERVICE_ACCOUNT, None),
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["pods".into()]),
                verbs: vec!["get".into(), "list".into(), "watch".into()],
                ..PolicyRule::default()
            }]),
            ..ClusterRole::default()
        };
        Api::<ClusterRole>::all(client.clone())
            .patch(SERVICE_ACCOUNT, &apply, &Patch::Apply(&role))
            .await?;
        let binding = ClusterRoleBinding {
            metadata: meta(SERVICE_ACCOUNT, None),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: SERVICE_ACCOUNT.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: SERVICE_ACCOUNT.into(),
                namespace: Some(SYSTEM_NAMESPACE.into()),
                ..Subject::default()
            }]),
        };
        Api::<ClusterRoleBinding>::all(client.clone())
            .patch(SERVICE_ACCOUNT, &apply, &Patch::Apply(&binding))
            .await?;
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(24 * 3600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let token = accounts
            .create_token_request(SERVICE_ACCOUNT, &PostParams::default(), &request)
            .await?
            .status
            .map(|s| s.token)
            .ok_or_else(|| {
                Error::Prometheus("the TokenRequest came back without a token".into())
            })?;
        Ok(Self {
            api_server: cluster.server_url().to_string(),
            ca_pem: cluster.ca_pem().to_string(),
            token,
            namespaces: Vec::new(),
        })
    }
}

/// A fixed scrape target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticTarget {
    /// `host:port`; scraped at `/metrics`.
    pub address: String,
    /// Labels put on every series of this target.
    pub labels: BTreeMap<String, String>,
}

impl StaticTarget {
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            labels: BTreeMap::new(),
        }
    }

    pub fn label(mut self, name: &str, value: &str) -> Self {
        self.labels.insert(name.to_string(), value.to_string());
        self
    }
}

/// A running (or stopped) Prometheus. Dropping it stops the process.
pub struct Prometheus {
    process: Option<ManagedProcess>,
    program: PathBuf,
    args: Vec<String>,
    port: u16,
    options: PrometheusOptions,
    /// `None` once the directory has been kept for inspection.
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
}

impl Prometheus {
    /// Writes the configuration, starts Prometheus on a free port and waits for `/-/ready`.
    pub async fn start(options: PrometheusOptions) -> Result<Self, Error> {
        let program = crate::tools::tool("prometheus")?;
        let dir = tempfile::Builder::new()
            .prefix("modelfleet-prometheus-")
            .tempdir()
            .map_err(|e| Error::io("creating the Prometheus directory", e))?;
        let dir_path = dir.path().to_path_buf();
        let kubeconfig_path = dir_path.join("kubernetes.kubeconfig");
        if let Some(pods) = &options.kubernetes_pods {
            kubeconfig::write_for_token(
                &kubeconfig_path,
                &kubeconfig::Server {
                    url: &pods.api_server,
                    ca_pem: &pods.ca_pem,
                    tls_server_name: None,
                },
                SERVICE_ACCOUNT,
                &pods.token,
            )?;
        }
        let config = render_config(&options, &kubeconfig_path)?;
        let config_path = dir_path.join("prometheus.yml");
        std::fs::write(&config_path, config)
            .map_err(|e| Error::io("writing the Prometheus configuration", e))?;
        let port = crate::ports::free_ports(1)?[0];
        let args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir_path.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--storage.tsdb.retention.time=1d".into(),
            "--log.level=info".into(),
        ];
        let mut prometheus = Self {
            process: None,
            program,
            args,
            port,
            options,
            dir: Some(dir),
            dir_path,
        };
        prometheus.start_again().await?;
        tracing::info!(url = %prometheus.url(), dir = %prometheus.dir().display(), "Prometheus ready");
        Ok(prometheus)
    }

    /// Starts the process again after [`Self::stop`], on the same port with the same data,
    /// and waits until it is ready. Does nothing if it runs.
    pub async fn start_again(&mut self) -> Result<(), Error> {
        if self.is_running() {
            return Ok(());
        }
        self.process = Some(ManagedProcess::spawn(
            "prometheus",
            &self.program,
            &self.args,
            &self.log_path(),
        )?);
        self.wait_ready(self.options.ready_timeout).await
    }

    /// Stops the process (SIGTERM, then SIGKILL after a grace period); port and data stay.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// Whether the process runs.
    pub fn is_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|p| p.exit_status().is_none())
    }

    /// `http://127.0.0.1:<port>`, the base URL of the HTTP API.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory: `prometheus.yml`, `data/`, `prometheus.log` and credentials.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir_path.join("prometheus.log")
    }

    /// The last bytes of Prometheus's log.
    pub fn log_tail(&self) -> String {
        crate::process::tail(&self.log_path(), LOG_TAIL_BYTES)
    }

    /// Polls `/-/ready` until it answers 200, failing early if the process exits.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            if let Some(process) = self.process.as_mut()
                && let Some(status) = process.exit_status()
            {
                return Err(Error::ComponentExited {
                    name: "prometheus".into(),
                    status: status.to_string(),
                    log_tail: self.log_tail(),
                });
            }
            if self.get("/-/ready").await.is_ok() {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(Error::NotReady {
                    what: format!("Prometheus {}/-/ready", self.url()),
                    seconds: timeout.as_secs(),
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// An instant query: every series of the answer (a scalar answer is one unlabelled
    /// sample).
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>, Error> {
        self.client()?
            .query(promql)
            .await
            .map_err(|e| Error::Prometheus(format!("query {promql:?}: {e}")))
    }

    /// The sum of an instant query's values; `None` when the answer is empty.
    pub async fn query_value(&self, promql: &str) -> Result<Option<f64>, Error> {
        Ok(sum(&self.query(promql).await?))
    }

    /// Polls `promql` until `accept` takes its answer; the error names the query, the last
    /// answer and the log tail.
    pub async fn wait_for(
        &self,
        promql: &str,
        timeout: Duration,
        accept: impl Fn(&[Sample]) -> bool,
    ) -> Result<Vec<Sample>, Error> {
        let started = Instant::now();
        let mut last: String;
        loop {
            match self.query(promql).await {
                Ok(samples) if accept(&samples) => return Ok(samples),
                Ok(samples) => last = format!("{samples:?}"),
                Err(e) => last = e.to_string(),
            }
            if started.elapsed() > timeout {
                return Err(Error::NotReady {
                    what: format!("Prometheus query {promql:?} (last answer: {last})"),
                    seconds: timeout.as_secs(),
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The active scrape targets as `(scrape URL, health, labels)`, for diagnostics.
    pub async fn active_targets(
        &self,
    ) -> Result<Vec<(String, String, BTreeMap<String, String>)>, Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Target {
            scrape_url: String,
            health: String,
            labels: BTreeMap<String, String>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Data {
            active_targets: Vec<Target>,
        }
        #[derive(Deserialize)]
        struct Answer {
            data: Data,
        }
        let body = self.get("/api/v1/targets?state=active").await?;
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| Error::Prometheus(format!("reading /api/v1/targets: {e}")))?;
        Ok(answer
            .data
            .active_targets
            .into_iter()
            .map(|t| (t.scrape_url, t.health, t.labels))
            .collect())
    }

    /// A client of the HTTP API. A client per call: a kube client belongs to the runtime
    /// that built it, and callers of one Prometheus may live in different runtimes.
    fn client(&self) -> Result<PrometheusClient, Error> {
        PrometheusClient::new(&self.url()).map_err(|e| Error::Prometheus(e.to_string()))
    }

    /// GET `path` from the HTTP API; the body of a 2xx answer.
    async fn get(&self, path: &str) -> Result<Vec<u8>, Error> {
        let (status, body) = self
            .client()?
            .get(path)
            .await
            .map_err(|e| Error::Prometheus(format!("GET {path}: {e}")))?;
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(Error::Prometheus(format!(
                "GET {}{path}: HTTP {status}: {text}",
                self.url()
            )));
        }
        Ok(body)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let kept = self.dir.take().map(tempfile::TempDir::keep);
            eprintln!(
                "--- Prometheus log (kept in {}) ---\n{}",
                kept.as_deref().unwrap_or(&self.dir_path).display(),
                self.log_tail()
            );
        }
        self.stop();
    }
}

/// `prometheus.yml` for `options`; pods are discovered through the kubeconfig at
/// `kubeconfig`.
fn render_config(options: &PrometheusOptions, kubeconfig: &Path) -> Result<String, Error> {
    let interval = format!("{}ms", options.scrape_interval.as_millis().max(1));
    let mut jobs = Vec::new();
    if let Some(pods) = &options.kubernetes_pods {
        let label = prometheus_pod_meta_label;
        let mut discovery = json!({
            "role": "pod",
            "kubeconfig_file": kubeconfig.display().to_string(),
        });
        if !pods.namespaces.is_empty() {
            discovery["namespaces"] = json!({ "names": pods.namespaces });
        }
        jobs.push(json!({
            "job_name": PODS_JOB,
            "metrics_path": "/metrics",
            // Engines and the test server answer in the text format.
            "fallback_scrape_protocol": "PrometheusText0.0.4",
            "kubernetes_sd_configs": [discovery],
            "relabel_configs": [
                { "source_labels": [label(DEPLOYMENT_LABEL)], "regex": ".+", "action": "keep" },
                { "source_labels": ["__meta_kubernetes_pod_container_port_name"],
                  "regex": ports::HTTP.name, "action": "keep" },
                { "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "Running", "action": "keep" },
                { "source_labels": ["__meta_kubernetes_namespace"], "target_label": NAMESPACE },
                { "source_labels": ["__meta_kubernetes_pod_name"], "target_label": POD },
                { "source_labels": [label(DEPLOYMENT_LABEL)], "target_label": MODEL_DEPLOYMENT },
                // A canary's pods; absent (so no label) on the stable ones.
                { "source_labels": [label(TRACK_LABEL)], "target_label": TRACK },
            ],
        }));
    }
    if !options.static_targets.is_empty() {
        let configs: Vec<_> = options
            .static_targets
            .iter()
            .map(|t| json!({ "targets": [t.address], "labels": t.labels }))
            .collect();
        jobs.push(json!({
            "job_name": STATIC_JOB,
            "metrics_path": "/metrics",
            "fallback_scrape_protocol": "PrometheusText0.0.4",
            "static_configs": configs,
        }));
    }
    let config = json!({
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "scrape_configs": jobs,
    });
    serde_yaml::to_string(&config)
        .map_err(|e| Error::Prometheus(format!("rendering prometheus.yml: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_discovery_keeps_labelled_pods_and_relabels_onto_series() {
        let options = PrometheusOptions {
            kubernetes_pods: Some(KubernetesPods {
                api_server: "https://127.0.0.1:6443".into(),
                ca_pem: "CA".into(),
                token: "TOKEN".into(),
                namespaces: vec!["ml".into()],
            }),
            static_targets: vec![StaticTarget::new("127.0.0.1:9000").label("a", "b")],
            ..PrometheusOptions::default()
        };
        let yaml =
            render_config(&options, Path::new("/tmp/p/kubernetes.kubeconfig")).expect("renders");
        let config: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("parses");
        assert_eq!(config["global"]["scrape_interval"].as_str(), Some("1000ms"));
        let pods = &config["scrape_configs"][0];
        let relabel = pods["relabel_configs"].as_sequence().expect("relabel list");
        assert_eq!(
            relabel[0]["source_labels"][0].as_str(),
            Some("__meta_kubernetes_pod_label_modelfleet_dev_deployment")
        );
        let targets: Vec<&str> = relabel
            .iter()
            .filter_map(|r| r["target_label"].as_str())
            .collect();
        assert_eq!(targets, ["namespace", "pod", "modeldeployment", "track"]);
        let sd = &pods["kubernetes_sd_configs"][0];
        assert_eq!(sd["role"].as_str(), Some("pod"));
        assert_eq!(
            sd["kubeconfig_file"].as_str(),
            Some("/tmp/p/kubernetes.kubeconfig")
        );
        assert_eq!(sd["namespaces"]["names"][0].as_str(), Some("ml"));
        let static_job = &config["scrape_configs"][1];
        assert_eq!(
            static_job["static_configs"][0]["labels"]["a"].as_str(),
            Some("b")
        );
    }
}
