//! The user-visible transitions between two statuses, each of which becomes an Event.
//! Pure: the reconciler publishes what this returns.

use crate::api::{Figures, ModelDeploymentStatus, RolloutPhase, RolloutStatus, condition};
use crate::conditions::is_true;

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Normal,
    Warning,
}

/// An event to publish on the ModelDeployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub severity: Severity,
    /// PascalCase, shown as REASON by `kubectl get events`.
    pub reason: String,
    pub note: String,
    /// What changed, in a word. Repeats of one (reason, action) pair are folded into one
    /// Event whose count rises and whose note stays the first one's, so changes that differ
    /// (1 to 2 replicas, then 2 to 3) need actions that differ.
    pub action: String,
}

impl Transition {
    fn normal(reason: &str, note: String) -> Self {
        Self {
            severity: Severity::Normal,
            reason: reason.into(),
            note,
            action: reason.into(),
        }
    }

    fn with_action(mut self, action: String) -> Self {
        self.action = action;
        self
    }
}

/// The transitions from `old` to `new`. `created` says whether this reconcile created the
/// Deployment (its first apply); `scale_cause` gives the reason of a change of size, given
/// its from and to (the autoscaler's explanation).
pub fn transitions(
    old: Option<&ModelDeploymentStatus>,
    new: &ModelDeploymentStatus,
    created: bool,
    scale_cause: impl Fn(i32, i32) -> Option<String>,
) -> Vec<Transition> {
    let mut out = Vec::new();
    if created {
        out.push(Transition::normal(
            "Created",
            format!(
                "created Deployment, Service and PodDisruptionBudget for {} replicas",
                new.desired_replicas
            ),
        ));
    }
    let Some(old) = old else { return out };

    if !created && old.observed_generation.is_some() && old.desired_replicas != new.desired_replicas
    {
        let (from, to) = (old.desired_replicas, new.desired_replicas);
        let note = match scale_cause(from, to) {
            Some(cause) => format!("scaled from {from} to {to} replicas: {cause}"),
            None => format!("scaled from {from} to {to} replicas"),
        };
        out.push(Transition::normal("Scaled", note).with_action(format!("Scale{from}To{to}")));
    }
    if let (Some(before), Some(after)) = (&old.updated_revision, &new.updated_revision)
        && before != after
    {
        out.push(
            Transition::normal(
                "RolloutStarted",
                format!("rolling out revision {after} (was {before})"),
            )
            .with_action(format!("Rollout {after}")),
        );
    }
    if let Some(after) = &new.current_revision
        && old.current_revision.as_ref() != Some(after)
    {
        out.push(Transition::normal(
            "RolloutFinished",
            format!("revision {after} runs on all {} replicas", new.replicas),
        ));
    }

    let was_degraded = is_true(&old.conditions, condition::DEGRADED);
    match new.condition(condition::DEGRADED) {
        Some(c) if c.status == "True" && !was_degraded => out.push(Transition {
            severity: Severity::Warning,
            reason: c.reason.clone(),
            note: c.message.clone(),
            action: c.reason.clone(),
        }),
        Some(c) if c.status != "True" && was_degraded => {
            out.push(Transition::normal("Recovered", "no longer degraded".into()));
        }
        _ => {}
    }
    if let Some(rollout) = &new.rollout {
        out.extend(canary_transition(old.rollout.as_ref(), rollout));
    }
    out
}

/// The event of a canary's move from `old` to `new`, if it moved: started, a step passed,
/// paused, resumed, promoting, promoted, rolled back or aborted. The note carries the
/// analysis's figures where a verdict caused the move.
fn canary_transition(old: Option<&RolloutStatus>, new: &RolloutStatus) -> Option<Transition> {
    let figures = || {
        new.analysis
            .as_ref()
            .map(|a| {
                format!(
                    " (canary {}; stable {})",
                    describe(&a.canary),
                    describe(&a.stable)
                )
            })
            .unwrap_or_default()
    };
    let action = |what: &str| format!("{what}{}Step{}", new.canary, new.step);
    let warning = |reason: &str, note: String| Transition {
        severity: Severity::Warning,
        reason: reason.into(),
        note,
        action: action(reason),
    };
    let Some(old) = old.filter(|old| old.canary == new.canary) else {
        return Some(
            Transition::normal(
                "CanaryStarted",
                format!(
                    "canary of revision {} (template {}) started: {} steps",
                    new.revision, new.canary, new.steps
                ),
            )
            .with_action(action("CanaryStarted")),
        );
    };
    if old.phase == new.phase && old.step == new.step {
        return None;
    }
    let note = format!("{}{}", new.message, figures());
    Some(match new.phase {
        RolloutPhase::Progressing if new.step > old.step => Transition::normal(
            "CanaryStepPassed",
            format!("step {} of {} passed{}", old.step, new.steps, figures()),
        )
        .with_action(action("CanaryStepPassed")),
        RolloutPhase::Progressing => {
            Transition::normal("CanaryResumed", note).with_action(action("CanaryResumed"))
        }
        RolloutPhase::Paused => warning("CanaryPaused", note),
        RolloutPhase::Promoting => {
            Transition::normal("CanaryPromoting", note).with_action(action("CanaryPromoting"))
        }
        RolloutPhase::Promoted => {
            Transition::normal("CanaryPromoted", note).with_action(action("CanaryPromoted"))
        }
        RolloutPhase::RolledBack => warning("CanaryRolledBack", note),
        RolloutPhase::Aborted => warning("CanaryAborted", note),
    })
}

/// `40 requests, 0 failed, TTFT p95 0.12s, inter-token p95 0.03s`, leaving out what is
/// missing.
fn describe(figures: &Figures) -> String {
    let mut parts = Vec::new();
    if let Some(requests) = figures.requests {
        parts.push(format!("{} requests", requests.round()));
    }
    if let Some(ratio) = figures.failed_request_ratio {
        parts.push(format!("{ratio} failed"));
    }
    if let Some(p95) = figures.time_to_first_token_p95_seconds {
        parts.push(format!("TTFT p95 {p95}s"));
    }
    if let Some(p95) = figures.inter_token_latency_p95_seconds {
        parts.push(format!("inter-token p95 {p95}s"));
    }
    if parts.is_empty() {
        "no figures".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn status(
        desired: i32,
        updated: Option<&str>,
        current: Option<&str>,
        degraded: bool,
    ) -> ModelDeploymentStatus {
        ModelDeploymentStatus {
            observed_generation: Some(1),
            desired_replicas: desired,
            replicas: desired,
            updated_revision: updated.map(Into::into),
            current_revision: current.map(Into::into),
            conditions: vec![Condition {
                type_: "Degraded".into(),
                status: if degraded { "True" } else { "False" }.into(),
                reason: if degraded {
                    "CrashLoopBackOff"
                } else {
                    "AsExpected"
                }
                .into(),
                message: "pods crash-looping: a".into(),
                observed_generation: Some(1),
                last_transition_time: Time(Timestamp::UNIX_EPOCH),
            }],
            ..ModelDeploymentStatus::default()
        }
    }

    fn no_cause(_: i32, _: i32) -> Option<String> {
        None
    }

    fn reasons(t: &[Transition]) -> Vec<&str> {
        t.iter().map(|t| t.reason.as_str()).collect()
    }

    #[test]
    fn first_apply_is_created_only() {
        let new = status(1, None, None, false);
        assert_eq!(
            reasons(&transitions(None, &new, true, no_cause)),
            vec!["Created"]
        );
    }

    #[test]
    fn unchanged_status_has_no_transitions() {
        let s = status(2, Some("a"), Some("a"), false);
        assert!(transitions(Some(&s), &s, false, no_cause).is_empty());
    }

    #[test]
    fn scale_and_rollout_start_and_finish() {
        let old = status(1, Some("a"), Some("a"), false);
        let rolling = status(3, Some("b"), Some("a"), false);
        assert_eq!(
            reasons(&transitions(Some(&old), &rolling, false, no_cause)),
            vec!["Scaled", "RolloutStarted"]
        );
        let done = status(3, Some("b"), Some("b"), false);
        assert_eq!(
            reasons(&transitions(Some(&rolling), &done, false, no_cause)),
            vec!["RolloutFinished"]
        );
    }

    #[test]
    fn different_changes_get_different_actions_so_events_are_not_folded_together() {
        let one = status(1, Some("a"), Some("a"), false);
        let two = status(2, Some("a"), Some("a"), false);
        let three = status(3, Some("b"), Some("a"), false);
        let first = transitions(Some(&one), &two, false, no_cause);
        let second = transitions(Some(&two), &three, false, no_cause);
        assert_eq!(first[0].action, "Scale1To2");
        assert_eq!(second[0].action, "Scale2To3");
        assert_eq!(second[1].action, "Rollout b");
    }

    #[test]
    fn a_scale_names_its_cause_when_there_is_one() {
        let old = status(1, Some("a"), Some("a"), false);
        let new = status(3, Some("a"), Some("a"), false);
        let t = transitions(Some(&old), &new, false, |from, to| {
            (from == 1 && to == 3).then(|| "queue depth 12 over target 4 per replica".to_string())
        });
        assert_eq!(
            t[0].note,
            "scaled from 1 to 3 replicas: queue depth 12 over target 4 per replica"
        );
        let t = transitions(Some(&old), &new, false, no_cause);
        assert_eq!(t[0].note, "scaled from 1 to 3 replicas");
    }

    #[test]
    fn degraded_warns_once_and_recovery_is_reported() {
        let fine = status(1, Some("a"), None, false);
        let bad = status(1, Some("a"), None, true);
        let t = transitions(Some(&fine), &bad, false, no_cause);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].severity, Severity::Warning);
        assert_eq!(t[0].reason, "CrashLoopBackOff");
        assert!(transitions(Some(&bad), &bad, false, no_cause).is_empty());
        assert_eq!(
            reasons(&transitions(Some(&bad), &fine, false, no_cause)),
            vec!["Recovered"]
        );
    }
}
