//! A real Kubernetes control plane on free local ports: etcd, kube-apiserver and,
//! optionally, kube-controller-manager and kube-scheduler.
//!
//! The apiserver serves TLS with a certificate from a fresh CA, authenticates clients by
//! certificate or service-account token, and authorizes with RBAC, so what passes here passes
//! on a real cluster. Everything lives in one temporary directory; dropping the [`Cluster`]
//! stops every process. If the drop happens while a test is panicking, the directory is kept
//! and the tail of every component's log is printed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::Error;
use crate::kubeconfig;
use crate::pki::{ClientIdentity, Pki};
use crate::ports::free_ports;
use crate::process::ManagedProcess;
use crate::subnets::{self, Ipv4Cidr};
use crate::tools::tool;

/// The range Services get their cluster IPs from unless the options name another; its first
/// address is the `kubernetes` Service's.
pub const DEFAULT_SERVICE_RANGE: Ipv4Cidr = Ipv4Cidr::DEFAULT_SERVICES;
/// How many times start-up is tried with fresh ports when a component dies early (another
/// process may grab a port between choosing it and binding it).
const START_ATTEMPTS: usize = 3;
/// Bytes of each component log printed when something fails.
const LOG_TAIL_BYTES: u64 = 4000;

/// What to run besides etcd and the apiserver.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Run kube-controller-manager (Deployments get ReplicaSets and Pods, garbage
    /// collection, namespace default service accounts, …).
    pub controller_manager: bool,
    /// Run kube-scheduler (Pods get bound to Nodes).
    pub scheduler: bool,
    /// Extra `--flag=value` arguments for kube-apiserver.
    pub extra_apiserver_args: Vec<String>,
    /// How long to wait for the apiserver's `/readyz`.
    pub ready_timeout: Duration,
    /// The Services' cluster IP range. A cluster with a real node routes it from the host
    /// to the node (where kube-proxy translates it), so each such cluster needs its own:
    /// see [`ClusterOptions::with_own_service_range`].
    pub service_range: Ipv4Cidr,
    /// Requests per second (and twice that as burst) the controller-manager and the
    /// scheduler may send; `None` keeps their defaults (20 and 50), which pace any test of
    /// thousands of objects.
    pub component_qps: Option<u32>,
    /// Extra `--flag=value` arguments for kube-controller-manager.
    pub extra_controller_manager_args: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            controller_manager: false,
            scheduler: false,
            extra_apiserver_args: Vec::new(),
            ready_timeout: Duration::from_secs(180),
            service_range: DEFAULT_SERVICE_RANGE,
            component_qps: None,
            extra_controller_manager_args: Vec::new(),
        }
    }
}

impl ClusterOptions {
    /// Every control-plane component: etcd, apiserver, controller-manager and scheduler.
    pub fn full() -> Self {
        Self {
            controller_manager: true,
            scheduler: true,
            ..Self::default()
        }
    }

    /// These options with a Service range of their own: a /24 that nothing on this machine
    /// routes yet, so the host can route it to this cluster's real node.
    pub fn with_own_service_range(mut self) -> Result<Self, Error> {
        self.service_range = subnets::choose(
            subnets::SERVICE_BLOCK,
            subnets::seed(),
            &subnets::in_use_on_host()?,
        )
        .ok_or_else(|| Error::Harness("no free /24 for Services in 10.100.0.0/14".into()))?;
        Ok(self)
    }
}

/// A running control plane. Dropping it stops every component.
pub struct Cluster {
    /// Components in start order.
    processes: Vec<ManagedProcess>,
    server: String,
    kubeconfig_path: PathBuf,
    client: Client,
    pki: Pki,
    options: ClusterOptions,
    /// `None` once the directory has been kept for inspection.
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
}

impl Cluster {
    /// Starts the control plane and waits until the apiserver is ready (and, with a
    /// controller-manager, until it has created the `default` namespace's service account).
    pub async fn start(options: ClusterOptions) -> Result<Self, Error> {
        let mut last_error = None;
        for attempt in 1..=START_ATTEMPTS {
            match Self::start_once(options.clone()).await {
                Ok(cluster) => return Ok(cluster),
                Err(err @ (Error::ComponentExited { .. } | Error::NotReady { .. }))
                    if attempt < START_ATTEMPTS =>
                {
                    tracing::warn!(attempt, error = %err, "control plane failed to start; retrying");
                    last_error = Some(err);
                }
                Err(err) => return Err(err),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::NotReady {
            what: "control plane".into(),
            seconds: 0,
            log_tail: String::new(),
        }))
    }

    async fn start_once(options: ClusterOptions) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix("modelfleet-cluster-")
            .tempdir()
            .map_err(|e| Error::io("creating the cluster directory", e))?;
        let dir_path = dir.path().to_path_buf();
        let ports = free_ports(5)?;
        let (etcd_port, etcd_peer_port, apiserver_port, cm_port, scheduler_port) =
            (ports[0], ports[1], ports[2], ports[3], ports[4]);
        let server = format!("https://127.0.0.1:{apiserver_port}");

        let pki = Pki::create(&dir_path.join("pki"), &serving_names(options.service_range))?;
        let admin = pki.issue_client(&ClientIdentity::admin(), "admin")?;
        let kubeconfig_path = dir_path.join("kubeconfig");
        kubeconfig::write_for_client_cert(&kubeconfig_path, &server, pki.ca_pem(), &admin)?;

        let mut cluster_processes = Vec::new();
        let logs = dir_path.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| Error::io("creating the log directory", e))?;

        cluster_processes.push(ManagedProcess::spawn(
            "etcd",
            &tool("etcd")?,
            &etcd_args(&dir_path.join("etcd"), etcd_port, etcd_peer_port),
            &logs.join("etcd.log"),
        )?);
        cluster_processes.push(ManagedProcess::spawn(
            "kube-apiserver",
            &tool("kube-apiserver")?,
            &apiserver_args(&pki, apiserver_port, etcd_port, &options),
            &logs.join("kube-apiserver.log"),
        )?);

        let client = client_from_kubeconfig(&kubeconfig_path).await?;
        wait_ready(&client, &mut cluster_processes, options.ready_timeout).await?;

        // Both components authenticate as the user the RBAC bootstrap policy binds their
        // roles to, with a kubeconfig of their own.
        let kubeconfig_for = |user: &str, stem: &str| -> Result<PathBuf, Error> {
            let creds = pki.issue_client(&ClientIdentity::new(user, &[]), stem)?;
            let path = dir_path.join(format!("{stem}.kubeconfig"));
            kubeconfig::write_for_client_cert(&path, &server, pki.ca_pem(), &creds)?;
            Ok(path)
        };
        if options.controller_manager {
            let config = kubeconfig_for("system:kube-controller-manager", "controller-manager")?;
            cluster_processes.push(ManagedProcess::spawn(
                "kube-controller-manager",
                &tool("kube-controller-manager")?,
                &[
                    controller_manager_args(&pki, &config, cm_port, options.service_range),
                    qps_args(options.component_qps),
                    options.extra_controller_manager_args.clone(),
                ]
                .concat(),
                &logs.join("kube-controller-manager.log"),
            )?);
        }
        if options.scheduler {
            let config = kubeconfig_for("system:kube-scheduler", "scheduler")?;
            cluster_processes.push(ManagedProcess::spawn(
                "kube-scheduler",
                &tool("kube-scheduler")?,
                &[
                    scheduler_args(&config, scheduler_port),
                    qps_args(options.component_qps),
                ]
                .concat(),
                &logs.join("kube-scheduler.log"),
            )?);
        }

        let cluster = Self {
            processes: cluster_processes,
            server,
            kubeconfig_path,
            client,
            pki,
            options,
            dir: Some(dir),
            dir_path,
        };
        if cluster.options.controller_manager {
            cluster.wait_for_default_service_account("default").await?;
        }
        tracing::info!(server = %cluster.server, dir = %cluster.dir_path.display(), "control plane ready");
        Ok(cluster)
    }

    /// A client acting as the cluster administrator (`system:masters`).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The administrator's kubeconfig (certificates embedded).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The apiserver's URL, `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// The apiserver's address, `127.0.0.1:<port>`.
    pub fn apiserver_address(&self) -> Result<std::net::SocketAddr, Error> {
        self.server
            .trim_start_matches("https://")
            .parse()
            .map_err(|e| Error::Harness(format!("the API server URL {}: {e}", self.server)))
    }

    /// The Services' cluster IP range.
    pub fn service_range(&self) -> Ipv4Cidr {
        self.options.service_range
    }

    /// Writes a kubeconfig for a new client certificate of `identity`, reaching the API
    /// server at `server` (e.g. through a forwarder) and checking its certificate against
    /// `tls_server_name`, one of the names it is issued for.
    pub fn write_kubeconfig(
        &self,
        identity: &ClientIdentity,
        stem: &str,
        server: &str,
        tls_server_name: Option<&str>,
    ) -> Result<PathBuf, Error> {
        let credentials = self.pki.issue_client(identity, stem)?;
        let path = self.dir_path.join(format!("{stem}.kubeconfig"));
        kubeconfig::write(
            &path,
            &kubeconfig::Server {
                url: server,
                ca_pem: self.pki.ca_pem(),
                tls_server_name,
            },
            &credentials,
        )?;
        Ok(path)
    }

    /// The CA certificate the apiserver's serving certificate chains to, PEM encoded.
    pub fn ca_pem(&self) -> &str {
        self.pki.ca_pem()
    }

    /// The cluster's directory: PKI, kubeconfigs, etcd data and `logs/`.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// Whether a controller-manager runs (and so service accounts get created).
    pub fn has_controller_manager(&self) -> bool {
        self.options.controller_manager
    }

    /// A client that authenticates with a bearer token (e.g. a service account's).
    pub async fn client_for_token(&self, token: &str) -> Result<Client, Error> {
        let mut config = Config::new(self.server.parse().map_err(|e: http::uri::InvalidUri| {
            Error::Kubeconfig(format!("bad server URL {}: {e}", self.server))
        })?);
        config.root_cert = Some(vec![pem_to_der(self.pki.ca_pem())?]);
        config.auth_info.token = Some(token.to_string().into());
        Ok(Client::try_from(config)?)
    }

    /// Creates a namespace and, when a controller-manager runs, waits for its `default`
    /// service account (pods are refused until it exists).
    pub async fn create_namespace(&self, name: &str) -> Result<Namespace, Error> {
        let namespaces: Api<Namespace> = Api::all(self.client());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let created = namespaces
            .create(&PostParams::default(), &namespace)
            .await?;
        if self.options.controller_manager {
            self.wait_for_default_service_account(name).await?;
        }
        Ok(created)
    }

    async fn wait_for_default_service_account(&self, namespace: &str) -> Result<(), Error> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let timeout = self.options.ready_timeout;
        let started = Instant::now();
        while started.elapsed() < timeout {
            if accounts.get_opt("default").await?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(Error::NotReady {
            what: format!("the default service account of namespace {namespace}"),
            seconds: timeout.as_secs(),
            log_tail: self.log_tails(),
        })
    }

    /// Name and process id of every running component, in start order.
    pub fn component_pids(&self) -> Vec<(String, u32)> {
        self.processes
            .iter()
            .map(|p| (p.name().to_string(), p.pid()))
            .collect()
    }

    /// The tail of every component's log, each under a header naming it.
    pub fn log_tails(&self) -> String {
        log_tails(&self.processes)
    }

    /// Stops every component now (also what dropping does).
    pub fn stop(mut self) {
        self.stop_processes();
    }

    fn stop_processes(&mut self) {
        crate::process::stop_all(&mut self.processes);
        self.processes.clear();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.processes.is_empty() {
            let kept = self.dir.take().map(tempfile::TempDir::keep);
            eprintln!(
                "--- control plane logs (kept in {}) ---\n{}",
                kept.as_deref().unwrap_or(&self.dir_path).display(),
                self.log_tails()
            );
        }
        self.stop_processes();
    }
}

fn log_tails(processes: &[ManagedProcess]) -> String {
    processes
        .iter()
        .map(|p| {
            format!(
                "==> {} ({}) <==\n{}",
                p.name(),
                p.log_path().display(),
                p.log_tail(LOG_TAIL_BYTES)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The name the apiserver's certificate carries that clients reaching it through another
/// address check it against.
pub const APISERVER_TLS_NAME: &str = "kubernetes.default.svc";

/// Names the apiserver's serving certificate is valid for: loopback, the `kubernetes`
/// Service's cluster IP and the in-cluster names.
fn serving_names(service_range: Ipv4Cidr) -> Vec<String> {
    let mut names = vec![
        "127.0.0.1".to_string(),
        "localhost".into(),
        service_range.host(1).to_string(),
    ];
    names.extend(
        [
            "kubernetes",
            "kubernetes.default",
            APISERVER_TLS_NAME,
            "kubernetes.default.svc.cluster.local",
        ]
        .map(String::from),
    );
    names
}

fn etcd_args(data_dir: &Path, client_port: u16, peer_port: u16) -> Vec<String> {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    vec![
        "--name=default".into(),
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=default={peer}"),
        // A throwaway cluster: durability across power loss buys nothing and fsync is slow.
        "--unsafe-no-fsync=true".into(),
        "--log-level=warn".into(),
    ]
}

fn apiserver_args(pki: &Pki, port: u16, etcd_port: u16, options: &ClusterOptions) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    let mut args = vec![
        format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
        format!("--secure-port={port}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        // The `kubernetes` Service would point at 127.0.0.1, which the endpoints reconciler
        // refuses; nothing here needs that Service's endpoints.
        "--endpoint-reconciler-type=none".into(),
        format!("--tls-cert-file={}", path(&pki.serving_cert)),
        format!("--tls-private-key-file={}", path(&pki.serving_key)),
        format!("--client-ca-file={}", path(&pki.ca_cert)),
        // Controller-manager and scheduler delegate authentication to the apiserver and
        // expect this bundle to be published; there is no front proxy, so reuse the CA.
        format!("--requestheader-client-ca-file={}", path(&pki.ca_cert)),
        format!(
            "--service-account-key-file={}",
            path(&pki.service_account_pub)
        ),
        format!(
            "--service-account-signing-key-file={}",
            path(&pki.service_account_key)
        ),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-cluster-ip-range={}", options.service_range),
        // Kubelets act as `system:node:<name>`: the Node authorizer and NodeRestriction limit
        // each to its own node and pods, as on a real cluster; everyone else goes by RBAC.
        "--authorization-mode=Node,RBAC".into(),
        "--enable-admission-plugins=NodeRestriction".into(),
        // Logs and exec reach a kubelet at its node's InternalIP (no DNS names the nodes).
        "--kubelet-preferred-address-types=InternalIP".into(),
        "--allow-privileged=true".into(),
        "--v=1".into(),
    ];
    args.extend(options.extra_apiserver_args.iter().cloned());
    args
}

fn controller_manager_args(
    pki: &Pki,
    kubeconfig: &Path,
    port: u16,
    service_range: Ipv4Cidr,
) -> Vec<String> {
    let kubeconfig = kubeconfig.display().to_string();
    vec![
        format!("--kubeconfig={kubeconfig}"),
        format!("--authentication-kubeconfig={kubeconfig}"),
        format!("--authorization-kubeconfig={kubeconfig}"),
        format!("--secure-port={port}"),
        "--bind-address=127.0.0.1".into(),
        "--leader-elect=false".into(),
        // Each controller acts as its own service account, so RBAC applies to them too.
        "--use-service-account-credentials=true".into(),
        format!(
            "--service-account-private-key-file={}",
            pki.service_account_key.display()
        ),
        format!("--root-ca-file={}", pki.ca_cert.display()),
        format!("--service-cluster-ip-range={service_range}"),
        // Faster reaction in tests than the production defaults, same behaviour.
        "--concurrent-gc-syncs=5".into(),
        "--v=1".into(),
    ]
}

/// `--kube-api-qps` and `--kube-api-burst`, when asked for.
fn qps_args(qps: Option<u32>) -> Vec<String> {
    qps.map(|qps| {
        vec![
            format!("--kube-api-qps={qps}"),
            format!("--kube-api-burst={}", 2 * qps),
        ]
    })
    .unwrap_or_default()
}

fn scheduler_args(kubeconfig: &Path, port: u16) -> Vec<String> {
    let kubeconfig = kubeconfig.display().to_string();
    vec![
        format!("--kubeconfig={kubeconfig}"),
        format!("--authentication-kubeconfig={kubeconfig}"),
        format!("--authorization-kubeconfig={kubeconfig}"),
        format!("--secure-port={port}"),
        "--bind-address=127.0.0.1".into(),
        "--leader-elect=false".into(),
        "--v=1".into(),
    ]
}

async fn client_from_kubeconfig(path: &Path) -> Result<Client, Error> {
    let kubeconfig = Kubeconfig::read_from(path)
        .map_err(|e| Error::Kubeconfig(format!("reading {}: {e}", path.display())))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(format!("loading {}: {e}", path.display())))?;
    Ok(Client::try_from(config)?)
}

/// Polls `/readyz` until the apiserver answers `ok`, failing early if a component exits.
async fn wait_ready(
    client: &Client,
    processes: &mut [ManagedProcess],
    timeout: Duration,
) -> Result<(), Error> {
    let started = Instant::now();
    loop {
        for process in processes.iter_mut() {
            if let Some(status) = process.exit_status() {
                return Err(Error::ComponentExited {
                    name: process.name().to_string(),
                    status: status.to_string(),
                    log_tail: process.log_tail(LOG_TAIL_BYTES),
                });
            }
        }
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| Error::Kubeconfig(format!("building the readiness request: {e}")))?;
        if let Ok(body) = client.request_text(request).await
            && body.trim() == "ok"
        {
            return Ok(());
        }
        if started.elapsed() > timeout {
            return Err(Error::NotReady {
                what: "kube-apiserver /readyz".into(),
                seconds: timeout.as_secs(),
                log_tail: log_tails(processes),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>, Error> {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| Error::Kubeconfig(format!("decoding the CA certificate: {e}")))
}
