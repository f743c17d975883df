//! Conditions in the `metav1.Condition` shape, merged so that `lastTransitionTime` moves
//! only when a condition's status actually changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// One condition as computed now, before merging with what the object already says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub type_: &'static str,
    pub status: Status,
    pub reason: &'static str,
    pub message: String,
}

/// `True`, `False` or `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// The conditions to store: one per observation, in observation order. A condition whose
/// status did not change keeps its `lastTransitionTime`; reason and message follow the
/// latest observation.
pub fn merge(
    previous: &[Condition],
    observations: Vec<Observation>,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    observations
        .into_iter()
        .map(|obs| {
            let status = obs.status.as_str();
            let since = previous
                .iter()
                .find(|c| c.type_ == obs.type_ && c.status == status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: obs.type_.to_string(),
                status: status.to_string(),
                reason: obs.reason.to_string(),
                message: obs.message,
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// Whether `conditions` has `type_` with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("timestamp"))
    }

    fn ready(status: Status, reason: &'static str) -> Observation {
        Observation {
            type_: "Ready",
            status,
            reason,
            message: format!("{reason} message"),
        }
    }

    #[test]
    fn new_condition_transitions_now() {
        let merged = merge(
            &[],
            vec![ready(Status::False, "Starting")],
            Some(1),
            &at(100),
        );
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].status, "False");
        assert_eq!(merged[0].last_transition_time, at(100));
        assert_eq!(merged[0].observed_generation, Some(1));
    }

    #[test]
    fn unchanged_status_keeps_transition_time_even_if_reason_changes() {
        let first = merge(
            &[],
            vec![ready(Status::False, "Starting")],
            Some(1),
            &at(100),
        );
        let second = merge(
            &first,
            vec![ready(Status::False, "ReplicasUnavailable")],
            Some(2),
            &at(200),
        );
        assert_eq!(second[0].last_transition_time, at(100));
        assert_eq!(second[0].reason, "ReplicasUnavailable");
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn changed_status_moves_transition_time() {
        let first = merge(
            &[],
            vec![ready(Status::False, "Starting")],
            Some(1),
            &at(100),
        );
        let second = merge(
            &first,
            vec![ready(Status::True, "ReplicasAvailable")],
            Some(1),
            &at(200),
        );
        assert_eq!(second[0].last_transition_time, at(200));
        assert!(is_true(&second, "Ready"));
        assert!(!is_true(&first, "Ready"));
    }

    #[test]
    fn merging_the_same_observation_twice_is_idempotent() {
        let first = merge(
            &[],
            vec![ready(Status::True, "ReplicasAvailable")],
            Some(1),
            &at(100),
        );
        let again = merge(
            &first,
            vec![ready(Status::True, "ReplicasAvailable")],
            Some(1),
            &at(300),
        );
        assert_eq!(first, again);
    }
}
