//! A real Kubernetes node on this machine: containerd (with runc and the CNI bridge) and the
//! kubelet and kube-proxy of the pinned Kubernetes release, in a network namespace of its own
//! joined to the host by a veth pair.
//!
//! [`RealNode::start`] registers it with a harness [`Cluster`], imports the images `make
//! images` built into containerd (pods pull nothing), advertises `nvidia.com/gpu` capacity and
//! the `nvidia.com/gpu.product` label the way Kubernetes documents extended resources, and
//! routes the node's pod range and the cluster's Service range from the host through it, so
//! tests reach pods and Services as a machine on the cluster's network would. Stopping it
//! ([`RealNode::shutdown`], or dropping it) removes every pod through the CRI, stops the
//! components and removes what they left on the host: see [`footprint`].

mod cgroups;
mod config;
pub mod crictl;
pub mod footprint;
pub mod link;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use modelfleet_contract::labels::field_manager::HARNESS as FIELD_MANAGER;

use crate::cluster::APISERVER_TLS_NAME;
use crate::forward::Forwarder;
use crate::images::Image;
use crate::pki::ClientIdentity;
use crate::process::ManagedProcess;
use crate::subnets::{self, Ipv4Cidr};
use crate::tools::tool;
use crate::{Cluster, Error};

pub use config::NodePaths;
pub use crictl::Crictl;
pub use footprint::Footprint;

/// The extended resource GPUs are requested as (what NVIDIA's device plugin advertises).
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// The node label GPU feature discovery sets to the GPU model.
pub const GPU_PRODUCT_LABEL: &str = "nvidia.com/gpu.product";
/// The CNI bridge inside the node's namespace (its own namespace: the name is free there).
pub const CNI_BRIDGE: &str = "cni0";
/// Where Debian's packages put what the node runs.
const CONTAINERD: &str = "/usr/bin/containerd";
const CTR: &str = "/usr/bin/ctr";
const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The node's processes find runc, iptables, mount and the CNI plugins' helpers here.
const NODE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The port pods dial the `kubernetes` Service on, and the forwarder listens on.
const APISERVER_SERVICE_PORT: u16 = 443;
/// Bytes of each component log printed when something fails.
const LOG_TAIL_BYTES: u64 = 3000;

static NODE_COUNTER: AtomicU32 = AtomicU32::new(0);
/// Nodes of one process choose their subnets one at a time.
static SUBNET_LOCK: Mutex<()> = Mutex::new(());

/// What the node offers.
#[derive(Debug, Clone)]
pub struct RealNodeOptions {
    /// The node's name (also the kubelet's identity, `system:node:<name>`).
    pub name: String,
    /// `nvidia.com/gpu` capacity to advertise (0: none).
    pub gpus: u32,
    /// `nvidia.com/gpu.product` label, when set.
    pub gpu_product: Option<String>,
    /// Images imported into containerd, besides the pod sandbox's.
    pub images: Vec<Image>,
    /// How long the node gets to become Ready and schedulable.
    pub ready_timeout: Duration,
}

impl RealNodeOptions {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            gpus: 0,
            gpu_product: None,
            images: Vec::new(),
            ready_timeout: Duration::from_secs(180),
        }
    }
}

/// A running node. Dropping it stops it and removes what it left on the host.
pub struct RealNode {
    name: String,
    footprint: Footprint,
    paths: NodePaths,
    link: link::NodeLink,
    pod_cidr: Ipv4Cidr,
    crictl: Crictl,
    /// In start order: containerd, kubelet, kube-proxy.
    containerd: Option<ManagedProcess>,
    kubelet: Option<ManagedProcess>,
    kube_proxy: Option<ManagedProcess>,
    forwarder: Option<Forwarder>,
    torn_down: bool,
}

impl RealNode {
    /// Starts the node and waits until it is Ready, schedulable, advertises its GPUs and
    /// kube-proxy routes the cluster's Services.
    pub async fn start(cluster: &Cluster, options: RealNodeOptions) -> Result<Self, Error> {
        let archives = std::iter::once(Image::Pause)
            .chain(options.images.iter().copied())
            .map(|image| image.archive().map(|archive| (image, archive)))
            .collect::<Result<Vec<_>, _>>()?;
        let programs = Programs::locate()?;
        tokio::task::spawn_blocking(footprint::sweep_stale)
            .await
            .map_err(|e| Error::Harness(format!("sweeping stale nodes: {e}")))?;

        let footprint = Footprint::of(
            std::process::id(),
            NODE_COUNTER.fetch_add(1, Ordering::Relaxed),
        );
        footprint::sweep(&footprint);
        std::fs::create_dir_all(footprint.dir.join("logs"))
            .map_err(|e| Error::io("creating the node's directory", e))?;
        let paths = NodePaths::new(&footprint.dir);
        let (link, pod_cidr) = {
            let _guard = SUBNET_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let in_use = subnets::in_use_on_host()?;
            let free = |block| {
                subnets::choose(block, subnets::seed(), &in_use)
                    .ok_or_else(|| Error::Harness(format!("no free /24 in {}", block.cidr)))
            };
            let link_subnet = free(subnets::LINK_BLOCK)?;
            let pod_cidr = free(subnets::POD_BLOCK)?;
            let link = link::NodeLink::create(footprint.netns(), &footprint.host_end, link_subnet)?;
            (link, pod_cidr)
        };
        let crictl = Crictl::new(&programs.crictl, &paths.crictl_config());
        let mut node = Self {
            name: options.name.clone(),
            footprint,
            paths,
            link,
            pod_cidr,
            crictl,
            containerd: None,
            kubelet: None,
            kube_proxy: None,
            forwarder: None,
            torn_down: false,
        };
        // From here on, dropping `node` on an error tears down what exists.
        node.bring_up(cluster, &options, &programs, &archives)
            .await?;
        tracing::info!(node = %node.name, ip = %node.node_ip(), pods = %node.pod_cidr, "real node ready");
        Ok(node)
    }

    async fn bring_up(
        &mut self,
        cluster: &Cluster,
        options: &RealNodeOptions,
        programs: &Programs,
        archives: &[(Image, PathBuf)],
    ) -> Result<(), Error> {
        self.link.route_from_host(self.pod_cidr)?;
        self.link
            .route_from_host(cluster.service_range())
            .map_err(|e| {
                Error::Harness(format!(
                    "routing the cluster's Services ({}) to the node: {e}; a cluster with a real \
                     node needs a Service range of its own (ClusterOptions::with_own_service_range)",
                    cluster.service_range()
                ))
            })?;
        let apiserver_at = SocketAddr::from((self.host_ip(), APISERVER_SERVICE_PORT));
        self.forwarder = Some(Forwarder::start(
            apiserver_at,
            cluster.apiserver_address()?,
        )?);
        point_kubernetes_service_at(&cluster.client(), apiserver_at).await?;
        cgroups::create(self.footprint.cgroup_root())?;
        self.write_configs(cluster, apiserver_at)?;

        let env = [("PATH", std::ffi::OsStr::new(NODE_PATH))];
        let netns = self.link.netns_path();
        let logs = self.paths.logs();
        self.containerd = Some(ManagedProcess::spawn_in(
            "containerd",
            Path::new(CONTAINERD),
            &[
                "--config".into(),
                self.paths.containerd_config().display().to_string(),
            ],
            &env,
            &logs.join("containerd.log"),
            Some(&netns),
        )?);
        self.wait_for_containerd(Duration::from_secs(60)).await?;
        for (image, archive) in archives {
            self.import(*image, archive)?;
        }

        self.kubelet = Some(ManagedProcess::spawn_in(
            "kubelet",
            &programs.kubelet,
            &self.kubelet_args(),
            &env,
            &logs.join("kubelet.log"),
            Some(&netns),
        )?);
        let client = cluster.client();
        let name = self.name.clone();
        self.wait_until("the node Ready", options.ready_timeout, || {
            node_is_ready(client.clone(), name.clone())
        })
        .await?;
        advertise_gpus(
            &client,
            &self.name,
            options.gpus,
            options.gpu_product.as_deref(),
        )
        .await?;

        self.kube_proxy = Some(ManagedProcess::spawn_in(
            "kube-proxy",
            &programs.kube_proxy,
            &[
                "--config".into(),
                self.paths.kube_proxy_config().display().to_string(),
                "--v=1".into(),
            ],
            &env,
            &logs.join("kube-proxy.log"),
            Some(&netns),
        )?);
        let kubernetes_ip = cluster.service_range().host(1);
        let netns = self.footprint.netns().to_string();
        self.wait_until(
            "kube-proxy to route the kubernetes Service",
            options.ready_timeout,
            || routes_service_ip(netns.clone(), kubernetes_ip),
        )
        .await?;
        let gpus = options.gpus;
        self.wait_until(
            "the node schedulable with its GPUs allocatable",
            options.ready_timeout,
            || node_is_schedulable(client.clone(), name.clone(), gpus),
        )
        .await?;
        Ok(())
    }

    fn write_configs(&self, cluster: &Cluster, apiserver_at: SocketAddr) -> Result<(), Error> {
        let paths = &self.paths;
        let write = |path: PathBuf, text: String| {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::io(&format!("creating {}", parent.display()), e))?;
            }
            std::fs::write(&path, text)
                .map_err(|e| Error::io(&format!("writing {}", path.display()), e))
        };
        write(
            paths.containerd_config(),
            config::containerd_config(paths, &Image::Pause.tag(), Path::new(CNI_BIN_DIR)),
        )?;
        write(
            paths.cni_conf_dir().join("10-modelfleet.conflist"),
            config::cni_network(
                self.footprint.cni_network(),
                CNI_BRIDGE,
                self.pod_cidr,
                &paths.cni_ipam_dir(),
            ),
        )?;
        write(paths.crictl_config(), config::crictl_config(paths))?;
        write(
            paths.kubelet_config(),
            config::kubelet_config(&config::KubeletSettings {
                paths,
                cgroup_root: &format!("/{}", self.footprint.cgroup_root()),
            }),
        )?;
        let server = format!("https://{apiserver_at}");
        let kubelet_identity =
            ClientIdentity::new(&format!("system:node:{}", self.name), &["system:nodes"]);
        let kubelet_kubeconfig = cluster.write_kubeconfig(
            &kubelet_identity,
            &format!("kubelet-{}", self.name),
            &server,
            Some(APISERVER_TLS_NAME),
        )?;
        std::fs::copy(&kubelet_kubeconfig, paths.dir.join("kubelet.kubeconfig"))
            .map_err(|e| Error::io("copying the kubelet's kubeconfig", e))?;
        // The user the bootstrap policy binds the node proxier's role to.
        let proxy_kubeconfig = cluster.write_kubeconfig(
            &ClientIdentity::new("system:kube-proxy", &[]),
            &format!("kube-proxy-{}", self.name),
            &server,
            Some(APISERVER_TLS_NAME),
        )?;
        write(
            paths.kube_proxy_config(),
            config::kube_proxy_config(&proxy_kubeconfig, &self.name, self.node_ip(), self.pod_cidr),
        )
    }

    fn kubelet_args(&self) -> Vec<String> {
        let path = |p: PathBuf| p.display().to_string();
        vec![
            format!("--config={}", path(self.paths.kubelet_config())),
            format!(
                "--kubeconfig={}",
                path(self.paths.dir.join("kubelet.kubeconfig"))
            ),
            format!("--root-dir={}", path(self.paths.kubelet_root())),
            format!("--cert-dir={}", path(self.paths.kubelet_certs())),
            format!("--hostname-override={}", self.name),
            format!("--node-ip={}", self.node_ip()),
            "--v=1".into(),
        ]
    }

    async fn wait_for_containerd(&mut self, timeout: Duration) -> Result<(), Error> {
        let crictl = self.crictl.clone();
        self.wait_until("containerd's CRI socket", timeout, || {
            let crictl = crictl.clone();
            async move {
                tokio::task::spawn_blocking(move || crictl.run(&["info"]).is_ok())
                    .await
                    .unwrap_or(false)
            }
        })
        .await
    }

    /// `ctr images import` of a docker-archive into the CRI's namespace.
    fn import(&self, image: Image, archive: &Path) -> Result<(), Error> {
        let output = std::process::Command::new(CTR)
            .arg("--address")
            .arg(self.paths.containerd_socket())
            .args(["--namespace", "k8s.io", "images", "import"])
            .arg(archive)
            .output()
            .map_err(|e| Error::io("running ctr images import", e))?;
        if !output.status.success() {
            return Err(Error::Harness(format!(
                "importing {} ({}) into containerd failed: {}",
                image.tag(),
                archive.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Polls `check` until it holds, failing early (with the logs) if a component exits.
    async fn wait_until<F, Fut>(
        &mut self,
        what: &str,
        timeout: Duration,
        check: F,
    ) -> Result<(), Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        loop {
            for process in [
                &mut self.containerd,
                &mut self.kubelet,
                &mut self.kube_proxy,
            ]
            .into_iter()
            .flatten()
            {
                if let Some(status) = process.exit_status() {
                    return Err(Error::ComponentExited {
                        name: process.name().to_string(),
                        status: status.to_string(),
                        log_tail: process.log_tail(LOG_TAIL_BYTES),
                    });
                }
            }
            if check().await {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(Error::NotReady {
                    what: format!("{what} (node {})", self.name),
                    seconds: timeout.as_secs(),
                    log_tail: self.log_tails(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's InternalIP.
    pub fn node_ip(&self) -> Ipv4Addr {
        self.link.node_ip()
    }

    /// The host's address on the node's link: what pods reach the host at.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.link.host_ip()
    }

    /// The node's pod range; every pod IP is in it.
    pub fn pod_cidr(&self) -> Ipv4Cidr {
        self.pod_cidr
    }

    /// The names of what the node makes on the host, to check after it is gone.
    pub fn footprint(&self) -> &Footprint {
        &self.footprint
    }

    /// The node's files: configuration, state, `logs/`.
    pub fn paths(&self) -> &NodePaths {
        &self.paths
    }

    /// The node's CRI, through crictl.
    pub fn crictl(&self) -> &Crictl {
        &self.crictl
    }

    /// Runs `ip ARGS…` inside the node's network namespace.
    pub fn ip(&self, args: &[&str]) -> Result<String, Error> {
        self.link.ip_in(args)
    }

    /// Kills the first process of the running container `container` of pod `pod` with
    /// SIGKILL, as an out-of-memory kill or a crash would end it; returns its pid.
    pub fn kill_container(&self, pod: &str, container: &str) -> Result<u32, Error> {
        let running = self
            .crictl
            .containers()?
            .into_iter()
            .find(|c| {
                c.pod_name() == Some(pod)
                    && c.metadata.name == container
                    && c.state == "CONTAINER_RUNNING"
            })
            .ok_or_else(|| {
                Error::Harness(format!("no running container {container} in pod {pod}"))
            })?;
        let pid = self.crictl.pid(&running.id)?;
        // SAFETY: kill(2) has no memory-safety preconditions.
        if unsafe { libc::kill(pid as i32, libc::SIGKILL) } != 0 {
            return Err(Error::io(
                &format!("killing pid {pid}"),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(pid)
    }

    /// What pods left on the node, each named: sandboxes and containers the CRI still has,
    /// veths on the CNI bridge, mounts of pod volumes, root filesystems or sandboxes.
    /// Empty when every pod is gone without a trace.
    pub fn pod_leftovers(&self) -> Result<Vec<String>, Error> {
        let mut found: Vec<String> = self
            .crictl
            .sandboxes()?
            .into_iter()
            .map(|s| {
                format!(
                    "sandbox of {}/{} ({})",
                    s.metadata.namespace, s.metadata.name, s.state
                )
            })
            .collect();
        found.extend(self.crictl.containers()?.into_iter().map(|c| {
            format!(
                "container {} of {} ({})",
                c.metadata.name,
                c.pod_name().unwrap_or("?"),
                c.state
            )
        }));
        // The bridge exists once the first pod was attached; its ports are the pods' veths.
        if let Ok(links) = self.ip(&["-o", "link", "show", "master", CNI_BRIDGE]) {
            found.extend(
                links
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| format!("veth {}", l.split(':').nth(1).unwrap_or(l).trim())),
            );
        }
        let pods_dir = self.paths.kubelet_root().join("pods");
        let state = self.paths.containerd_state();
        found.extend(
            footprint::mounts_below(&self.paths.dir)
                .into_iter()
                .filter(|m| m.starts_with(&pods_dir) || m.starts_with(&state))
                .map(|m| format!("mount {}", m.display())),
        );
        Ok(found)
    }

    /// The tail of every component's log, each under a header naming it.
    pub fn log_tails(&self) -> String {
        [&self.containerd, &self.kubelet, &self.kube_proxy]
            .into_iter()
            .flatten()
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

    /// Stops the node and removes what it left on the host (also what dropping does).
    pub async fn shutdown(mut self) {
        if std::mem::replace(&mut self.torn_down, true) {
            return;
        }
        // The teardown blocks (processes, crictl, the kernel): off the runtime's threads.
        let taken = Taken::from(&mut self);
        let _ = tokio::task::spawn_blocking(move || taken.teardown()).await;
    }

    fn teardown(&mut self) {
        if std::mem::replace(&mut self.torn_down, true) {
            return;
        }
        Taken::from(self).teardown();
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.torn_down {
            let kept = keep_logs(&self.paths.logs());
            eprintln!(
                "--- real node {} (logs kept in {}) ---\n{}",
                self.name,
                kept.display(),
                self.log_tails()
            );
        }
        self.teardown();
    }
}

/// What the teardown needs, moved out of a node so it can run on a blocking thread.
struct Taken {
    name: String,
    footprint: Footprint,
    crictl: Crictl,
    containerd: Option<ManagedProcess>,
    kubelet: Option<ManagedProcess>,
    kube_proxy: Option<ManagedProcess>,
    forwarder: Option<Forwarder>,
}

impl Taken {
    fn from(node: &mut RealNode) -> Self {
        Self {
            name: node.name.clone(),
            footprint: node.footprint.clone(),
            crictl: node.crictl.clone(),
            containerd: node.containerd.take(),
            kubelet: node.kubelet.take(),
            kube_proxy: node.kube_proxy.take(),
            forwarder: node.forwarder.take(),
        }
    }

    /// The kubelet first (so nothing restarts what goes next), then every pod through the
    /// CRI (CNI releases addresses and veths, containerd unmounts), kube-proxy, containerd;
    /// then whatever is still on the host.
    fn teardown(mut self) {
        if let Some(mut kubelet) = self.kubelet.take() {
            kubelet.stop();
        }
        if self
            .containerd
            .as_mut()
            .is_some_and(|c| c.exit_status().is_none())
            && let Err(err) = self.crictl.remove_all_pods()
        {
            tracing::warn!(node = %self.name, error = %err, "removing the node's pods failed");
        }
        let mut rest: Vec<ManagedProcess> = [self.kube_proxy.take(), self.containerd.take()]
            .into_iter()
            .flatten()
            .collect();
        crate::process::stop_all(&mut rest);
        drop(self.forwarder.take());
        footprint::sweep(&self.footprint);
    }
}

/// Copies the node's logs somewhere the teardown does not remove.
fn keep_logs(logs: &Path) -> PathBuf {
    let kept = std::env::temp_dir().join(format!(
        "modelfleet-node-logs-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    let _ = std::fs::create_dir_all(&kept);
    if let Ok(entries) = std::fs::read_dir(logs) {
        for entry in entries.filter_map(Result::ok) {
            let _ = std::fs::copy(entry.path(), kept.join(entry.file_name()));
        }
    }
    kept
}

/// The Kubernetes binaries `make tools` built, and crictl.
struct Programs {
    kubelet: PathBuf,
    kube_proxy: PathBuf,
    crictl: PathBuf,
}

impl Programs {
    fn locate() -> Result<Self, Error> {
        for (program, package) in [
            (CONTAINERD, "containerd"),
            (CTR, "containerd"),
            ("/usr/sbin/runc", "runc"),
            ("/usr/sbin/iptables", "iptables"),
        ] {
            if !Path::new(program).is_file() {
                return Err(Error::Harness(format!(
                    "{program} is missing: run `make tools` (it installs Debian's {package})"
                )));
            }
        }
        if !Path::new(CNI_BIN_DIR).join("bridge").is_file() {
            return Err(Error::Harness(format!(
                "no CNI plugins in {CNI_BIN_DIR}: run `make tools` (it installs Debian's \
                 containernetworking-plugins)"
            )));
        }
        Ok(Self {
            kubelet: tool("kubelet")?,
            kube_proxy: tool("kube-proxy")?,
            crictl: tool("crictl")?,
        })
    }
}

/// The `kubernetes` Service's endpoint: the forwarder on the host's end of the link. (The
/// API server's own reconciler is off: it would publish 127.0.0.1.)
async fn point_kubernetes_service_at(client: &Client, at: SocketAddr) -> Result<(), Error> {
    let service = Api::<Service>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await?;
    let port_name = service
        .spec
        .and_then(|s| s.ports)
        .and_then(|ports| ports.into_iter().next())
        .and_then(|p| p.name);
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some("kubernetes".into()),
            namespace: Some("default".into()),
            labels: Some(
                [
                    (
                        "kubernetes.io/service-name".to_string(),
                        "kubernetes".to_string(),
                    ),
                    (
                        "endpointslice.kubernetes.io/managed-by".to_string(),
                        FIELD_MANAGER.to_string(),
                    ),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: vec![Endpoint {
            addresses: vec![at.ip().to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                ..EndpointConditions::default()
            }),
            ..Endpoint::default()
        }],
        ports: Some(vec![EndpointPort {
            name: port_name,
            port: Some(i32::from(at.port())),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
    };
    Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .patch(
            "kubernetes",
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&slice),
        )
        .await?;
    Ok(())
}

/// Advertises `gpus` of [`GPU_RESOURCE`] as Kubernetes documents for extended resources (a
/// JSON patch of the node's status capacity; the kubelet then carries it into allocatable),
/// and labels the node with the GPU model as GPU feature discovery does.
async fn advertise_gpus(
    client: &Client,
    node: &str,
    gpus: u32,
    product: Option<&str>,
) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    if gpus > 0 {
        let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([{
            "op": "add",
            "path": format!("/status/capacity/{}", GPU_RESOURCE.replace('/', "~1")),
            "value": gpus.to_string(),
        }]))
        .map_err(|e| Error::Harness(format!("the capacity patch: {e}")))?;
        nodes
            .patch_status(node, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await?;
    }
    if let Some(product) = product {
        let labels =
            serde_json::json!({ "metadata": { "labels": { GPU_PRODUCT_LABEL: product } } });
        nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&labels))
            .await?;
    }
    Ok(())
}

/// Whether kube-proxy's NAT rules in namespace `netns` name `ip`.
async fn routes_service_ip(netns: String, ip: Ipv4Addr) -> bool {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns,
                "iptables",
                "-t",
                "nat",
                "-S",
                "KUBE-SERVICES",
            ])
            .env("PATH", NODE_PATH)
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{ip}/32")))
    })
    .await
    .unwrap_or(false)
}

async fn node_is_ready(client: Client, name: String) -> bool {
    let Ok(Some(node)) = Api::<Node>::all(client).get_opt(&name).await else {
        return false;
    };
    node.status
        .and_then(|s| s.conditions)
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Ready, untainted (the lifecycle controller has seen it Ready) and with `gpus` GPUs
/// allocatable.
async fn node_is_schedulable(client: Client, name: String, gpus: u32) -> bool {
    let Ok(Some(node)) = Api::<Node>::all(client).get_opt(&name).await else {
        return false;
    };
    let untainted = node
        .spec
        .as_ref()
        .is_none_or(|s| s.taints.as_ref().is_none_or(Vec::is_empty));
    let allocatable = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .and_then(|a| a.get(GPU_RESOURCE))
        .map(|q| q.0.clone());
    let gpus_ok = if gpus == 0 {
        true
    } else {
        allocatable.as_deref() == Some(gpus.to_string().as_str())
    };
    untainted && gpus_ok
}
