//! What `spec.replicas` and `spec.autoscaling` ask of the autoscaler, parsed once.

use std::time::Duration;

use crate::api::ModelDeploymentSpec;
#[cfg(doc)]
use crate::desired::Authority;
use crate::desired::{authority, autoscaler_floor};

/// The autoscaling settings of one ModelDeployment, with durations parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Fewest replicas; 0 only matters together with `scale_to_zero_after`.
    pub min: i32,
    pub max: i32,
    /// Waiting requests per replica to aim for (at least 1).
    pub target_queue_depth: f64,
    /// Over how long the queue depth is averaged (the PromQL range).
    pub window: Duration,
    /// How long a higher recommendation must hold before scaling up.
    pub scale_up_stabilization: Duration,
    /// How long a lower recommendation must hold before scaling down.
    pub scale_down_stabilization: Duration,
    /// How long the queue must stay empty before scaling to zero; `None` never scales to
    /// zero (also when `min > 0`).
    pub scale_to_zero_after: Option<Duration>,
}

/// Whether the built-in autoscaler decides the size (see [`Authority`]): not when
/// `spec.replicas.count` is set (the `scale` subresource drives it) and not when
/// `min == max` (a fixed size).
pub fn autoscaling_applies(spec: &ModelDeploymentSpec) -> bool {
    authority(&spec.replicas).is_autoscaler()
}

impl Policy {
    /// The policy of `spec`, or the field that does not parse and why.
    pub fn of(spec: &ModelDeploymentSpec) -> Result<Self, String> {
        let a = &spec.autoscaling;
        let scale_to_zero_after = match &a.scale_to_zero_after {
            Some(text) if spec.replicas.min == 0 => {
                Some(duration("spec.autoscaling.scaleToZeroAfter", text)?)
            }
            _ => None,
        };
        Ok(Self {
            min: spec.replicas.min.max(0),
            max: spec.replicas.max.max(spec.replicas.min).max(1),
            target_queue_depth: f64::from(a.target_queue_depth.max(1)),
            window: duration("spec.autoscaling.window", &a.window)?,
            scale_up_stabilization: duration(
                "spec.autoscaling.scaleUpStabilization",
                &a.scale_up_stabilization,
            )?,
            scale_down_stabilization: duration(
                "spec.autoscaling.scaleDownStabilization",
                &a.scale_down_stabilization,
            )?,
            scale_to_zero_after,
        })
    }

    /// The fewest replicas a queue-depth recommendation may ask for: zero is reached only
    /// through `scale_to_zero_after`.
    pub fn floor(&self) -> i32 {
        autoscaler_floor(self.min, self.max)
    }
}

/// A Go-style duration (`30s`, `1m30s`), as the schema's pattern allows.
fn duration(field: &str, text: &str) -> Result<Duration, String> {
    text.parse::<kube::core::Duration>()
        .map(Duration::from)
        .map_err(|e| format!("{field} {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AutoscalingSpec, ReplicasSpec};
    use crate::desired::test_support::minimal;

    fn spec(min: i32, max: i32, count: Option<i32>) -> ModelDeploymentSpec {
        let mut md = minimal("chat");
        md.spec.replicas = ReplicasSpec { min, max, count };
        md.spec
    }

    #[test]
    fn applies_only_between_distinct_bounds_without_a_count() {
        assert!(autoscaling_applies(&spec(1, 4, None)));
        assert!(!autoscaling_applies(&spec(2, 2, None)));
        assert!(!autoscaling_applies(&spec(1, 4, Some(2))));
    }

    #[test]
    fn durations_parse_and_defaults_hold() {
        let p = Policy::of(&spec(1, 4, None)).expect("defaults parse");
        assert_eq!(p.window, Duration::from_secs(60));
        assert_eq!(p.scale_up_stabilization, Duration::ZERO);
        assert_eq!(p.scale_down_stabilization, Duration::from_secs(300));
        assert_eq!(p.target_queue_depth, 4.0);
        assert_eq!(p.scale_to_zero_after, None);
        assert_eq!(p.floor(), 1);
    }

    #[test]
    fn scale_to_zero_needs_min_zero() {
        let mut s = spec(0, 4, None);
        s.autoscaling = AutoscalingSpec {
            scale_to_zero_after: Some("1m30s".into()),
            ..AutoscalingSpec::default()
        };
        let p = Policy::of(&s).expect("parses");
        assert_eq!(p.scale_to_zero_after, Some(Duration::from_secs(90)));
        assert_eq!(p.floor(), 1);
        s.replicas.min = 1;
        assert_eq!(Policy::of(&s).expect("parses").scale_to_zero_after, None);
    }

    #[test]
    fn an_unparsable_duration_names_its_field() {
        let mut s = spec(1, 4, None);
        s.autoscaling.window = "soon".into();
        let err = Policy::of(&s).expect_err("soon is no duration");
        assert!(err.contains("spec.autoscaling.window"), "{err}");
    }
}
