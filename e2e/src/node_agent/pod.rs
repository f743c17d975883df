//! One pod's life on the node: sandbox (network namespace, directories, volumes), init
//! containers in order, then every container supervised with its probes and restarted by the
//! restart policy; on deletion, SIGTERM, the grace period, SIGKILL, and the sandbox removed.
//!
//! The runtime keeps a [`PodRecord`]; a writer task turns every change into the pod's status.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use tokio::sync::{Notify, oneshot, watch};
use tracing::Instrument;

use super::apiserver_proxy;
use super::env::{self, PodFacts, Sources};
use super::launch::{self, LaunchSpec, MountSpec};
use super::network::PodNetwork;
use super::probes::{self, Target, Verdict};
use super::status::{ContainerRecord, PodRecord, RunState, Terminated, pod_status};
use super::volumes::{self, PodDirs};
use super::{AgentContext, NodeAgentError, lock};

/// How often a pod whose configuration cannot be met yet (a missing ConfigMap) is retried.
const CONFIG_RETRY: Duration = Duration::from_secs(2);

type Stop = watch::Receiver<Option<Duration>>;

/// The pod's directory under `root`: one per pod object (uid), readable by name.
pub fn pod_dir(root: &Path, pod: &Pod) -> PathBuf {
    root.join(format!(
        "{}_{}_{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any(),
        pod.metadata.uid.as_deref().unwrap_or("")
    ))
}

/// Waits until a stop is asked for; returns its grace period. A vanished agent means stop now.
async fn stopped(stop: &mut Stop) -> Duration {
    loop {
        if let Some(grace) = *stop.borrow() {
            return grace;
        }
        if stop.changed().await.is_err() {
            return Duration::ZERO;
        }
    }
}

/// Sleeps for `duration` unless a stop comes first (then `false`).
async fn sleep_unless_stopped(duration: Duration, stop: &mut Stop) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => true,
        _ = stopped(stop) => false,
    }
}

/// Deletes the pod object with grace period 0, as the kubelet does once a pod is gone from
/// the node; only this very pod (uid precondition), and a missing pod is fine.
pub async fn delete_now(client: Client, pod: Pod) {
    let api: Api<Pod> = Api::namespaced(client, &pod.namespace().unwrap_or_default());
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&pod.name_any(), &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(err) => tracing::warn!(error = %err, "deleting the pod failed"),
    }
}

/// Shared between the runtime, its supervisors and probes, and the status writer.
struct Shared {
    record: Mutex<PodRecord>,
    changed: Notify,
}

impl Shared {
    fn update(&self, change: impl FnOnce(&mut PodRecord)) {
        change(&mut lock(&self.record));
        self.changed.notify_one();
    }

    fn container(&self, slot: Slot, change: impl FnOnce(&mut ContainerRecord)) {
        self.update(|record| {
            let list = match slot {
                Slot::Init(_) => &mut record.init_containers,
                Slot::Main(_) => &mut record.containers,
            };
            let index = match slot {
                Slot::Init(i) | Slot::Main(i) => i,
            };
            if let Some(container) = list.get_mut(index) {
                change(container);
            }
        });
    }
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Init(usize),
    Main(usize),
}

/// Writes the pod's status whenever the record changes (coalescing bursts), until aborted.
async fn write_status(api: Api<Pod>, name: String, shared: Arc<Shared>) {
    let mut last: Option<PodStatus> = None;
    loop {
        shared.changed.notified().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let record = lock(&shared.record).clone();
        let status = pod_status(&record, last.as_ref());
        if last.as_ref() == Some(&status) {
            continue;
        }
        let body = serde_json::json!({ "status": status });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => last = Some(status),
            Err(kube::Error::Api(e)) if e.code == 404 => return,
            Err(err) => {
                tracing::warn!(error = %err, "writing the pod status failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                shared.changed.notify_one();
            }
        }
    }
}

fn records(containers: &[Container], waiting_reason: &str) -> Vec<ContainerRecord> {
    containers
        .iter()
        .map(|c| {
            let mut record = ContainerRecord::new(&c.name, c.image.as_deref().unwrap_or(""));
            record.state = RunState::Waiting {
                reason: waiting_reason.into(),
                message: None,
            };
            record
        })
        .collect()
}

/// Runs `pod` until it is deleted, then removes it from the node and from the API.
pub async fn run(context: Arc<AgentContext>, pod: Pod, mut stop: Stop) {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let span = tracing::info_span!("pod", namespace = %namespace, name = %name);
    async move {
        let api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
        let spec = pod.spec.clone().unwrap_or_default();
        let init = spec.init_containers.clone().unwrap_or_default();
        let first_reason = if init.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let shared = Arc::new(Shared {
            record: Mutex::new(PodRecord {
                restart_policy: spec
                    .restart_policy
                    .clone()
                    .unwrap_or_else(|| "Always".into()),
                pod_ip: None,
                host_ip: Some(context.subnet.gateway().to_string()),
                start_time: Timestamp::now(),
                init_containers: records(&init, "PodInitializing"),
                containers: records(&spec.containers, first_reason),
                initialized: init.is_empty(),
                failed: false,
            }),
            changed: Notify::new(),
        });
        let writer =
            tokio::spawn(write_status(api.clone(), name.clone(), shared.clone()).in_current_span());
        shared.changed.notify_one();

        let ip = lock(&context.ips).allocate();
        let mut runtime = PodRuntime {
            context: context.clone(),
            pod: pod.clone(),
            shared: shared.clone(),
            network: None,
            dirs: PodDirs {
                disk: pod_dir(&context.disk_root, &pod),
                memory: pod_dir(&context.memory_root, &pod),
            },
        };
        match ip {
            None => tracing::error!("no pod IP left in the agent's subnet"),
            Some(ip) if context.config.simulate => {
                runtime.simulate(ip);
                stopped(&mut stop).await;
            }
            Some(ip) => {
                if let Err(err) = runtime.run(ip, &mut stop).await {
                    tracing::error!(error = %err, "the pod could not run");
                    shared.update(|r| r.failed = true);
                }
                stopped(&mut stop).await;
            }
        }
        runtime.teardown().await;
        if let Some(ip) = ip {
            lock(&context.ips).release(ip);
        }
        writer.abort();
        delete_now(context.client.clone(), pod.clone()).await;
        if let Some(uid) = pod.metadata.uid.as_deref() {
            lock(&context.pods).remove(uid);
        }
        tracing::info!("pod removed from the node");
    }
    .instrument(span)
    .await;
}

struct PodRuntime {
    context: Arc<AgentContext>,
    pod: Pod,
    shared: Arc<Shared>,
    network: Option<PodNetwork>,
    dirs: PodDirs,
}

/// What a container's next process needs that does not change between restarts.
struct Prepared {
    facts: PodFacts,
    sources: Sources,
    volumes: BTreeMap<String, PathBuf>,
}

impl PodRuntime {
    fn simulate(&self, ip: Ipv4Addr) {
        let id = format!(
            "simulated://{}",
            self.pod.metadata.uid.as_deref().unwrap_or("")
        );
        self.shared.update(|record| {
            record.pod_ip = Some(ip.to_string());
            record.initialized = true;
            for c in record.init_containers.iter_mut() {
                c.state = RunState::Terminated(Terminated {
                    exit_code: 0,
                    signal: None,
                    reason: "Completed".into(),
                    message: None,
                    started_at: Timestamp::now(),
                    finished_at: Timestamp::now(),
                    container_id: id.clone(),
                });
            }
            for c in record.containers.iter_mut() {
                c.state = RunState::Running {
                    started_at: Timestamp::now(),
                    container_id: id.clone(),
                };
                c.started = true;
                c.ready = true;
            }
        });
    }

    async fn run(&mut self, ip: Ipv4Addr, stop: &mut Stop) -> Result<(), NodeAgentError> {
        let bridge_context = self.context.clone();
        let network = tokio::task::spawn_blocking(move || {
            let bridge = bridge_context
                .bridge
                .as_ref()
                .ok_or_else(|| NodeAgentError::Network("no bridge".into()))?;
            PodNetwork::create(bridge, ip)
        })
        .await
        .map_err(|e| NodeAgentError::Network(e.to_string()))??;
        if !self
            .context
            .track_namespace(&network.netns, &network.host_end)
        {
            network.remove();
            return Ok(());
        }
        self.network = Some(network);
        self.shared.update(|r| r.pod_ip = Some(ip.to_string()));
        for dir in [&self.dirs.disk, &self.dirs.memory] {
            for sub in ["", "logs", "roots"] {
                let path = dir.join(sub);
                std::fs::create_dir_all(&path).map_err(|source| NodeAgentError::Io {
                    context: format!("creating {}", path.display()),
                    source,
                })?;
            }
        }

        let hosts = apiserver_proxy::hosts_file(
            ip,
            &self.pod.name_any(),
            self.context
                .config
                .apiserver
                .map(|_| self.context.subnet.gateway()),
        );
        let hosts_path = self.dirs.disk.join("etc-hosts");
        std::fs::write(&hosts_path, hosts).map_err(|source| NodeAgentError::Io {
            context: format!("writing {}", hosts_path.display()),
            source,
        })?;

        let Some(prepared) = self.prepare_until_ready(ip, stop).await else {
            return Ok(());
        };
        let spec = self.pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        for (index, container) in spec.init_containers.iter().flatten().enumerate() {
            let mut backoff = self.context.config.initial_backoff;
            loop {
                let slot = Slot::Init(index);
                let Some(ended) = self.run_container(container, slot, &prepared, stop).await else {
                    return Ok(());
                };
                if ended.exit_code == 0 {
                    break;
                }
                if policy == "Never" {
                    self.shared.update(|r| r.failed = true);
                    return Ok(());
                }
                if !self.back_off(slot, ended, backoff, stop).await {
                    return Ok(());
                }
                backoff = (backoff * 2).min(self.context.config.max_backoff);
            }
        }
        self.shared.update(|record| {
            record.initialized = true;
            for c in record.containers.iter_mut() {
                c.state = RunState::Waiting {
                    reason: "ContainerCreating".into(),
                    message: None,
                };
            }
        });
        let this = &*self;
        let supervisors = spec
            .containers
            .iter()
            .enumerate()
            .map(|(index, container)| {
                let mut stop = stop.clone();
                let prepared = &prepared;
                let policy = policy.as_str();
                async move {
                    this.supervise(container, index, policy, prepared, &mut stop)
                        .await
                }
            });
        futures::future::join_all(supervisors).await;
        Ok(())
    }

    /// Reads ConfigMaps/Secrets and makes the volumes, retrying while they cannot be had;
    /// `None` if the pod is deleted meanwhile.
    async fn prepare_until_ready(&self, ip: Ipv4Addr, stop: &mut Stop) -> Option<Prepared> {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let node = spec.node_name.clone().unwrap_or_default();
        let (node_cpu, node_memory) = self.context.node_capacity(&node);
        let facts = PodFacts {
            name: self.pod.name_any(),
            namespace: self.pod.namespace().unwrap_or_default(),
            uid: self.pod.metadata.uid.clone().unwrap_or_default(),
            labels: self.pod.labels().clone(),
            annotations: self.pod.annotations().clone(),
            node_name: node,
            service_account: spec
                .service_account_name
                .clone()
                .unwrap_or_else(|| "default".into()),
            pod_ip: ip.to_string(),
            host_ip: self.context.subnet.gateway().to_string(),
            node_cpu,
            node_memory,
        };
        loop {
            let attempt = async {
                let sources = env::fetch_sources(&self.context.client, &self.pod).await?;
                let volumes = volumes::prepare(
                    &self.context.client,
                    &self.pod,
                    &self.dirs,
                    &sources,
                    &facts,
                )
                .await?;
                Ok::<_, NodeAgentError>((sources, volumes))
            };
            match attempt.await {
                Ok((sources, volumes)) => {
                    return Some(Prepared {
                        facts,
                        sources,
                        volumes,
                    });
                }
                Err(err) => {
                    tracing::warn!(error = %err, "preparing the pod failed; retrying");
                    let message = err.to_string();
                    self.shared.update(|record| {
                        for c in record
                            .containers
                            .iter_mut()
                            .chain(record.init_containers.iter_mut())
                        {
                            c.state = RunState::Waiting {
                                reason: "CreateContainerConfigError".into(),
                                message: Some(message.clone()),
                            };
                        }
                    });
                    if !sleep_unless_stopped(CONFIG_RETRY, stop).await {
                        return None;
                    }
                }
            }
        }
    }

    /// Runs a container again and again as the restart policy says, until the pod is deleted.
    async fn supervise(
        &self,
        container: &Container,
        index: usize,
        policy: &str,
        prepared: &Prepared,
        stop: &mut Stop,
    ) {
        let config = &self.context.config;
        let mut backoff = config.initial_backoff;
        loop {
            let started = Instant::now();
            let slot = Slot::Main(index);
            let Some(ended) = self.run_container(container, slot, prepared, stop).await else {
                return;
            };
            let restart = match policy {
                "Never" => false,
                "OnFailure" => ended.exit_code != 0,
                _ => true,
            };
            if !restart {
                return;
            }
            // A container that ran well for long enough starts over with a short back-off.
            if started.elapsed() > config.max_backoff * 2 {
                backoff = config.initial_backoff;
            }
            if !self.back_off(slot, ended, backoff, stop).await {
                return;
            }
            backoff = (backoff * 2).min(config.max_backoff);
        }
    }

    /// Shows the container waiting in CrashLoopBackOff for `delay`; `false` if stopped.
    async fn back_off(
        &self,
        slot: Slot,
        ended: Terminated,
        delay: Duration,
        stop: &mut Stop,
    ) -> bool {
        let pod = self.pod.name_any();
        self.shared.container(slot, |c| {
            c.restart_count += 1;
            c.last_state = Some(ended);
            c.state = RunState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {}s restarting failed container={} pod={pod}",
                    delay.as_secs(),
                    c.name
                )),
            };
            c.ready = false;
            c.started = false;
        });
        sleep_unless_stopped(delay, stop).await
    }

    fn launch_spec(
        &self,
        container: &Container,
        prepared: &Prepared,
    ) -> Result<LaunchSpec, NodeAgentError> {
        let images = &self.context.config.images;
        let image = container.image.as_deref().unwrap_or("");
        let mut env = env::container_env(container, &prepared.facts, &prepared.sources)?;
        if !env.iter().any(|(k, _)| k == "PATH") {
            let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
            env.push(("PATH".into(), path));
        }
        env.push(("HOSTNAME".into(), self.pod.name_any()));
        if self.context.config.apiserver.is_some() {
            // As the kubelet sets them for the `kubernetes` Service; the pod's own env wins.
            let port = apiserver_proxy::SERVICE_PORT.to_string();
            for (name, value) in [
                (
                    "KUBERNETES_SERVICE_HOST",
                    apiserver_proxy::SERVICE_HOST.to_string(),
                ),
                ("KUBERNETES_SERVICE_PORT", port.clone()),
                ("KUBERNETES_SERVICE_PORT_HTTPS", port),
            ] {
                if !env.iter().any(|(k, _)| k == name) {
                    env.insert(0, (name.into(), value));
                }
            }
        }
        let expand = |words: &[String]| -> Vec<String> {
            words.iter().map(|w| env::expand(w, &env)).collect()
        };
        let (program, args) = match container.command.as_deref() {
            Some([first, rest @ ..]) => {
                let program = if first.contains('/') {
                    PathBuf::from(first)
                } else {
                    images
                        .program_named(first)
                        .map(PathBuf::from)
                        .or_else(|| find_in_path(first))
                        .ok_or_else(|| {
                            NodeAgentError::ContainerConfig(format!(
                                "executable {first} not found in the image map or in PATH"
                            ))
                        })?
                };
                let mut args = expand(rest);
                args.extend(expand(container.args.as_deref().unwrap_or_default()));
                (program, args)
            }
            _ => {
                let entry = images.get(image).ok_or_else(|| {
                    NodeAgentError::ContainerConfig(format!(
                        "image {image} is not in the node agent's image map"
                    ))
                })?;
                let [first, rest @ ..] = entry.entrypoint.as_slice() else {
                    return Err(NodeAgentError::ContainerConfig(format!(
                        "image {image} has no entrypoint in the image map"
                    )));
                };
                let mut args = expand(rest);
                match container.args.as_deref() {
                    Some(given) => args.extend(expand(given)),
                    None => args.extend(entry.cmd.iter().cloned()),
                }
                (PathBuf::from(first), args)
            }
        };
        let mut mounts = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let source = prepared.volumes.get(&mount.name).ok_or_else(|| {
                NodeAgentError::ContainerConfig(format!("volume {} is not defined", mount.name))
            })?;
            let source = match mount.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => {
                    let path = source.join(sub);
                    if !path.exists() {
                        std::fs::create_dir_all(&path).map_err(|e| NodeAgentError::Io {
                            context: format!("creating subPath {}", path.display()),
                            source: e,
                        })?;
                    }
                    path
                }
                _ => source.clone(),
            };
            mounts.push(MountSpec {
                source,
                target: PathBuf::from(&mount.mount_path),
                read_only: mount.read_only == Some(true),
            });
        }
        // The kubelet manages every container's /etc/hosts unless the pod mounts its own.
        if !mounts.iter().any(|m| m.target == Path::new("/etc/hosts")) {
            mounts.push(MountSpec {
                source: self.dirs.disk.join("etc-hosts"),
                target: PathBuf::from("/etc/hosts"),
                read_only: false,
            });
        }
        let root = self.dirs.disk.join("roots").join(&container.name);
        std::fs::create_dir_all(&root).map_err(|source| NodeAgentError::Io {
            context: format!("creating {}", root.display()),
            source,
        })?;
        Ok(LaunchSpec {
            program,
            args,
            env,
            working_dir: container.working_dir.clone(),
            netns: self.network.as_ref().map(PodNetwork::path),
            hostname: self.pod.name_any(),
            root,
            mounts,
            log: self
                .dirs
                .disk
                .join("logs")
                .join(format!("{}.log", container.name)),
        })
    }

    /// Starts the container's process and waits for its end (`Some`) or a stop (`None`).
    /// Probes run while it does; a failed liveness or startup probe kills it.
    async fn run_container(
        &self,
        container: &Container,
        slot: Slot,
        prepared: &Prepared,
        stop: &mut Stop,
    ) -> Option<Terminated> {
        let started_at = Timestamp::now();
        let spec = loop {
            match self.launch_spec(container, prepared) {
                Ok(spec) => break spec,
                Err(err) => {
                    let (reason, message) = match &err {
                        NodeAgentError::ContainerConfig(m) => {
                            ("CreateContainerConfigError", m.clone())
                        }
                        other => ("CreateContainerError", other.to_string()),
                    };
                    tracing::warn!(container = %container.name, error = %message, "cannot start the container");
                    self.shared.container(slot, |c| {
                        c.state = RunState::Waiting {
                            reason: reason.into(),
                            message: Some(message),
                        };
                    });
                    // Configuration may appear later (a ConfigMap created after the pod).
                    if !sleep_unless_stopped(CONFIG_RETRY, stop).await {
                        return None;
                    }
                }
            }
        };
        let command = match launch::command(&spec) {
            Ok(command) => command,
            Err(err) => return Some(start_error(started_at, err.to_string())),
        };
        let mut child = match self.context.spawner.spawn(command).await {
            Ok(child) => child,
            Err(err) => {
                tracing::warn!(container = %container.name, error = %err, "starting the container failed");
                return Some(start_error(started_at, err.to_string()));
            }
        };
        let Some(pid) = child.id() else {
            return Some(start_error(started_at, "the process vanished".into()));
        };
        if !self.context.track_process(pid) {
            kill_group(pid, libc::SIGKILL);
            let _ = child.wait().await;
            return None;
        }
        let container_id = format!("process://{pid}");
        tracing::info!(container = %container.name, pid, "container started");
        let has_startup = container.startup_probe.is_some();
        let has_readiness = container.readiness_probe.is_some();
        let is_main = matches!(slot, Slot::Main(_));
        self.shared.container(slot, |c| {
            c.state = RunState::Running {
                started_at,
                container_id: container_id.clone(),
            };
            c.started = !has_startup;
            c.ready = is_main && !has_startup && !has_readiness;
        });
        let (kill_tx, kill_rx) = oneshot::channel::<String>();
        let probing = is_main.then(|| {
            let target = Target {
                ip: self.network.as_ref().map_or(Ipv4Addr::LOCALHOST, |n| n.ip),
                pid,
            };
            tokio::spawn(
                probe(
                    container.clone(),
                    slot,
                    target,
                    self.shared.clone(),
                    kill_tx,
                )
                .in_current_span(),
            )
        });

        enum Ended {
            Exited(std::io::Result<std::process::ExitStatus>),
            Killed(String),
            Stop(Duration),
        }
        let ended = tokio::select! {
            status = child.wait() => Ended::Exited(status),
            Ok(why) = kill_rx => Ended::Killed(why),
            grace = stopped(stop) => Ended::Stop(grace),
        };
        if let Some(probing) = &probing {
            probing.abort();
        }
        let grace = self.probe_kill_grace();
        let (status, message) = match ended {
            Ended::Exited(status) => (status, None),
            Ended::Killed(why) => {
                tracing::info!(container = %container.name, reason = %why, "killing the container");
                (terminate(&mut child, pid, grace).await, Some(why))
            }
            Ended::Stop(grace) => {
                let grace = pre_stop(container, &mut child, grace).await;
                let _ = terminate(&mut child, pid, grace).await;
                self.context.untrack_process(pid);
                return None;
            }
        };
        // Whatever the container forked dies with it, as in a real container.
        kill_group(pid, libc::SIGKILL);
        self.context.untrack_process(pid);
        let mut ended = match status {
            Ok(status) => Terminated::from_exit(status, started_at, container_id),
            Err(err) => start_error(started_at, err.to_string()),
        };
        ended.message = message;
        tracing::info!(container = %container.name, exit_code = ended.exit_code, "container exited");
        self.shared.container(slot, |c| {
            c.state = RunState::Terminated(ended.clone());
            c.ready = false;
            c.started = false;
        });
        Some(ended)
    }

    fn probe_kill_grace(&self) -> Duration {
        let seconds = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        Duration::from_secs(seconds.max(0) as u64)
    }

    /// Removes the pod's network namespace and directories (processes are already gone).
    async fn teardown(&mut self) {
        if let Some(network) = self.network.take() {
            let context = self.context.clone();
            let _ = tokio::task::spawn_blocking(move || {
                network.remove();
                context.untrack_namespace(&network.netns);
            })
            .await;
        }
        for dir in [&self.dirs.disk, &self.dirs.memory] {
            if let Err(err) = std::fs::remove_dir_all(dir)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %dir.display(), error = %err, "removing the pod directory failed");
            }
        }
    }
}

fn start_error(started_at: Timestamp, message: String) -> Terminated {
    Terminated {
        exit_code: 128,
        signal: None,
        reason: "StartError".into(),
        message: Some(message),
        started_at,
        finished_at: Timestamp::now(),
        container_id: String::new(),
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn kill_group(pgid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(-(pgid as i32), signal) };
}

/// Runs the container's `preStop` hook before SIGTERM, as the kubelet does, within the grace
/// period; returns what is left of it. Only the `sleep` action is run (what ModelFleet's
/// engine pods use, so Services stop routing to a pod before it starts refusing requests).
async fn pre_stop(
    container: &Container,
    child: &mut tokio::process::Child,
    grace: Duration,
) -> Duration {
    let Some(hook) = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
    else {
        return grace;
    };
    let Some(sleep) = &hook.sleep else {
        tracing::warn!(container = %container.name, "only the preStop sleep action is run; skipping this hook");
        return grace;
    };
    let pause = Duration::from_secs(sleep.seconds.max(0) as u64).min(grace);
    tracing::info!(container = %container.name, seconds = pause.as_secs(), "preStop: sleeping before SIGTERM");
    let started = Instant::now();
    // A container that exits by itself during the hook needs no signal.
    tokio::select! {
        () = tokio::time::sleep(pause) => {}
        _ = child.wait() => {}
    }
    grace.saturating_sub(started.elapsed())
}

/// SIGTERM to the container's process group, up to `grace` to exit, then SIGKILL.
async fn terminate(
    child: &mut tokio::process::Child,
    pgid: u32,
    grace: Duration,
) -> std::io::Result<std::process::ExitStatus> {
    kill_group(pgid, libc::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            kill_group(pgid, libc::SIGKILL);
            child.wait().await
        }
    }
}

/// Runs the container's probes: startup first; then readiness (sets `ready`) and liveness
/// together. A failed startup or liveness probe asks for the container to be killed.
async fn probe(
    container: Container,
    slot: Slot,
    target: Target,
    shared: Arc<Shared>,
    kill: oneshot::Sender<String>,
) {
    let started = tokio::time::Instant::now();
    if let Some(startup) = &container.startup_probe {
        let timing = probes::timing(startup);
        tokio::time::sleep_until(started + timing.initial_delay).await;
        let mut verdict = Verdict::new();
        loop {
            let result = probes::check(startup, &container, target).await;
            match verdict.record(result.is_ok(), &timing) {
                Some(true) => break,
                Some(false) => {
                    let why = result.err().unwrap_or_default();
                    let _ = kill.send(format!("startup probe failed: {why}"));
                    return;
                }
                None => tokio::time::sleep(timing.period).await,
            }
        }
    }
    let has_readiness = container.readiness_probe.is_some();
    shared.container(slot, |c| {
        c.started = true;
        c.ready = !has_readiness;
    });
    let readiness = async {
        let Some(readiness) = &container.readiness_probe else {
            return;
        };
        let timing = probes::timing(readiness);
        tokio::time::sleep_until(started + timing.initial_delay).await;
        let mut verdict = Verdict::new();
        loop {
            let ok = probes::check(readiness, &container, target).await.is_ok();
            if let Some(ready) = verdict.record(ok, &timing) {
                let unchanged = {
                    let record = lock(&shared.record);
                    let list = &record.containers;
                    let index = match slot {
                        Slot::Init(i) | Slot::Main(i) => i,
                    };
                    list.get(index).is_some_and(|c| c.ready == ready)
                };
                if !unchanged {
                    shared.container(slot, |c| c.ready = ready);
                }
            }
            tokio::time::sleep(timing.period).await;
        }
    };
    let liveness = async {
        let Some(liveness) = &container.liveness_probe else {
            return std::future::pending::<String>().await;
        };
        let timing = probes::timing(liveness);
        tokio::time::sleep_until(started + timing.initial_delay).await;
        let mut verdict = Verdict::new();
        loop {
            let result = probes::check(liveness, &container, target).await;
            if verdict.record(result.is_ok(), &timing) == Some(false) {
                return format!(
                    "liveness probe failed: {}",
                    result.err().unwrap_or_default()
                );
            }
            tokio::time::sleep(timing.period).await;
        }
    };
    tokio::select! {
        () = async { readiness.await; std::future::pending::<()>().await } => {}
        why = liveness => {
            let _ = kill.send(why);
        }
    }
}
