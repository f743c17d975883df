//! The Deployment that runs a ModelDeployment's engine pods.
//!
//! Each pod fetches the weights in an init container (`modelfleet-engine fetch`) into an
//! emptyDir model cache, then serves them (`modelfleet-engine serve`). The revision is both
//! an argument of the init container and a pod-template annotation, so changing it changes
//! the template and the Deployment rolls the pods. Where the fetch reads from (and what it
//! mounts for that) is [`super::source`]'s business.

use std::collections::BTreeMap;
use std::str::FromStr;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, GRPCAction, KeyToPath, Lifecycle,
    LifecycleHandler, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretVolumeSource, SecurityContext, SleepAction, Toleration,
    TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::ResourceExt;
use modelfleet_contract::ports::{self, EnginePort};
use modelfleet_contract::serve::{Backend, ModelArgs, ServeArgs};

use super::labels::{common_labels, selector_labels};
use super::owned_metadata;
use super::source::{FetchSource, fetch_source};
use crate::api::{ModelDeployment, ModelDeploymentSpec};
use crate::rollout::{TEMPLATE_HASH_LABEL, template_hash};
use crate::{Error, Result};

/// Where the init container puts the weights and the engine reads them.
pub const MODEL_DIR: &str = "/models";
/// Pod-template annotation carrying the model revision.
pub const REVISION_ANNOTATION: &str = "modelfleet.dev/revision";
/// Where the engine container finds the API key (`--api-key-file`), when one is asked for.
pub const API_KEY_FILE: &str = "/etc/modelfleet/api-key/key";
const API_KEY_DIR: &str = "/etc/modelfleet/api-key";
/// The file name the Secret's key is given in [`API_KEY_DIR`].
const API_KEY_ITEM: &str = "key";
const API_KEY_VOLUME: &str = "api-key";
/// The key file is readable by the engine's group (the pod's fsGroup) and nobody else.
const API_KEY_MODE: i32 = 0o440;

/// The extended resource GPUs are requested as (NVIDIA device plugin).
const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// The node label GPU feature discovery sets to the GPU model.
const GPU_PRODUCT_LABEL: &str = "nvidia.com/gpu.product";
/// Unprivileged UID/GID the engine runs as (the distroless "nonroot" user).
const ENGINE_UID: i64 = 65532;
/// Time for the engine to drain in-flight requests after SIGTERM.
const TERMINATION_GRACE_SECONDS: i64 = 60;
/// How long a deleted engine keeps serving before SIGTERM starts its drain (which the engine
/// bounds at 30s by default): the two fit in the grace period.
const PRE_STOP_SLEEP_SECONDS: i64 = 5;
/// Loading weights can take minutes: the startup probe allows this many seconds.
const STARTUP_BUDGET_SECONDS: i32 = 1800;
const PROBE_PERIOD_SECONDS: i32 = 10;
/// Old ReplicaSets kept for `kubectl rollout undo`.
const REVISION_HISTORY_LIMIT: i32 = 3;

/// What the fetch init container asks for: it streams files to disk and hashes them, so a
/// little CPU and a bounded amount of memory (page cache aside) is enough at any model size.
const FETCH_CPU_REQUEST: &str = "250m";
const FETCH_MEMORY_REQUEST: &str = "256Mi";
const FETCH_MEMORY_LIMIT: &str = "2Gi";
const EPHEMERAL_STORAGE: &str = "ephemeral-storage";

const ENGINE_BINARY: &str = "modelfleet-engine";
const SERVE_COMMAND: &str = "serve";
const INIT_CONTAINER: &str = "fetch";
const MODEL_VOLUME: &str = "model-cache";
const SHM_VOLUME: &str = "dshm";
const TMP_VOLUME: &str = "tmp";

/// The name of the serving container in every engine pod.
pub fn engine_container_name() -> &'static str {
    "engine"
}

/// The Deployment for `md`, running `replicas` pods of `spec.engine.image`, or of
/// `default_image` when the spec leaves it unset.
pub fn build_deployment(
    md: &ModelDeployment,
    replicas: i32,
    default_image: &str,
) -> Result<Deployment> {
    let spec = &md.spec;
    let template = pod_template(md, default_image)?;
    let mut metadata = owned_metadata(md)?;
    // Which template the pods run, readable from a metadata-only cache: a canary rollout
    // compares it with the spec's.
    metadata.labels.get_or_insert_default().insert(
        TEMPLATE_HASH_LABEL.to_string(),
        template_hash(&template).map_err(|source| Error::Serialize {
            what: "the pod template",
            source,
        })?,
    );
    Ok(Deployment {
        metadata,
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(md)),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(spec.rollout.max_surge.clone()),
                    max_unavailable: Some(spec.rollout.max_unavailable.clone()),
                }),
            }),
            progress_deadline_seconds: Some(progress_deadline_seconds(md)?),
            revision_history_limit: Some(REVISION_HISTORY_LIMIT),
            template,
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

fn progress_deadline_seconds(md: &ModelDeployment) -> Result<i32> {
    let text = &md.spec.rollout.progress_deadline;
    let invalid = |reason: String| Error::InvalidSpec {
        object: format!("{}/{}", md.namespace().unwrap_or_default(), md.name_any()),
        reason: format!("spec.rollout.progressDeadline {text:?}: {reason}"),
    };
    let parsed = kube::core::Duration::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let seconds = std::time::Duration::from(parsed).as_secs();
    // The Deployment controller needs a deadline of at least one second.
    i32::try_from(seconds.max(1)).map_err(|_| invalid("too long".into()))
}

fn pod_template(md: &ModelDeployment, default_image: &str) -> Result<PodTemplateSpec> {
    let spec = &md.spec;
    let image = spec.engine.image.as_deref().unwrap_or(default_image);
    let source = fetch_source(&spec.model.source);
    Ok(PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(common_labels(md)),
            annotations: Some(BTreeMap::from([(
                REVISION_ANNOTATION.to_string(),
                spec.model.revision.clone(),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            init_containers: Some(vec![fetch_container(spec, image, &source)]),
            containers: vec![engine_container(md, image)?],
            volumes: Some(volumes(spec, source.volume)),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(ENGINE_UID),
                run_as_group: Some(ENGINE_UID),
                fs_group: Some(ENGINE_UID),
                seccomp_profile: Some(runtime_default_seccomp()),
                ..PodSecurityContext::default()
            }),
            // The engine never talks to the Kubernetes API.
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
            node_selector: non_empty_map(node_selector(spec)),
            tolerations: non_empty_vec(tolerations(spec)),
            affinity: spec.scheduling.affinity.clone(),
            priority_class_name: spec.scheduling.priority_class_name.clone(),
            topology_spread_constraints: non_empty_vec(topology_spread(md)),
            ..PodSpec::default()
        }),
    })
}

fn fetch_container(spec: &ModelDeploymentSpec, image: &str, source: &FetchSource) -> Container {
    let mut args = vec![
        "fetch".to_string(),
        "--source".into(),
        source.uri.clone(),
        "--revision".into(),
        spec.model.revision.clone(),
        "--dest".into(),
        MODEL_DIR.into(),
    ];
    args.extend(source.args.iter().cloned());
    let mut mounts = vec![mount(MODEL_VOLUME, MODEL_DIR), mount(TMP_VOLUME, "/tmp")];
    mounts.extend(source.mount.clone());
    let mut requests = BTreeMap::from([
        ("cpu".to_string(), Quantity(FETCH_CPU_REQUEST.into())),
        ("memory".to_string(), Quantity(FETCH_MEMORY_REQUEST.into())),
    ]);
    // The fetch fills the model cache: the pod needs that much disk from its node.
    if let Some(cache) = &spec.resources.model_cache {
        requests.insert(EPHEMERAL_STORAGE.to_string(), cache.clone());
    }
    Container {
        name: INIT_CONTAINER.into(),
        image: Some(image.to_string()),
        command: Some(vec![ENGINE_BINARY.into()]),
        args: Some(args),
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity(FETCH_MEMORY_LIMIT.into()),
            )])),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(mounts),
        security_context: Some(restricted_container_security()),
        ..Container::default()
    }
}

/// The engine backend for replicas of `gpus` GPUs: the GPUs a pod requests are the GPUs it
/// runs on.
pub fn engine_backend(gpus: i32) -> Backend {
    if gpus > 0 {
        Backend::Cuda
    } else {
        Backend::Cpu
    }
}

/// The `serve` flags for `md`'s engines, as the engine parses them.
pub fn serve_args(md: &ModelDeployment) -> Result<ServeArgs> {
    let spec = &md.spec;
    let engine = &spec.engine;
    let invalid = |field: &str, value: i32| Error::InvalidSpec {
        object: format!("{}/{}", md.namespace().unwrap_or_default(), md.name_any()),
        reason: format!("spec.engine.{field} {value} must be positive"),
    };
    let count = |field: &str, value: i32| usize::try_from(value).map_err(|_| invalid(field, value));
    Ok(ServeArgs {
        model: ModelArgs {
            model: MODEL_DIR.into(),
            dtype: engine.dtype,
            block_size: count("blockSize", engine.block_size)?,
            max_num_seqs: count("maxNumSeqs", engine.max_num_seqs)?,
            backend: engine_backend(spec.resources.gpus),
            gpu_memory_utilization: engine.gpu_memory_utilization,
        },
        served_name: Some(
            spec.model
                .served_name
                .clone()
                .unwrap_or_else(|| md.name_any()),
        ),
        grpc_port: ports::GRPC.number,
        http_port: ports::HTTP.number,
        max_model_len: engine
            .max_model_len
            .map(|len| count("maxModelLen", len))
            .transpose()?,
        api_key_file: engine
            .api_key_secret_ref
            .as_ref()
            .map(|_| API_KEY_FILE.into()),
    })
}

fn engine_container(md: &ModelDeployment, image: &str) -> Result<Container> {
    let spec = &md.spec;
    let engine = &spec.engine;
    let mut args = vec![SERVE_COMMAND.to_string()];
    args.extend(serve_args(md)?.to_args());
    let mut mounts = vec![
        mount(MODEL_VOLUME, MODEL_DIR),
        mount(SHM_VOLUME, "/dev/shm"),
        mount(TMP_VOLUME, "/tmp"),
    ];
    if engine.api_key_secret_ref.is_some() {
        mounts.push(VolumeMount {
            read_only: Some(true),
            ..mount(API_KEY_VOLUME, API_KEY_DIR)
        });
    }
    args.extend(engine.extra_args.iter().cloned());

    Ok(Container {
        name: engine_container_name().into(),
        image: Some(image.to_string()),
        command: Some(vec![ENGINE_BINARY.into()]),
        args: Some(args),
        ports: Some(vec![port(ports::GRPC), port(ports::HTTP)]),
        resources: Some(resources(spec)),
        // The engine reports SERVING on grpc.health.v1 only once weights are loaded and
        // warmed up; the startup probe gives loading its own, long budget so liveness does
        // not kill a pod that is still reading weights.
        startup_probe: Some(grpc_probe(STARTUP_BUDGET_SECONDS / PROBE_PERIOD_SECONDS)),
        readiness_probe: Some(grpc_probe(3)),
        liveness_probe: Some(grpc_probe(6)),
        // A deleted pod leaves its Service's endpoints at once, but kube-proxy, gateways and
        // clients learn of it a moment later. The engine keeps serving through that moment
        // and only then gets SIGTERM, so nobody is sent to an engine that already refuses.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRE_STOP_SLEEP_SECONDS,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        volume_mounts: Some(mounts),
        security_context: Some(restricted_container_security()),
        ..Container::default()
    })
}

fn grpc_probe(failure_threshold: i32) -> Probe {
    Probe {
        grpc: Some(GRPCAction {
            port: ports::GRPC.k8s(),
            service: None,
        }),
        period_seconds: Some(PROBE_PERIOD_SECONDS),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

fn resources(spec: &ModelDeploymentSpec) -> ResourceRequirements {
    let res = &spec.resources;
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    if res.gpus > 0 {
        // Extended resources must have requests equal to limits.
        let gpus = Quantity(res.gpus.to_string());
        requests.insert(GPU_RESOURCE.to_string(), gpus.clone());
        limits.insert(GPU_RESOURCE.to_string(), gpus);
    }
    if let Some(cpu) = &res.cpu {
        requests.insert("cpu".to_string(), cpu.clone());
    }
    if let Some(memory) = &res.memory {
        // A memory limit equal to the request: the KV cache is budgeted up front, so a pod
        // that grows past it is broken and should restart rather than starve its node.
        requests.insert("memory".to_string(), memory.clone());
        limits.insert("memory".to_string(), memory.clone());
    }
    if let Some(cache) = &res.model_cache {
        // The weights stay in the cache while the engine serves them.
        requests.insert(EPHEMERAL_STORAGE.to_string(), cache.clone());
    }
    ResourceRequirements {
        requests: non_empty_map(requests),
        limits: non_empty_map(limits),
        ..ResourceRequirements::default()
    }
}

fn node_selector(spec: &ModelDeploymentSpec) -> BTreeMap<String, String> {
    let mut selector = spec.scheduling.node_selector.clone();
    if let Some(product) = &spec.resources.gpu_product {
        selector.insert(GPU_PRODUCT_LABEL.to_string(), product.clone());
    }
    selector
}

fn tolerations(spec: &ModelDeploymentSpec) -> Vec<Toleration> {
    let mut tolerations = spec.scheduling.tolerations.clone();
    if spec.resources.gpus > 0 {
        // GPU node pools are commonly tainted so only GPU workloads land there.
        tolerations.push(Toleration {
            key: Some(GPU_RESOURCE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        });
    }
    tolerations
}

fn topology_spread(md: &ModelDeployment) -> Vec<TopologySpreadConstraint> {
    md.spec
        .scheduling
        .topology_spread
        .iter()
        .map(|spread| TopologySpreadConstraint {
            topology_key: spread.topology_key.clone(),
            max_skew: spread.max_skew,
            when_unsatisfiable: spread.when_unsatisfiable.as_str().into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(md)),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        })
        .collect()
}

fn volumes(spec: &ModelDeploymentSpec, source: Option<Volume>) -> Vec<Volume> {
    let mut volumes = vec![
        Volume {
            name: MODEL_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: spec.resources.model_cache.clone(),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            // NCCL and the tokenizer's workers use shared memory; the container runtime's
            // default /dev/shm is 64 MiB.
            name: SHM_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            // The root filesystem is read-only; scratch space goes here.
            name: TMP_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    volumes.extend(source);
    if let Some(key) = &spec.engine.api_key_secret_ref {
        volumes.push(Volume {
            name: API_KEY_VOLUME.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(key.name.clone()),
                // Only the one key, under a fixed name the engine is pointed at.
                items: Some(vec![KeyToPath {
                    key: key.key.clone(),
                    path: API_KEY_ITEM.into(),
                    mode: None,
                }]),
                default_mode: Some(API_KEY_MODE),
                optional: Some(false),
            }),
            ..Volume::default()
        });
    }
    volumes
}

/// What the `restricted` Pod Security Standard asks of every container.
fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

fn mount(volume: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        ..VolumeMount::default()
    }
}

fn port(port: EnginePort) -> ContainerPort {
    ContainerPort {
        name: Some(port.name.into()),
        container_port: port.k8s(),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn non_empty_map<V>(map: BTreeMap<String, V>) -> Option<BTreeMap<String, V>> {
    (!map.is_empty()).then_some(map)
}

fn non_empty_vec<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Affinity, NodeAffinity, NodeSelector, NodeSelectorTerm};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;
    use crate::api::{DEFAULT_ENGINE_IMAGE, TopologySpread, WhenUnsatisfiable};
    use crate::desired::test_support::minimal;

    fn pod_spec(d: &Deployment) -> &PodSpec {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    fn engine(d: &Deployment) -> &Container {
        pod_spec(d)
            .containers
            .iter()
            .find(|c| c.name == "engine")
            .expect("engine container")
    }

    fn fetch(d: &Deployment) -> &Container {
        let init = pod_spec(d)
            .init_containers
            .as_ref()
            .expect("init containers");
        init.iter()
            .find(|c| c.name == "fetch")
            .expect("fetch init container")
    }

    fn args(c: &Container) -> Vec<&str> {
        c.args
            .as_ref()
            .expect("args")
            .iter()
            .map(String::as_str)
            .collect()
    }

    fn flag<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
        let args = c.args.as_ref()?;
        let at = args.iter().position(|a| a == name)?;
        args.get(at + 1).map(String::as_str)
    }

    #[test]
    fn extra_args_may_not_repeat_any_flag_the_operator_writes() {
        let mut md = minimal("chat");
        md.spec.engine.max_model_len = Some(4096);
        md.spec.engine.api_key_secret_ref = Some(crate::api::SecretKeyRef {
            name: "chat-key".into(),
            key: "key".into(),
        });
        let d = build_deployment(&md, 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        let written: Vec<&str> = args(engine(&d))
            .into_iter()
            .filter(|a| a.starts_with("--"))
            .collect();
        assert!(written.contains(&"--backend"), "{written:?}");
        for flag in written {
            assert!(
                modelfleet_contract::serve::OPERATOR_FLAGS.contains(&flag),
                "{flag} is written by the operator but extraArgs may repeat it"
            );
        }
    }

    #[test]
    fn owner_reference_points_at_the_model_deployment_as_controller() {
        let d = build_deployment(&minimal("chat"), 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        let owners = d.metadata.owner_references.expect("owner refs");
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "ModelDeployment");
        assert_eq!(owners[0].api_version, "modelfleet.dev/v1alpha1");
        assert_eq!(owners[0].name, "chat");
        assert_eq!(owners[0].uid, "0b8e6a4c-4f57-4a5e-9d1e-2d7d3b1f7a10");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].block_owner_deletion, Some(true));
        assert_eq!(d.metadata.namespace.as_deref(), Some("ml"));
    }

    #[test]
    fn refuses_an_object_without_uid() {
        let mut md = minimal("chat");
        md.metadata.uid = None;
        assert!(matches!(
            build_deployment(&md, 1, DEFAULT_ENGINE_IMAGE),
            Err(Error::MissingField { .. })
        ));
    }

    #[test]
    fn requests_and_limits_gpus_as_nvidia_extended_resource() {
        let mut md = minimal("chat");
        md.spec.resources.gpus = 2;
        md.spec.resources.memory = Some(Quantity("24Gi".into()));
        md.spec.resources.cpu = Some(Quantity("4".into()));
        let d = build_deployment(&md, 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        let res = engine(&d).resources.as_ref().expect("resources");
        let requests = res.requests.as_ref().expect("requests");
        let limits = res.limits.as_ref().expect("limits");
        assert_eq!(requests.get("nvidia.com/gpu"), Some(&Quantity("2".into())));
        assert_eq!(limits.get("nvidia.com/gpu"), Some(&Quantity("2".into())));
        assert_eq!(requests.get("cpu"), Some(&Quantity("4".into())));
        assert_eq!(
            limits.get("cpu"),
            None,
            "no CPU limit: throttling hurts latency"
        );
        assert_eq!(requests.get("memory"), Some(&Quantity("24Gi".into())));
        assert_eq!(limits.get("memory"), Some(&Quantity("24Gi".into())));
    }

    #[test]
    fn replicas_with_gpus_run_the_cuda_backend_and_without_the_cpu_backend() {
        let mut md = minimal("chat");
        assert_eq!(
            md.spec.resources.gpus, 0,
            "a minimal manifest requests no GPU"
        );
        let d = build_deployment(&md, 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        assert_eq!(flag(engine(&d), "--backend"), Some("cpu"));
        md.spec.resources.gpus = 2;
        let d = build_deployment(&md, 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        assert_eq!(flag(engine(&d), "--backend"), Some("cuda"));
    }

    #[test]
    fn cpu_only_replicas_request_no_gpu_and_tolerate_no_gpu_taint() {
        let mut md = minimal("chat");
        md.spec.resources.gpus = 0;
        let d = build_deployment(&md, 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        assert!(
            engine(&d)
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .is_none()
        );
        assert!(pod_spec(&d).tolerations.is_none());
    }

    #[test]
    fn gpu_replicas_tolerate_the_nvidia_taint_after_user_tolerations() {
        let mut md = minimal("chat");
        md.spec.resources.gpus = 1;
        md.spec.scheduling.tolerations = vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("ml".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        }];
        let d = build_deployment(&md, 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        let tolerations = pod_spec(&d).tolerations.as_ref().expect("tolerations");
        assert_eq!(tolerations.len(), 2);
        assert_eq!(tolerations[0].key.as_deref(), Some("dedicated"));
        assert_eq!(tolerations[1].key.as_deref(), Some("nvidia.com/gpu"));
        assert_eq!(tolerations[1].operator.as_deref(), Some("Exists"));
        assert_eq!(tolerations[1].effect.as_deref(), Some("NoSchedule"));
    }

    #[test]
    fn gpu_product_selects_nodes_by_label_beside_user_selector() {
        let mut md = minimal("chat");
        md.spec.resources.gpu_product = Some("NVIDIA-H100-80GB-HBM3".into());
        md.spec
            .scheduling
            .node_selector
            .insert("pool".into(), "inference".into());
        let d = build_deployment(&md, 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        let selector = pod_spec(&d).node_selector.as_ref().expect("node selector");
        assert_eq!(
            selector.get("nvidia.com/gpu.product").map(String::as_str),
            Some("NVIDIA-H100-80GB-HBM3")
        );
        assert_eq!(selector.get("pool").map(String::as_str), Some("inference"));
    }

    #[test]
    fn no_node_selector_without_gpu_product() {
        let d = build_deployment(&minimal("chat"), 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        assert!(pod_spec(&d).node_selector.is_none());
    }

    #[test]
    fn init_container_fetches_the_pinned_revision_into_the_model_cache() {
        let d = build_deployment(&minimal("chat"), 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        let fetch = fetch(&d);
        assert_eq!(
            fetch.command.as_deref(),
            Some(&["modelfleet-engine".to_string()][..])
        );
        assert_eq!(args(fetch)[0], "fetch");
        assert_eq!(
            flag(fetch, "--source"),
            Some("hf://HuggingFaceTB/SmolLM2-135M-Instruct")
        );
        assert_eq!(
            flag(fetch, "--revision"),
            Some("12fd25f77366fa6b3b4b768ec3050bf629380bac")
        );
        assert_eq!(flag(fetch, "--dest"), Some(MODEL_DIR));
        let mounts = fetch.volume_mounts.as_ref().expect("mounts");
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "model-cache" && m.mount_path == MODEL_DIR)
        );
    }

    #[test]
    fn engine_serves_the_model_with_its_settings() {
        let mut md = minimal("chat");
        md.spec.engine.max_model_len = Some(4096);
        md.spec.engine.extra_args = vec!["--enable-prefix-caching".into()];
        let d = build_deployment(&md, 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        let engine = engine(&d);
        assert_eq!(args(engine)[0], "serve");
        assert_eq!(flag(engine, "--model"), Some(MODEL_DIR));
        assert_eq!(
            flag(engine, "--served-name"),
            Some("chat"),
            "served name defaults to the object name"
        );
        assert_eq!(flag(engine, "--dtype"), Some("auto"));
        assert_eq!(flag(engine, "--block-size"), Some("16"));
        assert_eq!(flag(engine, "--max-num-seqs"), Some("256"));
        assert_eq!(flag(engine, "--gpu-memory-utilization"), Some("0.9"));
        assert_eq!(flag(engine, "--max-model-len"), Some("4096"));
        assert_eq!(
            args(engine).last(),
            Some(&"--enable-prefix-caching"),
            "extra args come last"
        );
        assert_eq!(
            engine.image.as_deref(),
            Some(crate::api::DEFAULT_ENGINE_IMAGE)
        );
    }

    #[test]
    fn the_engine_args_parse_with_the_engines_own_serve_parser() {
        let plain = minimal("chat");
        let mut everything = minimal("chat");
        everything.spec.model.served_name = Some("--help me, I start with dashes".into());
        everything.spec.engine.dtype = crate::api::Dtype::Bfloat16;
        everything.spec.engine.block_size = 32;
        everything.spec.engine.max_num_seqs = 7;
        everything.spec.engine.gpu_memory_utilization = 0.875;
        everything.spec.engine.max_model_len = Some(8192);
        everything.spec.resources.gpus = 2;
        everything.spec.engine.api_key_secret_ref = Some(crate::api::SecretKeyRef {
            name: "chat-key".into(),
            key: "key".into(),
        });
        for md in [plain, everything] {
            let d = build_deployment(&md, 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
            let args = args(engine(&d));
            assert_eq!(args[0], "serve");
            let parsed = ServeArgs::parse_from(&args[1..])
                .unwrap_or_else(|e| panic!("{args:?} does not parse: {e}"));
            assert_eq!(parsed, serve_args(&md).expect("serve args"));
            assert_eq!(
                parsed.served_name.as_deref(),
                Some(md.spec.model.served_name.as_deref().unwrap_or("chat"))
            );
        }
    }

    #[test]
    fn a_negative_count_that_bypassed_the_schema_is_an_invalid_spec() {
        let mut md = minimal("chat");
        md.spec.engine.max_num_seqs = -1;
        assert!(matches!(
            build_deployment(&md, 1, DEFAULT_ENGINE_IMAGE),
            Err(Error::InvalidSpec { .. })
        ));
    }

    #[test]
    fn engine_exposes_named_grpc_and_http_ports() {
        let d = build_deployment(&minimal("chat"), 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        let ports = engine(&d).ports.as_ref().expect("ports");
        let named: Vec<_> = ports
            .iter()
            .map(|p| (p.name.as_deref(), p.container_port))
            .collect();
        assert_eq!(named, vec![(Some("grpc"), 50051), (Some("http"), 8000)]);
    }

    #[test]
    fn startup_and_readiness_probes_use_grpc_health() {
        let d = build_deployment(&minimal("chat"), 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        let engine = engine(&d);
        for (what, probe) in [
            ("startup", &engine.startup_probe),
            ("readiness", &engine.readiness_probe),
        ] {
            let grpc = probe.as_ref().and_then(|p| p.grpc.as_ref());
            assert_eq!(
                grpc.map(|g| g.port),
                Some(ports::GRPC.k8s()),
                "{what} probe"
            );
        }
        let startup = engine.startup_probe.as_ref().expect("startup probe");
        let budget = startup.failure_threshold.unwrap_or(0) * startup.period_seconds.unwrap_or(0);
        assert!(
            budget >= 600,
            "weights need minutes to load, startup budget is {budget}s"
        );
    }

    #[test]
    fn engine_keeps_serving_briefly_after_deletion_within_the_grace_period() {
        let d = build_deployment(&minimal("chat"), 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        let sleep = engine(&d)
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.sleep.as_ref())
            .map(|s| s.seconds);
        assert_eq!(sleep, Some(PRE_STOP_SLEEP_SECONDS));
        let grace = pod_spec(&d)
            .termination_grace_period_seconds
            .expect("grace");
        // The engine's own drain deadline is 30s.
        assert!(PRE_STOP_SLEEP_SECONDS + 30 < grace);
    }

    #[test]
    fn dev_shm_is_a_memory_empty_dir() {
        let d = build_deployment(&minimal("chat"), 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        let volumes = pod_spec(&d).volumes.as_ref().expect("volumes");
        let shm = volumes
            .iter()
            .find(|v| v.name == "dshm")
            .expect("dshm volume");
        assert_eq!(
            shm.empty_dir.as_ref().and_then(|e| e.medium.as_deref()),
            Some("Memory")
        );
        let mounts = engine(&d).volume_mounts.as_ref().expect("mounts");
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "dshm" && m.mount_path == "/dev/shm")
        );
    }

    #[test]
    fn pods_meet_the_restricted_security_standard() {
        let d = build_deployment(&minimal("chat"), 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        let pod = pod_spec(&d);
        let psc = pod.security_context.as_ref().expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault")
        );
        let containers = pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten());
        for c in containers {
            let sc = c
                .security_context
                .as_ref()
                .expect("container security context");
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
            assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
            let drop = sc.capabilities.as_ref().and_then(|c| c.drop.clone());
            assert_eq!(drop, Some(vec!["ALL".to_string()]), "{}", c.name);
            assert!(
                sc.capabilities
                    .as_ref()
                    .and_then(|c| c.add.as_ref())
                    .is_none(),
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn labels_and_selector_match_the_pod_template() {
        let d = build_deployment(&minimal("chat"), 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        let spec = d.spec.as_ref().expect("spec");
        let selector = spec.selector.match_labels.as_ref().expect("match labels");
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .expect("pod labels");
        for (k, v) in selector {
            assert_eq!(
                pod_labels.get(k),
                Some(v),
                "pod template lacks selector label {k}"
            );
        }
        assert_eq!(
            pod_labels
                .get("modelfleet.dev/deployment")
                .map(String::as_str),
            Some("chat")
        );
        assert_eq!(
            pod_labels.get("app.kubernetes.io/name").map(String::as_str),
            Some("modelfleet-engine")
        );
        assert_eq!(
            pod_labels
                .get("app.kubernetes.io/instance")
                .map(String::as_str),
            Some("chat")
        );
    }

    #[test]
    fn a_new_revision_changes_the_pod_template_but_not_the_selector() {
        let before =
            build_deployment(&minimal("chat"), 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        let mut md = minimal("chat");
        md.spec.model.revision = "sha256:5f1e9c".into();
        let after = build_deployment(&md, 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        let (b, a) = (before.spec.expect("spec"), after.spec.expect("spec"));
        assert_ne!(b.template, a.template);
        assert_eq!(b.selector, a.selector);
        let annotations = a
            .template
            .metadata
            .and_then(|m| m.annotations)
            .expect("annotations");
        assert_eq!(
            annotations.get(REVISION_ANNOTATION).map(String::as_str),
            Some("sha256:5f1e9c")
        );
    }

    #[test]
    fn rolling_update_keeps_full_capacity_by_default() {
        let d = build_deployment(&minimal("chat"), 3, DEFAULT_ENGINE_IMAGE).expect("deployment");
        let spec = d.spec.expect("spec");
        assert_eq!(spec.replicas, Some(3));
        let strategy = spec.strategy.expect("strategy");
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        let rolling = strategy.rolling_update.expect("rolling update");
        assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
        assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
        assert_eq!(spec.progress_deadline_seconds, Some(900));
    }

    #[test]
    fn progress_deadline_accepts_go_durations() {
        let mut md = minimal("chat");
        md.spec.rollout.progress_deadline = "1h30m".into();
        let d = build_deployment(&md, 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        assert_eq!(d.spec.and_then(|s| s.progress_deadline_seconds), Some(5400));
    }

    #[test]
    fn unparsable_progress_deadline_is_an_invalid_spec_naming_the_field() {
        let mut md = minimal("chat");
        md.spec.rollout.progress_deadline = "soon".into();
        let err = build_deployment(&md, 1, DEFAULT_ENGINE_IMAGE).expect_err("must fail");
        assert!(
            err.to_string().contains("spec.rollout.progressDeadline"),
            "{err}"
        );
    }

    #[test]
    fn scheduling_settings_pass_through() {
        let mut md = minimal("chat");
        md.spec.scheduling.priority_class_name = Some("inference-high".into());
        md.spec.scheduling.affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm::default()],
                }),
                ..NodeAffinity::default()
            }),
            ..Affinity::default()
        });
        md.spec.scheduling.topology_spread = vec![TopologySpread {
            topology_key: "topology.kubernetes.io/zone".into(),
            max_skew: 1,
            when_unsatisfiable: WhenUnsatisfiable::DoNotSchedule,
        }];
        let d = build_deployment(&md, 1, DEFAULT_ENGINE_IMAGE).expect("deployment");
        let pod = pod_spec(&d);
        assert_eq!(pod.priority_class_name.as_deref(), Some("inference-high"));
        assert_eq!(pod.affinity, md.spec.scheduling.affinity);
        let spread = pod.topology_spread_constraints.as_ref().expect("spread");
        assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
        assert_eq!(spread[0].when_unsatisfiable, "DoNotSchedule");
        assert_eq!(
            spread[0]
                .label_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(selector_labels(&md))
        );
    }
}
