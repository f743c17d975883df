//! `ModelDeployment.spec`: what the user asks for.
//!
//! Every field but `model.source` and `model.revision` has a default, so a minimal manifest
//! (name, source, revision) is enough. Defaults are written into the schema, so the API server
//! fills them in and `kubectl get -o yaml` shows what will run.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ModelDeploymentStatus;
use super::canary::{CanarySpec, RolloutStrategy};
use super::rules;
/// `spec.engine.dtype` is the engine's `--dtype`, one enum for both.
pub use modelfleet_contract::serve::Dtype;

/// The image the engine containers run when neither `spec.engine.image` nor the operator's
/// `--engine-image` (the Helm chart's `engine.image`) says otherwise.
pub const DEFAULT_ENGINE_IMAGE: &str =
    concat!("ghcr.io/modelfleet/engine:", env!("CARGO_PKG_VERSION"));

/// A ModelDeployment runs a fleet of inference engines serving one model at one revision.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "modelfleet.dev",
    version = "v1alpha1",
    kind = "ModelDeployment",
    plural = "modeldeployments",
    singular = "modeldeployment",
    shortname = "md",
    category = "modelfleet",
    namespaced,
    status = "ModelDeploymentStatus",
    derive = "PartialEq",
    doc = "A ModelDeployment runs a fleet of ModelFleet inference engines serving one model at one revision.",
    scale(
        spec_replicas_path = ".spec.replicas.count",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas", description = "Replicas that passed their readiness probe"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".status.desiredReplicas", description = "Replicas the operator asks for"),
    printcolumn(name = "Revision", type_ = "string", json_path = ".status.updatedRevision", description = "Model revision the pod template carries"),
    printcolumn(name = "Queue", type_ = "number", json_path = ".status.queueDepth", description = "Waiting requests across all replicas"),
    printcolumn(name = "Status", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].reason", description = "Why the ModelDeployment is or is not Ready (e.g. ReplicasAvailable, InvalidSpec, NotOwned)"),
    printcolumn(name = "Message", type_ = "string", priority = 1, json_path = ".status.conditions[?(@.type==\"Ready\")].message", description = "The Ready condition's message"),
    printcolumn(name = "Rollout", type_ = "string", json_path = ".status.rollout.phase", description = "The canary rollout's phase (Progressing, Paused, Promoting, Promoted, RolledBack, Aborted)"),
    printcolumn(name = "Rollout-Message", type_ = "string", priority = 1, json_path = ".status.rollout.message", description = "What the canary rollout is doing and why"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // The name also names the Service, so it must be a DNS-1035 label.
    validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter, at most 63 characters) because it also names the Service")
)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentSpec {
    /// Which weights to serve.
    pub model: ModelSpec,
    /// How the engine runs them.
    #[serde(default)]
    pub engine: EngineSpec,
    /// What each replica gets from its node.
    #[serde(default)]
    pub resources: ResourcesSpec,
    /// How many replicas may run.
    #[serde(default)]
    pub replicas: ReplicasSpec,
    /// Queue-depth autoscaling between `replicas.min` and `replicas.max`.
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,
    /// How a change of revision or engine settings rolls out.
    #[serde(default)]
    pub rollout: RolloutSpec,
    /// Where replicas may be placed.
    #[serde(default)]
    pub scheduling: SchedulingSpec,
    /// Restrict who may reach the engine pods: with this set, the operator owns a
    /// NetworkPolicy that admits only the listed clients (gRPC and HTTP) and Prometheus (HTTP,
    /// for /metrics). Needs a network plugin that enforces NetworkPolicy. Unset: no policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,
}

/// The model's weights and the name clients use for it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Where the weights live: hf://org/name, s3://bucket/prefix, https://host/path,
    /// pvc://claim/path or file:///node/path.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^(hf|s3|https|pvc|file)://.+$')").message("spec.model.source must be a URI with scheme hf://, s3://, https://, pvc:// or file://"))]
    #[x_kube(validation = Rule::new("!self.matches('[[:space:]]')").message("spec.model.source must not contain spaces or other white space"))]
    #[x_kube(validation = Rule::new("!self.matches('://(.*/)?[.][.]?(/|$)')").message("spec.model.source must not contain '.' or '..' path segments"))]
    #[x_kube(validation = Rule::new("!self.startsWith('hf://') || self.matches('^hf://[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$')").message("spec.model.source: hf:// needs an organisation and a repository name, hf://org/name"))]
    #[x_kube(validation = Rule::new("!self.startsWith('s3://') || self.matches('^s3://[^/]+(/.*)?$')").message("spec.model.source: s3:// needs a bucket, s3://bucket/prefix"))]
    #[x_kube(validation = Rule::new("!self.startsWith('https://') || self.matches('^https://[^/?#@:]+(:[0-9]+)?([/?#].*)?$')").message("spec.model.source: https:// needs a host (and no user:password@), https://host/path"))]
    #[x_kube(validation = Rule::new("!self.startsWith('pvc://') || self.matches('^pvc://[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?(/.*)?$')").message("spec.model.source: pvc:// needs the name of a PersistentVolumeClaim in this namespace, pvc://claim/path"))]
    #[x_kube(validation = Rule::new("!self.startsWith('file://') || self.matches('^file:///[^/].*$')").message("spec.model.source: file:// needs an absolute path on the node below /, file:///path"))]
    pub source: String,
    /// An immutable pin of the weights (commit, ETag or digest). Changing it rolls out the
    /// new weights.
    #[schemars(length(min = 1, max = 256))]
    pub revision: String,
    /// The model name clients ask for; defaults to the ModelDeployment's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub served_name: Option<String>,
}

/// Engine settings; each maps to a `modelfleet-engine serve` flag.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EngineSpec {
    /// The engine image. Unset: the operator's default (its `--engine-image`, which the Helm
    /// chart sets from `engine.image`; without one, ghcr.io/modelfleet/engine:<operator
    /// version>), so upgrading the operator moves such fleets to its engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = rules::IMAGE_PATTERN))]
    pub image: Option<String>,
    /// Numeric precision.
    #[serde(default)]
    pub dtype: Dtype,
    /// Longest sequence (prompt + generated tokens); unset means the model's own limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_model_len: Option<i32>,
    /// Tokens per KV-cache block.
    #[serde(default = "default_block_size")]
    #[x_kube(validation = Rule::new("self in [8, 16, 32, 64, 128]").message("spec.engine.blockSize must be one of 8, 16, 32, 64, 128"))]
    pub block_size: i32,
    /// Most sequences in one batch.
    #[serde(default = "default_max_num_seqs")]
    #[schemars(range(min = 1, max = 4096))]
    pub max_num_seqs: i32,
    /// Share of GPU memory the engine may use for weights and KV cache, in (0, 1].
    #[serde(default = "default_gpu_memory_utilization")]
    #[x_kube(validation = Rule::new("self > 0.0 && self <= 1.0").message("spec.engine.gpuMemoryUtilization must be greater than 0 and at most 1"))]
    pub gpu_memory_utilization: f64,
    /// Further `serve` flags, appended after the ones the operator sets. A flag the operator
    /// sets from a field of this spec (--model, --served-name, --dtype, --block-size, …) is
    /// refused: set the field instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 4096)))]
    #[x_kube(validation = rules::extra_args_rule())]
    pub extra_args: Vec<String>,
    /// A Secret key holding the API key clients must present (HTTP `Authorization: Bearer
    /// <key>`, gRPC `authorization` metadata). The operator mounts that key read-only into
    /// the engine container and passes `--api-key-file`; health and metrics stay open for
    /// probes and Prometheus. Unset: no key is asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
}

/// One key of a Secret in the ModelDeployment's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// The key within the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

impl Default for EngineSpec {
    fn default() -> Self {
        Self {
            image: None,
            dtype: Dtype::default(),
            max_model_len: None,
            block_size: default_block_size(),
            max_num_seqs: default_max_num_seqs(),
            gpu_memory_utilization: default_gpu_memory_utilization(),
            extra_args: Vec::new(),
            api_key_secret_ref: None,
        }
    }
}
fn default_block_size() -> i32 {
    16
}
fn default_max_num_seqs() -> i32 {
    256
}
fn default_gpu_memory_utilization() -> f64 {
    0.9
}

/// What each replica requests from its node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesSpec {
    /// `nvidia.com/gpu` per replica. 0 (the default) runs the engine's CPU backend and
    /// requests no GPU, so a minimal manifest runs on any node with any engine image; 1 or
    /// more runs the CUDA backend (`--backend cuda`) on the GPUs it requests, which needs an
    /// engine image with CUDA 13's NVRTC and cuBLAS.
    #[serde(default = "default_gpus")]
    #[schemars(range(min = 0, max = 16))]
    pub gpus: i32,
    /// The GPU model to schedule on, matched against the node label `nvidia.com/gpu.product`
    /// (e.g. NVIDIA-H100-80GB-HBM3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"),
        length(max = 63)
    )]
    pub gpu_product: Option<String>,
    /// CPU request per replica, a quantity such as `500m` or `4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::positive_quantity_rule("spec.resources.cpu"))]
    pub cpu: Option<Quantity>,
    /// Memory request and limit per replica, a quantity such as `24Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::positive_quantity_rule("spec.resources.memory"))]
    pub memory: Option<Quantity>,
    /// Disk for the model cache (the fetched weights) per replica, a quantity such as
    /// `20Gi`: at least the model's size on disk. It becomes the cache volume's `sizeLimit`
    /// and the pod's `ephemeral-storage` request, so the scheduler places the pod on a node
    /// with room for the weights and the kubelet evicts a pod whose cache outgrows it.
    /// Unset: no limit and no request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::positive_quantity_rule("spec.resources.modelCache"))]
    pub model_cache: Option<Quantity>,
}

impl Default for ResourcesSpec {
    fn default() -> Self {
        Self {
            gpus: default_gpus(),
            gpu_product: None,
            cpu: None,
            memory: None,
            model_cache: None,
        }
    }
}

fn default_gpus() -> i32 {
    0
}

/// Bounds on the replica count, and an optional count that overrides the autoscaler.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.min <= self.max").message("spec.replicas.min must be less than or equal to spec.replicas.max"))]
pub struct ReplicasSpec {
    /// Fewest replicas (0 allows scaling to zero).
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub min: i32,
    /// Most replicas; `min == max` means a fixed size.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max: i32,
    /// A fixed count that drives the fleet instead of the built-in autoscaler, kept within
    /// `[min, max]`. The `scale` subresource (HPA, KEDA, `kubectl scale`) reads and writes
    /// it. While it is unset the built-in autoscaler decides and reading the subresource
    /// fails (the API server says this field does not exist), so an HPA or KEDA reports
    /// FailedGetScale instead of fighting the built-in autoscaler; writing it works. Hand the
    /// fleet over by setting it (`kubectl scale md NAME --replicas=N`, or in the manifest),
    /// and back by removing it: the built-in autoscaler resumes from that size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub count: Option<i32>,
}

impl Default for ReplicasSpec {
    fn default() -> Self {
        Self {
            min: default_min_replicas(),
            max: default_max_replicas(),
            count: None,
        }
    }
}

fn default_min_replicas() -> i32 {
    1
}
fn default_max_replicas() -> i32 {
    1
}

/// A Go-style duration such as `30s`, `5m` or `1h30m`.
const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// Queue-depth autoscaling.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Waiting requests per replica the autoscaler aims for.
    #[serde(default = "default_target_queue_depth")]
    #[schemars(range(min = 1, max = 100000))]
    pub target_queue_depth: i32,
    /// Over how long the queue depth is averaged.
    #[serde(default = "default_window")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub window: String,
    /// How long a higher recommendation must hold before scaling up.
    #[serde(default = "default_scale_up_stabilization")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub scale_up_stabilization: String,
    /// How long a lower recommendation must hold before scaling down.
    #[serde(default = "default_scale_down_stabilization")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub scale_down_stabilization: String,
    /// Scale to zero after this long with no requests (needs `replicas.min: 0`); unset never
    /// scales to zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub scale_to_zero_after: Option<String>,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            target_queue_depth: default_target_queue_depth(),
            window: default_window(),
            scale_up_stabilization: default_scale_up_stabilization(),
            scale_down_stabilization: default_scale_down_stabilization(),
            scale_to_zero_after: None,
        }
    }
}

fn default_target_queue_depth() -> i32 {
    4
}
fn default_window() -> String {
    "1m".into()
}
fn default_scale_up_stabilization() -> String {
    "0s".into()
}
fn default_scale_down_stabilization() -> String {
    "5m".into()
}

/// How new pods replace old ones.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::rollout_not_stuck_rule())]
#[x_kube(validation = Rule::new("!has(self.canary) || self.strategy == 'Canary'").message("spec.rollout.canary is set but spec.rollout.strategy is not Canary: set strategy: Canary, or remove canary"))]
pub struct RolloutSpec {
    /// `Rolling` (the default): a rolling update gated on readiness. `Canary`: the new
    /// template runs on a share of the replicas step by step, each step gated on its own
    /// metrics, and rolls back by itself when they are worse (see `canary`).
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// The steps and analysis of a `Canary` rollout; unset with `strategy: Canary`: two
    /// steps of 10% and 50% of the replicas, five minutes each, with the default analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanarySpec>,
    /// Extra pods allowed during a rollout: a count (0 to 2147483647) or a percentage of the
    /// replicas such as `25%`, rounded up.
    #[serde(default = "default_max_surge")]
    #[schemars(schema_with = "rules::max_surge_schema")]
    pub max_surge: IntOrString,
    /// Pods that may be unavailable during a rollout: a count (0 to 2147483647) or a
    /// percentage of the replicas from `0%` to `100%`, rounded down. 0 keeps full capacity
    /// while new weights load; it cannot be 0 when `maxSurge` is 0 too.
    #[serde(default = "default_max_unavailable")]
    #[schemars(schema_with = "rules::max_unavailable_schema")]
    pub max_unavailable: IntOrString,
    /// How long a rollout may make no progress before it counts as failed (Degraded).
    #[serde(default = "default_progress_deadline")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub progress_deadline: String,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            strategy: RolloutStrategy::default(),
            canary: None,
            max_surge: default_max_surge(),
            max_unavailable: default_max_unavailable(),
            progress_deadline: default_progress_deadline(),
        }
    }
}

fn default_max_surge() -> IntOrString {
    IntOrString::Int(1)
}
fn default_max_unavailable() -> IntOrString {
    IntOrString::Int(0)
}
fn default_progress_deadline() -> String {
    "15m".into()
}

/// Placement constraints, passed to the pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Node labels a node must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate (the `nvidia.com/gpu` taint is tolerated already when
    /// `resources.gpus > 0`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(t, !has(t.operator) || t.operator in ['', 'Exists', 'Equal'])").message("spec.scheduling.tolerations: operator must be Exists or Equal"))]
    #[x_kube(validation = Rule::new("self.all(t, !has(t.effect) || t.effect in ['', 'NoSchedule', 'PreferNoSchedule', 'NoExecute'])").message("spec.scheduling.tolerations: effect must be NoSchedule, PreferNoSchedule or NoExecute (or empty for all)"))]
    #[x_kube(validation = Rule::new("self.all(t, !has(t.operator) || t.operator != 'Exists' || !has(t.value) || t.value == '')").message("spec.scheduling.tolerations: a toleration with operator Exists must not have a value"))]
    #[x_kube(validation = Rule::new("self.all(t, (has(t.key) && t.key != '') || (has(t.operator) && t.operator == 'Exists'))").message("spec.scheduling.tolerations: a toleration without a key must have operator Exists"))]
    #[x_kube(validation = Rule::new("self.all(t, !has(t.tolerationSeconds) || (has(t.effect) && t.effect == 'NoExecute'))").message("spec.scheduling.tolerations: tolerationSeconds needs effect NoExecute"))]
    pub tolerations: Vec<Toleration>,
    /// Node and pod affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// The pods' PriorityClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,
    /// Spread replicas across topology domains (zones, nodes); the label selector is filled
    /// in by the operator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub topology_spread: Vec<TopologySpread>,
}

/// One topology spread constraint over this ModelDeployment's pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TopologySpread {
    /// The node label that defines a domain, e.g. `topology.kubernetes.io/zone`.
    #[schemars(length(min = 1, max = 316))]
    pub topology_key: String,
    /// Largest allowed difference in replica count between two domains.
    #[serde(default = "default_max_skew")]
    #[schemars(range(min = 1))]
    pub max_skew: i32,
    /// What to do when the constraint cannot be met.
    #[serde(default)]
    pub when_unsatisfiable: WhenUnsatisfiable,
}

fn default_max_skew() -> i32 {
    1
}

/// Whether an unsatisfiable spread blocks scheduling.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WhenUnsatisfiable {
    /// Schedule anyway, preferring the least loaded domain.
    #[default]
    ScheduleAnyway,
    /// Leave the pod pending.
    DoNotSchedule,
}

impl WhenUnsatisfiable {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScheduleAnyway => "ScheduleAnyway",
            Self::DoNotSchedule => "DoNotSchedule",
        }
    }
}

/// Who may reach the engine pods. Each peer is a pod selector (pods in this namespace), a
/// namespace selector (every pod in those namespaces), or both (those pods in those
/// namespaces), as in a NetworkPolicy. Traffic from the node itself (the kubelet's probes)
/// is always allowed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Clients allowed on the gRPC and HTTP ports. Empty: none but Prometheus.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub clients: Vec<NetworkPeer>,
    /// Where the Prometheus that scrapes `/metrics` runs (the HTTP port only; the autoscaler
    /// reads queue depth from it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub prometheus: Vec<NetworkPeer>,
}

/// Pods allowed in, by pod labels, namespace labels, or both.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.podSelector) || has(self.namespaceSelector)").message("spec.networkPolicy: each peer needs a podSelector, a namespaceSelector or both"))]
pub struct NetworkPeer {
    /// Pods with these labels (in this namespace, or in the namespaces `namespaceSelector`
    /// selects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// Namespaces with these labels, e.g. `kubernetes.io/metadata.name: monitoring`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}
