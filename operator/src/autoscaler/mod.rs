//! The queue-depth autoscaler.
//!
//! - [`policy`]: `spec.replicas` and `spec.autoscaling`, parsed.
//! - [`scaler`]: the pure decision, one reading per tick, with stabilization windows.
//! - [`promql`]: the query text, asked through the contract's Prometheus HTTP API client
//!   ([`modelfleet_contract::prometheus`]).
//! - [`ticker`]: the loop that reads Prometheus for every ModelDeployment on an interval and
//!   hands each verdict to the reconciler, which applies it like any other desired state.
//!
//! What must survive a restart lives in the ModelDeployment's status: the reconciler holds
//! `status.desiredReplicas` until a new verdict arrives, and a fresh [`scaler::Scaler`] starts
//! from it.

pub mod policy;
pub mod promql;
pub mod scaler;
pub mod ticker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kube::runtime::reflector::ObjectRef;

use crate::api::WatchedModelDeployment;
pub use policy::{Policy, autoscaling_applies};
pub use scaler::{Activity, Decision, Reading, Scaler};

/// How the operator reaches Prometheus and how often it decides.
#[derive(Clone, Debug)]
pub struct AutoscalerConfig {
    /// Base URL of the Prometheus HTTP API, e.g. `http://prometheus.monitoring:9090`.
    pub prometheus_url: String,
    /// Time between two readings of every ModelDeployment.
    pub interval: Duration,
}

/// The autoscaler's latest word on one ModelDeployment, as the reconciler reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// Replicas to run.
    pub replicas: i32,
    /// The queue depth read, rounded to two decimals; `None` when there was no reading.
    pub queue_depth: Option<f64>,
    pub activity: Activity,
    /// `spec.autoscaling.targetQueueDepth`, for messages.
    pub target_queue_depth: f64,
    /// The last change this autoscaler made: from, to, and why.
    pub last_change: Option<(i32, i32, String)>,
}

impl Verdict {
    /// Why the size went from `from` to `to`, if this autoscaler's last change brought it
    /// there in the same direction. The status may skip a step the autoscaler took (1 to 2
    /// to 3 between two reconciles reads as 1 to 3); the last change's cause explains the
    /// size reached all the same.
    pub fn cause_of(&self, from: i32, to: i32) -> Option<&str> {
        match &self.last_change {
            Some((f, t, cause)) if *t == to && (t > f) == (to > from) => Some(cause),
            _ => None,
        }
    }
}

/// Verdicts by ModelDeployment, shared by the ticker (writes) and the reconciler (reads).
#[derive(Clone, Debug, Default)]
pub struct Verdicts(Arc<Mutex<HashMap<ObjectRef<WatchedModelDeployment>, Verdict>>>);

impl Verdicts {
    pub fn get(&self, object: &ObjectRef<WatchedModelDeployment>) -> Option<Verdict> {
        self.lock().get(object).cloned()
    }

    /// Stores `verdict`; says whether it differs from the one stored before.
    pub fn set(&self, object: ObjectRef<WatchedModelDeployment>, verdict: Verdict) -> bool {
        self.lock().insert(object, verdict.clone()).as_ref() != Some(&verdict)
    }

    pub fn remove(&self, object: &ObjectRef<WatchedModelDeployment>) {
        self.lock().remove(object);
    }

    /// Keeps only the verdicts whose object `keep` accepts.
    pub fn retain(&self, keep: impl Fn(&ObjectRef<WatchedModelDeployment>) -> bool) {
        self.lock().retain(|object, _| keep(object));
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<WatchedModelDeployment>, Verdict>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(last_change: Option<(i32, i32, String)>) -> Verdict {
        Verdict {
            replicas: 3,
            queue_depth: Some(12.0),
            activity: Activity::Active,
            target_queue_depth: 4.0,
            last_change,
        }
    }

    #[test]
    fn a_change_seen_in_one_step_takes_the_cause_of_the_last_step() {
        let v = verdict(Some((2, 3, "queue depth 12".into())));
        assert_eq!(v.cause_of(2, 3), Some("queue depth 12"));
        assert_eq!(v.cause_of(1, 3), Some("queue depth 12"));
        // Not a change this autoscaler made: another size, or the other direction.
        assert_eq!(v.cause_of(1, 2), None);
        assert_eq!(v.cause_of(4, 3), None);
        assert_eq!(verdict(None).cause_of(1, 3), None);
    }
}
