//! How many replicas a ModelDeployment should run, and who decides: computed here once and
//! read by the reconciler, the autoscaler's ticker and the status alike.

use crate::api::{ModelDeployment, ReplicasSpec};

/// Who decides a ModelDeployment's replica count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authority {
    /// `spec.replicas.count` is set: the `scale` subresource (HPA, KEDA, `kubectl scale`)
    /// or the manifest drives the size, kept within `[min, max]`.
    ScaleSubresource { count: i32 },
    /// `min == max`: a fixed size.
    FixedSize { replicas: i32 },
    /// The built-in queue-depth autoscaler, between `min` and `max`, never below `floor`
    /// by a recommendation (zero is reached only through `scaleToZeroAfter`).
    Autoscaler { min: i32, max: i32, floor: i32 },
}

/// Who decides the size of a ModelDeployment with these bounds.
pub fn authority(replicas: &ReplicasSpec) -> Authority {
    // The schema guarantees 0 <= min <= max; guard anyway so a bad object cannot panic
    // `clamp` or scale below zero.
    let min = replicas.min.max(0);
    let max = replicas.max.max(min);
    match replicas.count {
        Some(count) => Authority::ScaleSubresource {
            count: count.clamp(min, max),
        },
        None if min == max => Authority::FixedSize { replicas: min },
        None => Authority::Autoscaler {
            min,
            max,
            floor: autoscaler_floor(min, max),
        },
    }
}

/// The fewest replicas a queue-depth recommendation may ask for: at least one, so that
/// only `scaleToZeroAfter` ever empties a fleet.
pub fn autoscaler_floor(min: i32, max: i32) -> i32 {
    min.max(1).min(max.max(1))
}

impl Authority {
    pub fn is_autoscaler(&self) -> bool {
        matches!(self, Self::Autoscaler { .. })
    }

    /// The replica count: the fixed one; or the autoscaler's `decision`, else the size the
    /// status last recorded (`held`: a restart or a Prometheus outage keeps it), else the
    /// floor.
    pub fn replicas(&self, decision: Option<i32>, held: Option<i32>) -> i32 {
        match *self {
            Self::ScaleSubresource { count } => count,
            Self::FixedSize { replicas } => replicas,
            Self::Autoscaler { min, max, floor } => decision
                .or(held)
                .map_or(floor, |replicas| replicas.clamp(min, max)),
        }
    }
}

/// The size the status last recorded, once the ModelDeployment has been reconciled.
pub fn held_replicas(md: &ModelDeployment) -> Option<i32> {
    md.status
        .as_ref()
        .filter(|s| s.observed_generation.is_some())
        .map(|s| s.desired_replicas)
}

/// The replica count of `md` given the autoscaler's latest decision, if any.
pub fn replica_count(md: &ModelDeployment, decision: Option<i32>) -> i32 {
    authority(&md.spec.replicas).replicas(decision, held_replicas(md))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(min: i32, max: i32, count: Option<i32>) -> ReplicasSpec {
        ReplicasSpec { min, max, count }
    }

    fn replicas(spec: ReplicasSpec, decision: Option<i32>, held: Option<i32>) -> i32 {
        authority(&spec).replicas(decision, held)
    }

    #[test]
    fn count_wins_over_the_autoscaler_and_what_was_held() {
        assert_eq!(
            authority(&bounds(1, 5, Some(4))),
            Authority::ScaleSubresource { count: 4 }
        );
        assert_eq!(replicas(bounds(1, 5, Some(4)), Some(2), Some(3)), 4);
    }

    #[test]
    fn equal_bounds_are_a_fixed_size() {
        assert_eq!(
            authority(&bounds(3, 3, None)),
            Authority::FixedSize { replicas: 3 }
        );
        assert_eq!(replicas(bounds(3, 3, None), Some(5), Some(1)), 3);
    }

    #[test]
    fn the_autoscaler_decides_then_the_held_size_then_the_floor() {
        let spec = || bounds(1, 5, None);
        assert_eq!(replicas(spec(), Some(3), Some(2)), 3);
        assert_eq!(replicas(spec(), None, Some(2)), 2);
        assert_eq!(replicas(spec(), None, None), 1);
    }

    #[test]
    fn a_fleet_that_may_scale_to_zero_starts_at_one_and_stays_at_zero_once_there() {
        // What the autoscaler's own floor says: zero only through scaleToZeroAfter.
        assert_eq!(replicas(bounds(0, 3, None), None, None), 1);
        assert_eq!(replicas(bounds(0, 3, None), None, Some(0)), 0);
        assert_eq!(replicas(bounds(0, 3, None), Some(0), Some(2)), 0);
    }

    #[test]
    fn results_are_kept_within_the_bounds() {
        assert_eq!(replicas(bounds(1, 5, Some(9)), None, None), 5);
        assert_eq!(replicas(bounds(2, 5, None), Some(0), None), 2);
        assert_eq!(replicas(bounds(2, 5, None), None, Some(7)), 5);
    }

    #[test]
    fn inverted_or_negative_bounds_do_not_panic() {
        assert_eq!(replicas(bounds(4, 2, None), None, None), 4);
        assert_eq!(replicas(bounds(-1, 2, Some(-3)), None, None), 0);
    }
}
