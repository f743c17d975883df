//! The node agent plays kubelet for real: pods scheduled by a real control plane onto its GPU
//! node run as local processes, each in its own network namespace, with probes, restarts,
//! volumes, the downward API, graceful deletion, and nothing left on the host afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapKeySelector, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ExecAction, GRPCAction, HTTPGetAction, HostPathVolumeSource, ObjectFieldSelector,
    Pod, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, TCPSocketAction, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use modelfleet_e2e::node_agent::{ImageEntry, ImageMap, NodeAgent, NodeAgentConfig, group_alive};
use modelfleet_e2e::nodes::{self, FakeNodeSpec};
use modelfleet_e2e::{Cluster, ClusterOptions, wait};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Generous: the machine running these may be busy compiling or running other tests.
const TIMEOUT: Duration = Duration::from_secs(120);
const SERVER_IMAGE: &str = "modelfleet.test/http-server:v1";
const SHELL_IMAGE: &str = "modelfleet.test/shell:v1";
const NAMESPACE: &str = "apps";
const NODE: &str = "gpu-node-0";

fn images() -> ImageMap {
    ImageMap::new()
        .with_binary(SERVER_IMAGE, env!("CARGO_BIN_EXE_modelfleet-test-server"))
        .with_entry(
            SHELL_IMAGE,
            ImageEntry {
                entrypoint: vec!["/bin/sh".into(), "-c".into()],
                cmd: vec!["sleep 3600".into()],
            },
        )
}

/// Fields drop in order: the agent stops its pods before the control plane goes.
struct Fixture {
    agent: NodeAgent,
    pods: Api<Pod>,
    cluster: Cluster,
}

/// A full control plane, a namespace and a node agent with one schedulable 4-GPU node.
async fn fixture(simulate: bool) -> Fixture {
    let cluster = Cluster::start(ClusterOptions::full())
        .await
        .expect("control plane starts");
    cluster
        .create_namespace(NAMESPACE)
        .await
        .expect("namespace");
    let client = cluster.client();
    let mut node = FakeNodeSpec::gpu_node(NODE, 4);
    node.gpu_product = Some("NVIDIA-H100-80GB-HBM3".into());
    let mut config = NodeAgentConfig::new(vec![node], images());
    config.simulate = simulate;
    config.initial_backoff = Duration::from_millis(500);
    config.max_backoff = Duration::from_secs(4);
    config.apiserver = Some(apiserver_address(&cluster));
    let agent = NodeAgent::start(client.clone(), config)
        .await
        .expect("node agent starts");
    nodes::wait_schedulable(client.clone(), NODE, TIMEOUT)
        .await
        .expect("the node becomes schedulable");
    let pods = Api::namespaced(client, NAMESPACE);
    Fixture {
        agent,
        pods,
        cluster,
    }
}

/// `host:port` of the API server, from its `https://127.0.0.1:<port>` URL.
fn apiserver_address(cluster: &Cluster) -> std::net::SocketAddr {
    let url = cluster.server_url();
    url.trim_start_matches("https://")
        .parse()
        .expect("the API server URL is https://IP:PORT")
}

fn client(f: &Fixture) -> Client {
    f.cluster.client()
}

fn labels(app: &str) -> BTreeMap<String, String> {
    [("app".to_string(), app.to_string())].into()
}

fn http_probe(path: &str, port: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(1),
        failure_threshold: Some(2),
        ..Probe::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn server(name: &str, port: u16, extra_args: &[&str]) -> Container {
    let mut args = vec!["--port".to_string(), port.to_string()];
    args.extend(extra_args.iter().map(|a| a.to_string()));
    Container {
        name: name.into(),
        image: Some(SERVER_IMAGE.into()),
        args: Some(args),
        ports: Some(vec![ContainerPort {
            container_port: i32::from(port),
            name: Some("http".into()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(http_probe("/healthz", i32::from(port))),
        ..Container::default()
    }
}

fn pod(name: &str, spec: PodSpec) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels(name)),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        ..Pod::default()
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ip(pod: &Pod) -> Option<Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// The pid in the first container's `process://<pid>` id.
fn container_pid(pod: &Pod, index: usize) -> Option<u32> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let id = statuses.get(index)?.container_id.as_deref()?;
    id.strip_prefix("process://")?.parse().ok()
}

async fn wait_ready(pods: &Api<Pod>, name: &str) -> Pod {
    wait::until(&format!("pod {name} Ready"), TIMEOUT, || async {
        pods.get(name).await.ok().filter(is_ready)
    })
    .await
}

async fn wait_gone(pods: &Api<Pod>, name: &str) {
    wait::until(&format!("pod {name} gone"), TIMEOUT, || async {
        matches!(pods.get_opt(name).await, Ok(None)).then_some(())
    })
    .await
}

/// A plain HTTP GET from the test process; `(status, body)`.
async fn http_get(ip: Ipv4Addr, port: u16, path: &str) -> Option<(u16, String)> {
    let connect = tokio::net::TcpStream::connect((ip, port));
    let mut stream = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .ok()?
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

fn command_output(program: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .expect("the command runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn netns_list() -> BTreeSet<String> {
    command_output("ip", &["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Names of the links attached to `bridge`.
fn bridge_ports(bridge: &str) -> Vec<String> {
    command_output("ip", &["-o", "link", "show", "master", bridge])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

fn link_exists(name: &str) -> bool {
    std::process::Command::new("ip")
        .args(["link", "show", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Asserts that nothing the agent made is left: processes, namespaces, veths, the bridge.
fn assert_nothing_left(pids: &[u32], namespaces: &[String], veths: &[String], bridge: &str) {
    for pid in pids {
        assert!(!group_alive(*pid), "process group {pid} is still alive");
    }
    let live = netns_list();
    for ns in namespaces {
        assert!(!live.contains(ns), "network namespace {ns} is left");
    }
    for veth in veths {
        assert!(!link_exists(veth), "veth {veth} is left");
    }
    assert!(!link_exists(bridge), "bridge {bridge} is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_pods_get_their_own_ips_bind_the_same_port_and_serve_the_test_process() {
    let f = fixture(false).await;
    let client = client(&f);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    let settings = ConfigMap {
        metadata: ObjectMeta {
            name: Some("settings".into()),
            ..ObjectMeta::default()
        },
        data: Some([("mode".to_string(), "fast".to_string())].into()),
        ..ConfigMap::default()
    };
    config_maps
        .create(&PostParams::default(), &settings)
        .await
        .expect("configmap");

    let gpu: BTreeMap<String, Quantity> =
        [("nvidia.com/gpu".to_string(), Quantity("1".into()))].into();
    let mut container = server("server", 8080, &[]);
    container.resources = Some(ResourceRequirements {
        requests: Some(gpu.clone()),
        limits: Some(gpu),
        ..ResourceRequirements::default()
    });
    container.env = Some(vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_IP", "status.podIP"),
        field_env("NODE_NAME", "spec.nodeName"),
        EnvVar {
            name: "MODE".into(),
            value_from: Some(EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: "settings".into(),
                    key: "mode".into(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
    ]);
    let deployment = Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(2),
            selector: LabelSelector {
                match_labels: Some(labels("web")),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels("web")),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("deployment");

    let selector = ListParams::default().labels("app=web");
    let ready = wait::until("both pods of the Deployment Ready", TIMEOUT, || async {
        let list = f.pods.list(&selector).await.ok()?;
        let ready: Vec<Pod> = list.items.into_iter().filter(is_ready).collect();
        (ready.len() == 2).then_some(ready)
    })
    .await;

    let subnet = f.agent.subnet();
    let mut ips = BTreeSet::new();
    for pod in &ready {
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some(NODE));
        let status = pod.status.as_ref().expect("status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(
            status.host_ip.as_deref(),
            Some(f.agent.host_ip().to_string().as_str())
        );
        let ip = pod_ip(pod).expect("a pod IP");
        assert!(subnet.contains(ip), "{ip} is outside {:?}", subnet);
        ips.insert(ip);
        let cs = &status.container_statuses.as_ref().expect("statuses")[0];
        assert!(cs.ready);
        assert_eq!(cs.started, Some(true));
        assert!(cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some());
        let pid = container_pid(pod, 0).expect("process:// container id");
        assert!(group_alive(pid), "the container's process {pid} runs");

        // Reached straight from the test process at podIP:8080; both pods bind 8080.
        let name = pod.name_any();
        let get = |path: &'static str| http_get(ip, 8080, path);
        assert_eq!(get("/healthz").await, Some((200, "ok".into())));
        assert_eq!(get("/hostname").await, Some((200, name.clone())));
        assert_eq!(get("/env/POD_NAME").await, Some((200, name.clone())));
        assert_eq!(get("/env/POD_IP").await, Some((200, ip.to_string())));
        assert_eq!(get("/env/NODE_NAME").await, Some((200, NODE.to_string())));
        assert_eq!(get("/env/MODE").await, Some((200, "fast".into())));
        assert_eq!(get("/pid").await, Some((200, pid.to_string())));
        // The service-account volume the API server adds, at its usual nested path.
        let token_ns = "/file/var/run/secrets/kubernetes.io/serviceaccount/namespace";
        assert_eq!(get(token_ns).await, Some((200, NAMESPACE.into())));
        // The pod reaches the API server through the in-cluster configuration and is
        // authenticated by its projected service-account token.
        assert_eq!(
            get("/whoami").await,
            Some((200, format!("system:serviceaccount:{NAMESPACE}:default")))
        );
    }
    assert_eq!(ips.len(), 2, "each pod has its own IP");
    assert!(
        !Path::new("/run/secrets/kubernetes.io").exists()
            && !Path::new("/var/run/secrets/kubernetes.io").exists(),
        "mount paths are made inside the container's root, not on the host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_container_runs_first_and_its_output_in_an_empty_dir_reaches_the_main_container() {
    let f = fixture(false).await;
    let data_mount = VolumeMount {
        name: "data".into(),
        mount_path: "/data".into(),
        ..VolumeMount::default()
    };
    let mut main = server("server", 8080, &[]);
    main.volume_mounts = Some(vec![
        data_mount.clone(),
        VolumeMount {
            name: "shm".into(),
            mount_path: "/dev/shm".into(),
            ..VolumeMount::default()
        },
    ]);
    let init = Container {
        name: "fetch".into(),
        image: Some(SHELL_IMAGE.into()),
        args: Some(vec![
            "echo \"hello from $(hostname)\" > /data/greeting && echo shared > /dev/shm/marker"
                .into(),
        ]),
        volume_mounts: main.volume_mounts.clone(),
        ..Container::default()
    };
    let spec = PodSpec {
        init_containers: Some(vec![init]),
        containers: vec![main],
        volumes: Some(vec![
            Volume {
                name: "data".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
            Volume {
                name: "shm".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".into()),
                    ..EmptyDirVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    };
    f.pods
        .create(&PostParams::default(), &pod("init", spec))
        .await
        .expect("pod");
    let ready = wait_ready(&f.pods, "init").await;
    let status = ready.status.as_ref().expect("status");
    let init_status = &status.init_container_statuses.as_ref().expect("init")[0];
    let terminated = init_status
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("the init container terminated");
    assert_eq!(terminated.exit_code, 0);
    assert_eq!(terminated.reason.as_deref(), Some("Completed"));
    let main_started = status.container_statuses.as_ref().expect("main")[0]
        .state
        .as_ref()
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.clone())
        .expect("main running");
    let init_finished = terminated.finished_at.clone().expect("finished");
    assert!(
        init_finished.0 <= main_started.0,
        "init finished before main started"
    );

    let ip = pod_ip(&ready).expect("pod IP");
    assert_eq!(
        http_get(ip, 8080, "/file/data/greeting").await,
        Some((200, "hello from init\n".into()))
    );
    assert_eq!(
        http_get(ip, 8080, "/file/dev/shm/marker").await,
        Some((200, "shared\n".into()))
    );
    assert!(
        !Path::new("/data/greeting").exists(),
        "the host's / is untouched"
    );
    assert!(
        !Path::new("/dev/shm/marker").exists(),
        "the host's /dev/shm is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_containers_restart_with_back_off_and_a_failing_liveness_probe_restarts_one() {
    let f = fixture(false).await;
    let crasher = Container {
        name: "crash".into(),
        image: Some(SHELL_IMAGE.into()),
        command: Some(vec![
            "sh".into(),
            "-c".into(),
            "echo crashing; exit 3".into(),
        ]),
        ..Container::default()
    };
    let crash_spec = PodSpec {
        containers: vec![crasher],
        ..PodSpec::default()
    };
    f.pods
        .create(&PostParams::default(), &pod("crash", crash_spec))
        .await
        .expect("pod");

    let mut unhealthy = server("server", 8080, &[]);
    unhealthy.liveness_probe = Some(Probe {
        initial_delay_seconds: Some(1),
        ..http_probe("/no-such-page", 8080)
    });
    let live_spec = PodSpec {
        containers: vec![unhealthy],
        termination_grace_period_seconds: Some(5),
        ..PodSpec::default()
    };
    f.pods
        .create(&PostParams::default(), &pod("liveness", live_spec))
        .await
        .expect("pod");

    let saw_back_off = std::sync::atomic::AtomicBool::new(false);
    let crashed = wait::until("the crashing container restarted twice", TIMEOUT, || {
        let pods = f.pods.clone();
        let saw = &saw_back_off;
        async move {
            let pod = pods.get("crash").await.ok()?;
            let cs = pod
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()?
                .clone();
            let waiting = cs.state.as_ref().and_then(|s| s.waiting.as_ref());
            if waiting.and_then(|w| w.reason.as_deref()) == Some("CrashLoopBackOff") {
                saw.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            (cs.restart_count >= 2).then_some(pod)
        }
    })
    .await;
    assert!(
        saw_back_off.into_inner(),
        "the container waited in CrashLoopBackOff between runs"
    );
    let status = crashed.status.as_ref().expect("status");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let cs = &status.container_statuses.as_ref().expect("statuses")[0];
    let last = cs
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("the last run terminated");
    assert_eq!(last.exit_code, 3);
    assert_eq!(last.reason.as_deref(), Some("Error"));
    let log = std::fs::read_to_string(f.agent.container_log(&crashed, "crash")).expect("log");
    assert!(
        log.matches("crashing").count() >= 2,
        "every run wrote to the log: {log}"
    );

    let first = wait_ready(&f.pods, "liveness").await;
    let first_pid = container_pid(&first, 0).expect("pid");
    let restarted = wait::until(
        "the liveness-failing container restarted",
        TIMEOUT,
        || async {
            let pod = f.pods.get("liveness").await.ok()?;
            let cs = pod
                .status
                .as_ref()?
                .container_statuses
                .as_ref()?
                .first()?
                .clone();
            let last_id = cs
                .last_state
                .as_ref()?
                .terminated
                .as_ref()?
                .container_id
                .clone()?;
            (cs.restart_count >= 1 && last_id == format!("process://{first_pid}")).then_some(cs)
        },
    )
    .await;
    let last = restarted
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("the killed run terminated");
    assert!(
        last.message
            .as_deref()
            .unwrap_or("")
            .contains("liveness probe failed"),
        "{last:?}"
    );
    // The server exits 0 on SIGTERM: killed after the probe failed, not crashed.
    assert_eq!(last.exit_code, 0);
    assert!(!group_alive(first_pid), "the killed process is gone");
    wait::until("a new process runs after the restart", TIMEOUT, || async {
        let pod = f.pods.get("liveness").await.ok()?;
        container_pid(&pod, 0).filter(|pid| *pid != first_pid && group_alive(*pid))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_tcp_and_exec_probes_pass_in_the_pods_namespaces() {
    let f = fixture(false).await;
    let mut grpc = server("grpc", 8080, &["--grpc-port", "9090"]);
    grpc.readiness_probe = Some(Probe {
        grpc: Some(GRPCAction {
            port: 9090,
            service: None,
        }),
        period_seconds: Some(1),
        ..Probe::default()
    });
    let mut other = server("other", 8081, &[]);
    other.startup_probe = Some(Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("http".into()),
            host: None,
        }),
        period_seconds: Some(1),
        failure_threshold: Some(30),
        ..Probe::default()
    });
    other.readiness_probe = Some(Probe {
        exec: Some(ExecAction {
            command: Some(vec![
                "sh".into(),
                "-c".into(),
                "test \"$(hostname)\" = probes".into(),
            ]),
        }),
        period_seconds: Some(1),
        ..Probe::default()
    });
    let spec = PodSpec {
        containers: vec![grpc, other],
        ..PodSpec::default()
    };
    f.pods
        .create(&PostParams::default(), &pod("probes", spec))
        .await
        .expect("pod");
    let ready = wait_ready(&f.pods, "probes").await;
    let statuses = ready
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .expect("statuses");
    assert!(statuses.iter().all(|c| c.ready && c.restart_count == 0));
    let ip = pod_ip(&ready).expect("pod IP");
    // Two containers of one pod share its network namespace.
    assert_eq!(
        http_get(ip, 8080, "/healthz").await,
        Some((200, "ok".into()))
    );
    assert_eq!(
        http_get(ip, 8081, "/healthz").await,
        Some((200, "ok".into()))
    );

    // An exec probe that fails keeps a container from being Ready.
    let mut never = server("never", 8080, &[]);
    never.readiness_probe = Some(Probe {
        exec: Some(ExecAction {
            command: Some(vec![
                "sh".into(),
                "-c".into(),
                "test -e /no-such-file".into(),
            ]),
        }),
        period_seconds: Some(1),
        ..Probe::default()
    });
    let spec = PodSpec {
        containers: vec![never],
        ..PodSpec::default()
    };
    f.pods
        .create(&PostParams::default(), &pod("never", spec))
        .await
        .expect("pod");
    let running = wait::until("pod never Running", TIMEOUT, || async {
        let pod = f.pods.get("never").await.ok()?;
        let phase = pod.status.as_ref()?.phase.clone()?;
        (phase == "Running").then_some(pod)
    })
    .await;
    let ip = pod_ip(&running).expect("pod IP");
    wait::until("the never-ready server answers", TIMEOUT, || async {
        http_get(ip, 8080, "/healthz")
            .await
            .filter(|(code, _)| *code == 200)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pod = f.pods.get("never").await.expect("pod");
    assert!(
        !is_ready(&pod),
        "a failing readiness probe keeps the pod unready"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_sends_sigterm_then_sigkill_after_the_grace_period_and_removes_the_sandbox() {
    let f = fixture(false).await;
    let notes = tempfile::tempdir().expect("tempdir");
    let host_dir = notes.path().to_string_lossy().into_owned();
    let with_notes = |mut c: Container| {
        c.volume_mounts = Some(vec![VolumeMount {
            name: "notes".into(),
            mount_path: "/notes".into(),
            ..VolumeMount::default()
        }]);
        c
    };
    let notes_volume = Volume {
        name: "notes".into(),
        host_path: Some(HostPathVolumeSource {
            path: host_dir.clone(),
            type_: Some("Directory".into()),
        }),
        ..Volume::default()
    };
    let polite = PodSpec {
        containers: vec![with_notes(server(
            "server",
            8080,
            &["--note-sigterm", "/notes/polite"],
        ))],
        volumes: Some(vec![notes_volume.clone()]),
        termination_grace_period_seconds: Some(30),
        ..PodSpec::default()
    };
    let stubborn = PodSpec {
        containers: vec![with_notes(server(
            "server",
            8080,
            &["--note-sigterm", "/notes/stubborn", "--ignore-sigterm"],
        ))],
        volumes: Some(vec![notes_volume]),
        termination_grace_period_seconds: Some(2),
        ..PodSpec::default()
    };
    for (name, spec) in [("polite", polite), ("stubborn", stubborn)] {
        f.pods
            .create(&PostParams::default(), &pod(name, spec))
            .await
            .expect("pod");
    }
    let mut pids = Vec::new();
    for name in ["polite", "stubborn"] {
        let ready = wait_ready(&f.pods, name).await;
        pids.push(container_pid(&ready, 0).expect("pid"));
    }
    let bridge = f.agent.bridge_name().expect("a bridge").to_string();
    let namespaces = f.agent.network_namespaces();
    let veths = bridge_ports(&bridge);
    assert_eq!(namespaces.len(), 2);
    assert_eq!(veths.len(), 2, "one veth per pod on the bridge: {veths:?}");
    let live = netns_list();
    assert!(namespaces.iter().all(|ns| live.contains(ns)));

    for name in ["polite", "stubborn"] {
        f.pods
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    for name in ["polite", "stubborn"] {
        wait_gone(&f.pods, name).await;
    }
    let note = |file: &str| std::fs::read_to_string(notes.path().join(file)).unwrap_or_default();
    assert_eq!(note("polite"), "SIGTERM\n");
    assert_eq!(
        note("stubborn"),
        "SIGTERM\n",
        "it got SIGTERM and ignored it"
    );
    for pid in &pids {
        assert!(!group_alive(*pid), "process {pid} is gone");
    }
    let live = netns_list();
    for ns in &namespaces {
        assert!(!live.contains(ns), "namespace {ns} is gone");
    }
    for veth in &veths {
        assert!(!link_exists(veth), "veth {veth} is gone");
    }
    assert!(f.agent.network_namespaces().is_empty());
    assert!(f.agent.process_groups().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_or_dropping_the_agent_leaves_no_process_namespace_veth_or_bridge() {
    let f = fixture(false).await;
    let spec = |port| PodSpec {
        containers: vec![server("server", port, &["--ignore-sigterm"])],
        termination_grace_period_seconds: Some(60),
        ..PodSpec::default()
    };
    for (name, port) in [("one", 8080), ("two", 8080)] {
        f.pods
            .create(&PostParams::default(), &pod(name, spec(port)))
            .await
            .expect("pod");
    }
    for name in ["one", "two"] {
        wait_ready(&f.pods, name).await;
    }
    let bridge = f.agent.bridge_name().expect("bridge").to_string();
    let pids = f.agent.process_groups();
    let namespaces = f.agent.network_namespaces();
    let veths = bridge_ports(&bridge);
    assert_eq!((pids.len(), namespaces.len(), veths.len()), (2, 2, 2));
    f.agent.shutdown().await;
    assert_nothing_left(&pids, &namespaces, &veths, &bridge);

    // A second agent, dropped without shutdown (as on a panic), cleans up as well.
    let client = f.cluster.client();
    let mut node = FakeNodeSpec::gpu_node("gpu-node-1", 2);
    node.gpu_product = Some("NVIDIA-H100-80GB-HBM3".into());
    let agent = NodeAgent::start(client.clone(), NodeAgentConfig::new(vec![node], images()))
        .await
        .expect("second agent");
    nodes::wait_schedulable(client.clone(), "gpu-node-1", TIMEOUT)
        .await
        .expect("schedulable");
    let mut three = pod("three", spec(8080));
    if let Some(spec) = three.spec.as_mut() {
        spec.node_name = Some("gpu-node-1".into());
    }
    f.pods
        .create(&PostParams::default(), &three)
        .await
        .expect("pod");
    wait_ready(&f.pods, "three").await;
    let bridge = agent.bridge_name().expect("bridge").to_string();
    let pids = agent.process_groups();
    let namespaces = agent.network_namespaces();
    let veths = bridge_ports(&bridge);
    assert_eq!((pids.len(), namespaces.len(), veths.len()), (1, 1, 1));
    drop(agent);
    assert_nothing_left(&pids, &namespaces, &veths, &bridge);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_pods_are_running_and_ready_without_processes() {
    let f = fixture(true).await;
    assert!(f.agent.bridge_name().is_none());
    let deployment = Deployment {
        metadata: ObjectMeta {
            name: Some("sim".into()),
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(5),
            selector: LabelSelector {
                match_labels: Some(labels("sim")),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels("sim")),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![server("server", 8080, &[])],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    let deployments: Api<Deployment> = Api::namespaced(client(&f), NAMESPACE);
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("deployment");
    let selector = ListParams::default().labels("app=sim");
    let ready = wait::until("five simulated pods Ready", TIMEOUT, || async {
        let list = f.pods.list(&selector).await.ok()?;
        let ready: Vec<Pod> = list.items.into_iter().filter(is_ready).collect();
        (ready.len() == 5).then_some(ready)
    })
    .await;
    let ips: BTreeSet<Ipv4Addr> = ready.iter().filter_map(pod_ip).collect();
    assert_eq!(ips.len(), 5, "distinct made-up IPs");
    for pod in &ready {
        let status = pod.status.as_ref().expect("status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let id = status.container_statuses.as_ref().expect("statuses")[0]
            .container_id
            .clone()
            .unwrap_or_default();
        assert!(id.starts_with("simulated://"), "{id}");
    }
    assert!(f.agent.process_groups().is_empty(), "nothing runs");
    assert!(f.agent.network_namespaces().is_empty());

    // Deleting a simulated pod removes it at once.
    let victim = ready[0].name_any();
    f.pods
        .delete(&victim, &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(&f.pods, &victim).await;
}
