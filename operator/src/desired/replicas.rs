//! How many replicas a ModelDeployment should run.

use crate::api::ReplicasSpec;

/// The replica count to run: the `scale` subresource's `count` when set (HPA, KEDA or
/// `kubectl scale` drive the fleet), else the autoscaler's last decision, else `min`.
/// Always kept within `[min, max]` so neither source can escape the bounds the user set.
pub fn desired_replicas(replicas: &ReplicasSpec, autoscaler_decision: Option<i32>) -> i32 {
    let wanted = replicas
        .count
        .or(autoscaler_decision)
        .unwrap_or(replicas.min);
    // The schema guarantees min <= max; guard anyway so a bad object cannot panic `clamp`.
    wanted.clamp(replicas.min, replicas.max.max(replicas.min))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(min: i32, max: i32, count: Option<i32>) -> ReplicasSpec {
        ReplicasSpec { min, max, count }
    }

    #[test]
    fn defaults_to_min_without_count_or_decision() {
        assert_eq!(desired_replicas(&bounds(2, 5, None), None), 2);
    }

    #[test]
    fn count_wins_over_the_autoscaler() {
        assert_eq!(desired_replicas(&bounds(1, 5, Some(4)), Some(2)), 4);
    }

    #[test]
    fn autoscaler_decision_is_used_without_count() {
        assert_eq!(desired_replicas(&bounds(1, 5, None), Some(3)), 3);
    }

    #[test]
    fn results_are_clamped_to_bounds() {
        assert_eq!(desired_replicas(&bounds(1, 5, Some(9)), None), 5);
        assert_eq!(desired_replicas(&bounds(2, 5, None), Some(0)), 2);
        assert_eq!(desired_replicas(&bounds(0, 3, Some(0)), None), 0);
    }

    #[test]
    fn inverted_bounds_do_not_panic() {
        assert_eq!(desired_replicas(&bounds(4, 2, None), None), 4);
    }
}
