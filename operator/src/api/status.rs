//! `ModelDeployment.status`: what the operator observed. Written only through the status
//! subresource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Condition types, each in the `metav1.Condition` shape.
pub mod condition {
    /// Enough replicas are available to serve at the requested size.
    pub const READY: &str = "Ready";
    /// A rollout or scale change is under way.
    pub const PROGRESSING: &str = "Progressing";
    /// Something needs a person: the rollout missed its deadline or pods crash-loop.
    pub const DEGRADED: &str = "Degraded";
    /// The queue-depth autoscaler is deciding the replica count.
    pub const SCALING_ACTIVE: &str = "ScalingActive";
    /// A canary rollout's analysis: True while its figures pass (and once promoted), False
    /// once it failed and rolled back, Unknown while it cannot tell (too few requests, or
    /// no figures). Set only while a canary rollout is under way or has ended.
    pub const ROLLOUT_HEALTHY: &str = "RolloutHealthy";
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods that exist, of any revision.
    #[serde(default)]
    pub replicas: i32,
    /// Pods that passed their readiness probe.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods running the pod template of `updatedRevision`.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Replicas the operator asks for.
    #[serde(default)]
    pub desired_replicas: i32,
    /// The revision every available pod runs, once a rollout has finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// The revision the pod template carries (new pods get it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_revision: Option<String>,
    /// When the replica count last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// Waiting requests across all replicas, as the autoscaler last read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<f64>,
    /// Where clients reach the model (OpenAI-compatible HTTP; gRPC is port 50051 of the
    /// same Service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Label selector of the pods, for the `scale` subresource (HPA, KEDA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The canary rollout under way, or the last one, when `spec.rollout.strategy` is
    /// Canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// Ready, Progressing, Degraded, ScalingActive and (with a canary) RolloutHealthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl ModelDeploymentStatus {
    /// The condition of the given type, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// Where a canary rollout stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RolloutPhase {
    /// A step is under way: its canary replicas run and are observed.
    Progressing,
    /// A step's time is up but its analysis could not pass (too few requests, or figures
    /// missing): the step holds until it can, or until promoted or aborted by hand.
    Paused,
    /// Every step passed (or a person promoted it): the stable replicas move to the new
    /// template, then the canary replicas go.
    Promoting,
    /// The new template runs on every replica.
    Promoted,
    /// An analysis failed: the stable replicas are back at full size and the canary
    /// replicas are removed. The spec stays as written; a new template starts over.
    RolledBack,
    /// A person aborted it (the `modelfleet.dev/abort` annotation): as `RolledBack`.
    Aborted,
}

impl RolloutPhase {
    /// Whether the phase is an end: nothing moves until the spec changes.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Promoted | Self::RolledBack | Self::Aborted)
    }

    /// Whether the canary keeps its replicas and steps on.
    pub fn is_stepping(self) -> bool {
        matches!(self, Self::Progressing | Self::Paused)
    }
}

/// A canary rollout: which template, which step, and what the last analysis measured.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The canary's pod template as a short hash: what the `modelfleet.dev/promote` and
    /// `modelfleet.dev/abort` annotations name.
    pub canary: String,
    /// The model revision the canary runs.
    pub revision: String,
    pub phase: RolloutPhase,
    /// The step under way (or the last one reached), from 1 to `steps`.
    pub step: i32,
    /// The number of steps.
    pub steps: i32,
    /// When the step's canary replicas were all ready: its pause and its analysis window
    /// start there. Unset while they start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observing_since: Option<Time>,
    /// Replicas of the canary's template.
    pub canary_replicas: i32,
    /// Replicas of the stable template.
    pub stable_replicas: i32,
    /// What is happening and why, in a sentence.
    pub message: String,
    /// The latest analysis of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisStatus>,
}

/// An analysis's outcome.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum AnalysisVerdict {
    /// Every figure within its bound, over enough requests.
    Pass,
    /// A figure out of its bound, over enough requests.
    Fail,
    /// Too few requests, or a figure missing: neither a pass nor a failure.
    Inconclusive,
}

/// One analysis of a step: what was measured and what it means.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStatus {
    pub verdict: AnalysisVerdict,
    /// The step it analysed, from 1.
    pub step: i32,
    /// When it was measured.
    pub measured_at: Time,
    /// The window it covers, in seconds (the step's time so far).
    pub window_seconds: i64,
    /// The canary's pods.
    pub canary: Figures,
    /// The stable pods over the same window.
    pub stable: Figures,
    /// Each bound that failed, or why there is no verdict; empty on a pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// What one side of a canary measured over an analysis window; a figure Prometheus could
/// not give is absent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    /// Requests that ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<f64>,
    /// Of those, the share the engine failed while serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_request_ratio: Option<f64>,
    /// Time to first token, 95th percentile, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_first_token_p95_seconds: Option<f64>,
    /// Inter-token latency, 95th percentile, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inter_token_latency_p95_seconds: Option<f64>,
}
