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
    /// Ready, Progressing, Degraded and ScalingActive.
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
