//! Canary rollouts gated on the engines' own metrics, with automatic rollback.
//!
//! - [`plan`]: `spec.rollout.canary`, parsed; how a step splits the replicas.
//! - [`steps`]: the pure step machine the reconciler runs on every reconcile.
//! - [`verdict`]: the pure verdict of one analysis from its figures.
//! - [`promql`]: the analysis's queries.
//! - [`analyst`]: the loop that measures every canary under way and hands each analysis to
//!   the reconciler.
//! - [`template`]: the pod-template hash that tells the stable template from the canary's.
//! - `reconcile`: what a reconcile reads for the step machine and does with its decision.
//!
//! The stable template runs in the ModelDeployment's Deployment (named as it), the canary's
//! in a second one named `<name>-canary`, both behind the one Service, so traffic follows
//! the replica split. What must survive a restart is in `status.rollout`.

pub mod analyst;
pub mod plan;
pub mod promql;
mod reconcile;
pub mod steps;
pub mod template;
pub mod verdict;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::{ModelDeployment, WatchedModelDeployment};
pub use plan::CanaryPlan;
pub use reconcile::RolloutContext;
pub use steps::{
    Analysis, Command, Decision, Inputs, Observed, ObservedDeployment, StableTemplate, Template,
    decide,
};
pub use template::{TEMPLATE_HASH_LABEL, template_hash};

/// Appended to the ModelDeployment's name, names the canary's Deployment.
pub const CANARY_SUFFIX: &str = "-canary";
/// Naming the canary (`status.rollout.canary`), promotes it now.
pub const PROMOTE_ANNOTATION: &str = "modelfleet.dev/promote";
/// Naming the canary (`status.rollout.canary`), aborts it: as a failed analysis.
pub const ABORT_ANNOTATION: &str = "modelfleet.dev/abort";

/// The name of `md`'s canary Deployment.
pub fn canary_name(md: &ModelDeployment) -> String {
    format!("{}{CANARY_SUFFIX}", md.name_any())
}

/// The order the annotations give about the canary `hash`, if any: abort wins.
pub fn command(md: &ModelDeployment, hash: &str) -> Option<Command> {
    let names = |key: &str| md.annotations().get(key).is_some_and(|v| v.trim() == hash);
    if names(ABORT_ANNOTATION) {
        Some(Command::Abort)
    } else if names(PROMOTE_ANNOTATION) {
        Some(Command::Promote)
    } else {
        None
    }
}

/// The latest analysis per ModelDeployment, shared by the analyst (writes) and the
/// reconciler (reads).
#[derive(Clone, Debug, Default)]
pub struct Analyses(Arc<Mutex<HashMap<ObjectRef<WatchedModelDeployment>, Analysis>>>);

impl Analyses {
    pub fn get(&self, object: &ObjectRef<WatchedModelDeployment>) -> Option<Analysis> {
        self.lock().get(object).cloned()
    }

    /// Stores `analysis`; says whether it differs from the one stored before.
    pub fn set(&self, object: ObjectRef<WatchedModelDeployment>, analysis: Analysis) -> bool {
        self.lock().insert(object, analysis.clone()).as_ref() != Some(&analysis)
    }

    pub fn retain(&self, keep: impl Fn(&ObjectRef<WatchedModelDeployment>) -> bool) {
        self.lock().retain(|object, _| keep(object));
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<WatchedModelDeployment>, Analysis>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::test_support::minimal;

    #[test]
    fn an_order_counts_only_when_it_names_the_canary_and_abort_wins() {
        let mut md = minimal("chat");
        assert_eq!(command(&md, "abc"), None);
        md.annotations_mut()
            .insert(PROMOTE_ANNOTATION.into(), "abc".into());
        assert_eq!(command(&md, "abc"), Some(Command::Promote));
        assert_eq!(command(&md, "def"), None, "an order about another canary");
        md.annotations_mut()
            .insert(ABORT_ANNOTATION.into(), " abc ".into());
        assert_eq!(command(&md, "abc"), Some(Command::Abort));
        assert_eq!(canary_name(&md), "chat-canary");
    }
}
