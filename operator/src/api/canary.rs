//! `spec.rollout.strategy` and `spec.rollout.canary`: how a new pod template replaces the old
//! one, and, for a canary, the steps it takes and the analysis that gates each step.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Go-style duration such as `30s`, `5m` or `1h30m` (the pattern every duration field
/// of the spec uses).
const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";

/// How a change of the pod template (a new `spec.model.revision`, new engine settings)
/// reaches the replicas.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RolloutStrategy {
    /// A rolling update gated on readiness: every replica moves to the new template.
    #[default]
    Rolling,
    /// The new template runs beside the old one on a share of the replicas, step by step,
    /// each step gated on the new pods' own metrics; a failing step rolls back by itself.
    Canary,
}

/// The steps of a canary and the analysis that must pass at each.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanarySpec {
    /// The canary's share of the replicas at each step, in order. After the last step
    /// passes, the new template is promoted to every replica.
    #[serde(default = "default_steps")]
    #[schemars(length(min = 1, max = 20))]
    pub steps: Vec<CanaryStep>,
    /// What each step's analysis measures and what it must stay within.
    #[serde(default)]
    pub analysis: AnalysisSpec,
}

impl Default for CanarySpec {
    fn default() -> Self {
        Self {
            steps: default_steps(),
            analysis: AnalysisSpec::default(),
        }
    }
}

/// Two steps, a tenth then half of the replicas, five minutes each.
fn default_steps() -> Vec<CanaryStep> {
    [10, 50]
        .into_iter()
        .map(|weight| CanaryStep {
            weight: Some(weight),
            replicas: None,
            pause: default_pause(),
        })
        .collect()
}

/// One step: how many replicas run the new template, and for how long they are observed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.weight) != has(self.replicas)").message("spec.rollout.canary.steps: each step sets exactly one of weight (a percentage of the replicas) or replicas (a count)"))]
pub struct CanaryStep {
    /// The canary's share of the replicas, in percent, rounded up to at least one replica
    /// (1 to 99: after the last step the canary is promoted to all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 99))]
    pub weight: Option<i32>,
    /// The canary's replicas, as a count (at least one stable replica keeps running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: Option<i32>,
    /// How long the step is observed once its canary replicas are ready, before its
    /// analysis may pass.
    #[serde(default = "default_pause")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub pause: String,
}

fn default_pause() -> String {
    "5m".into()
}

/// What a step's analysis compares, over the step's window, from the engines' own metrics:
/// the canary's pods on their own, and against the stable pods over the same window.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSpec {
    /// Requests the canary must have finished in the step before its analysis can pass;
    /// fewer keep the step waiting.
    #[serde(default = "default_min_requests")]
    #[schemars(range(min = 1, max = 1000000))]
    pub min_requests: i32,
    /// Most of the canary's requests that may fail (the engine failed while serving them),
    /// as a ratio from 0 to 1.
    #[serde(default = "default_max_failed_request_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_failed_request_ratio: f64,
    /// The canary's time-to-first-token p95 may be at most this many times the stable's.
    #[serde(default = "default_max_latency_ratio")]
    #[schemars(range(min = 1.0, max = 1000.0))]
    pub max_time_to_first_token_ratio: f64,
    /// The canary's inter-token latency p95 may be at most this many times the stable's.
    #[serde(default = "default_max_latency_ratio")]
    #[schemars(range(min = 1.0, max = 1000.0))]
    pub max_inter_token_latency_ratio: f64,
    /// An absolute bound on the canary's time-to-first-token p95, in seconds; unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 3600.0))]
    pub max_time_to_first_token_p95_seconds: Option<f64>,
    /// An absolute bound on the canary's inter-token latency p95, in seconds; unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 3600.0))]
    pub max_inter_token_latency_p95_seconds: Option<f64>,
    /// What a step does when a figure cannot be measured (Prometheus unreachable, no series
    /// for the canary or the stable pods). It never passes: `Pause` holds the step until the
    /// figures come back, `Rollback` rolls back.
    #[serde(default)]
    pub missing_metrics: MissingMetrics,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        Self {
            min_requests: default_min_requests(),
            max_failed_request_ratio: default_max_failed_request_ratio(),
            max_time_to_first_token_ratio: default_max_latency_ratio(),
            max_inter_token_latency_ratio: default_max_latency_ratio(),
            max_time_to_first_token_p95_seconds: None,
            max_inter_token_latency_p95_seconds: None,
            missing_metrics: MissingMetrics::default(),
        }
    }
}

fn default_min_requests() -> i32 {
    20
}
fn default_max_failed_request_ratio() -> f64 {
    0.01
}
fn default_max_latency_ratio() -> f64 {
    2.0
}

/// What a step does without the figures it needs. Never a pass.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum MissingMetrics {
    /// Hold the step (the canary keeps its share) until the figures come back.
    #[default]
    Pause,
    /// Roll back.
    Rollback,
}
