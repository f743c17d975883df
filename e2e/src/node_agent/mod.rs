//! A node agent that plays kubelet for fake GPU nodes.
//!
//! [`NodeAgent::start`] registers nodes (through [`crate::nodes`]), keeps their Leases fresh
//! and watches the pods bound to them. Each pod gets its own network namespace on a bridge the
//! agent owns (so it has its own IP and binds any port), its volumes as directories, and its
//! containers as local processes: images map to local binaries through an [`ImageMap`]. Probes
//! run against the pod IP, the pod's status is reported as a kubelet reports it, containers
//! restart by the pod's restart policy with back-off, and deletion honours the grace period.
//!
//! Stopping the agent (dropping it, or [`NodeAgent::shutdown`]) stops every process and removes
//! every namespace, veth, bridge and directory it made. In simulated mode
//! ([`NodeAgentConfig::simulate`]) pods are reported Running and Ready and nothing runs.

mod apiserver_proxy;
mod config;
mod env;
mod launch;
mod network;
mod pod;
mod probes;
mod status;
mod volumes;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

pub use config::{ImageEntry, ImageMap, NodeAgentConfig, image_name};
pub use network::Subnet;

use crate::nodes::{self, FakeNode};
use launch::Spawner;
use network::{Bridge, IpPool};

/// Everything that can go wrong while playing kubelet.
#[derive(Debug, thiserror::Error)]
pub enum NodeAgentError {
    #[error("pod network: {0}")]
    Network(String),

    /// The pod asks for something that cannot be provided (yet): a missing ConfigMap key, an
    /// image the image map does not know, an unsupported field. Reported on the container.
    #[error("{0}")]
    ContainerConfig(String),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("talking to the apiserver: {0}")]
    Kube(#[from] kube::Error),

    #[error(transparent)]
    Harness(#[from] crate::Error),
}

/// How long pods get between SIGTERM and SIGKILL when the agent itself stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

static AGENT_COUNTER: AtomicU32 = AtomicU32::new(0);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop the cleanup that follows it.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pod the agent runs: how to ask it to stop (with a grace period) and its task.
struct PodHandle {
    stop: watch::Sender<Option<Duration>>,
    task: AbortHandle,
}

/// What every pod's runtime shares with the agent.
pub(crate) struct AgentContext {
    client: Client,
    config: NodeAgentConfig,
    bridge: Option<Bridge>,
    subnet: Subnet,
    ips: Mutex<IpPool>,
    spawner: Spawner,
    /// Where pods' directories go: on disk and in memory.
    disk_root: PathBuf,
    memory_root: PathBuf,
    /// Live process groups and network namespaces, for a cleanup that needs no runtime.
    process_groups: Mutex<BTreeSet<u32>>,
    /// Network namespace → its veth end on the bridge.
    namespaces: Mutex<BTreeMap<String, String>>,
    pods: Mutex<HashMap<String, PodHandle>>,
    closing: AtomicBool,
}

impl AgentContext {
    /// Records a process group; `false` if the agent is closing (the caller kills it).
    fn track_process(&self, pgid: u32) -> bool {
        let mut groups = lock(&self.process_groups);
        if self.closing.load(Ordering::SeqCst) {
            return false;
        }
        groups.insert(pgid);
        true
    }

    fn untrack_process(&self, pgid: u32) {
        lock(&self.process_groups).remove(&pgid);
    }

    fn track_namespace(&self, name: &str, host_end: &str) -> bool {
        let mut namespaces = lock(&self.namespaces);
        if self.closing.load(Ordering::SeqCst) {
            return false;
        }
        namespaces.insert(name.to_string(), host_end.to_string());
        true
    }

    fn untrack_namespace(&self, name: &str) {
        lock(&self.namespaces).remove(name);
    }

    fn node_capacity(&self, node: &str) -> (String, String) {
        self.config
            .nodes
            .iter()
            .find(|n| n.name == node)
            .map(|n| (n.cpu.clone(), n.memory.clone()))
            .unwrap_or_default()
    }

    /// Stops everything synchronously: SIGTERM to every process group, a short grace, SIGKILL;
    /// then removes namespaces, the bridge and the pods' directories. Safe to call twice.
    fn cleanup(&self) {
        // `shutdown` cleans up and then the drop does: only the first one acts.
        if self.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        for (_, handle) in lock(&self.pods).drain() {
            handle.task.abort();
        }
        let groups: Vec<u32> = std::mem::take(&mut *lock(&self.process_groups))
            .into_iter()
            .collect();
        signal_groups(&groups, libc::SIGTERM);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while Instant::now() < deadline && groups.iter().any(|g| group_alive(*g)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        signal_groups(&groups, libc::SIGKILL);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while Instant::now() < deadline && groups.iter().any(|g| group_alive(*g)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for (name, host_end) in std::mem::take(&mut *lock(&self.namespaces)) {
            network::remove(&name, &host_end);
        }
        if let Some(bridge) = &self.bridge {
            bridge.remove();
        }
        for dir in [&self.disk_root, &self.memory_root] {
            if let Err(err) = std::fs::remove_dir_all(dir)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %err, "removing pod directories failed");
            }
        }
    }
}

fn signal_groups(groups: &[u32], signal: libc::c_int) {
    for group in groups {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(-(*group as i32), signal) };
    }
}

/// Whether any process of group `pgid` is alive (zombies are dead: they wait only to be
/// reaped and hold no namespace or socket).
pub fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .any(|stat| {
            // The command name may hold spaces; fields after the last ')' are plain.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str())
        })
}

/// Plays kubelet for its nodes until dropped or shut down.
pub struct NodeAgent {
    context: Arc<AgentContext>,
    /// Node watchers and the API server forwarder.
    watchers: Vec<JoinHandle<()>>,
    nodes: Vec<FakeNode>,
}

impl NodeAgent {
    /// Creates the pod network (unless simulating), registers the nodes and starts watching
    /// the pods bound to them.
    pub async fn start(client: Client, config: NodeAgentConfig) -> Result<Self, NodeAgentError> {
        let (bridge, subnet) = if config.simulate {
            let n = AGENT_COUNTER.load(Ordering::Relaxed);
            let seed = std::process::id().wrapping_mul(31).wrapping_add(n);
            let subnet = network::choose_subnet(seed, &BTreeSet::new())
                .ok_or_else(|| NodeAgentError::Network("no subnet".into()))?;
            (None, subnet)
        } else {
            let bridge = tokio::task::spawn_blocking(|| {
                network::remove_stale();
                Bridge::create()
            })
            .await
            .map_err(|e| NodeAgentError::Network(format!("creating the bridge: {e}")))??;
            let subnet = bridge.subnet;
            (Some(bridge), subnet)
        };
        let n = AGENT_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("modelfleet-node-agent-{}-{n}", std::process::id());
        let context = Arc::new(AgentContext {
            client: client.clone(),
            disk_root: std::env::temp_dir().join(&tag),
            memory_root: Path::new("/dev/shm").join(&tag),
            bridge,
            subnet,
            ips: Mutex::new(IpPool::new(subnet)),
            spawner: Spawner::new()?,
            process_groups: Mutex::new(BTreeSet::new()),
            namespaces: Mutex::new(BTreeMap::new()),
            pods: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
            config,
        });
        let mut agent = Self {
            context: context.clone(),
            watchers: Vec::new(),
            nodes: Vec::new(),
        };
        // From here on, dropping `agent` on an error cleans up what exists.
        if let (Some(apiserver), Some(bridge)) = (context.config.apiserver, &context.bridge) {
            let gateway = bridge.subnet.gateway();
            agent
                .watchers
                .push(apiserver_proxy::start(gateway, apiserver).await?);
        }
        for spec in &context.config.nodes {
            agent
                .nodes
                .push(nodes::register(client.clone(), spec).await?);
            agent
                .watchers
                .push(tokio::spawn(watch_node(context.clone(), spec.name.clone())));
        }
        Ok(agent)
    }

    /// The agent's pod subnet; every pod IP is in it.
    pub fn subnet(&self) -> Subnet {
        self.context.subnet
    }

    /// The bridge's address, reported as the pods' hostIP.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.context.subnet.gateway()
    }

    /// The bridge the agent created (none when simulating).
    pub fn bridge_name(&self) -> Option<&str> {
        self.context.bridge.as_ref().map(|b| b.name.as_str())
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// Network namespaces of the pods running now.
    pub fn network_namespaces(&self) -> Vec<String> {
        lock(&self.context.namespaces).keys().cloned().collect()
    }

    /// Process groups of the containers running now.
    pub fn process_groups(&self) -> Vec<u32> {
        lock(&self.context.process_groups).iter().copied().collect()
    }

    /// The log (stdout and stderr) of a container of a pod, across restarts.
    pub fn container_log(&self, pod: &Pod, container: &str) -> PathBuf {
        pod::pod_dir(&self.context.disk_root, pod)
            .join("logs")
            .join(format!("{container}.log"))
    }

    /// Stops every pod's processes and removes everything the agent made on the host.
    pub async fn shutdown(mut self) {
        for watcher in self.watchers.drain(..) {
            watcher.abort();
        }
        let context = self.context.clone();
        let _ = tokio::task::spawn_blocking(move || context.cleanup()).await;
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        for watcher in self.watchers.drain(..) {
            watcher.abort();
        }
        self.context.cleanup();
    }
}

/// Follows the pods bound to `node`, starting a runtime for each new one and telling it when
/// the pod is being deleted.
async fn watch_node(context: Arc<AgentContext>, node: String) {
    let api: Api<Pod> = Api::all(context.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                on_pod(&context, pod);
            }
            Ok(watcher::Event::Delete(pod)) => on_gone(&context, &pod),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(err) => {
                tracing::warn!(node = %node, error = %err, "watching pods failed; retrying")
            }
        }
    }
}

fn grace_of(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(seconds.max(0) as u64)
}

fn on_pod(context: &Arc<AgentContext>, pod: Pod) {
    if context.closing.load(Ordering::SeqCst) {
        return;
    }
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let mut pods = lock(&context.pods);
    if let Some(handle) = pods.get(&uid) {
        if deleting {
            let grace = grace_of(&pod);
            handle.stop.send_if_modified(|stop| {
                // A later, shorter grace period wins, as with the kubelet.
                let shorter = stop.is_none_or(|current| grace < current);
                if shorter {
                    *stop = Some(grace);
                }
                shorter
            });
        }
        return;
    }
    if deleting {
        // Nothing runs for it here (it finished, or the agent never started it): let the
        // API server forget it.
        tokio::spawn(pod::delete_now(context.client.clone(), pod));
        return;
    }
    let (stop, stopped) = watch::channel(None);
    let task = tokio::spawn(pod::run(context.clone(), pod, stopped));
    pods.insert(
        uid,
        PodHandle {
            stop,
            task: task.abort_handle(),
        },
    );
}

fn on_gone(context: &Arc<AgentContext>, pod: &Pod) {
    let Some(uid) = pod.metadata.uid.as_deref() else {
        return;
    };
    if let Some(handle) = lock(&context.pods).get(uid) {
        // Removed without a grace period (a forced delete): stop at once.
        handle.stop.send_if_modified(|stop| {
            let changed = *stop != Some(Duration::ZERO);
            *stop = Some(Duration::ZERO);
            changed
        });
    }
}
