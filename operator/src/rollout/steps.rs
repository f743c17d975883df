//! The canary's step machine: given the spec's plan, what the reconciler observed of the two
//! Deployments, the status it wrote last time, the latest analysis and any order a person
//! gave, which template the stable Deployment runs, how many replicas each side gets, and
//! the rollout status to record. Pure: the reconciler applies what this decides.
//!
//! What must survive a restart is in the status it returns (the step, when its
//! observation began, the phase); the analysis is measured again from Prometheus.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::plan::{CanaryPlan, Split, split};
use crate::api::{AnalysisStatus, AnalysisVerdict, MissingMetrics, RolloutPhase, RolloutStatus};

/// The desired pod template, as the spec asks it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub hash: String,
    pub revision: String,
}

/// What the reconciler read of the two Deployments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The stable Deployment, if it exists.
    pub stable: Option<ObservedDeployment>,
    /// The canary Deployment, if it exists.
    pub canary: Option<ObservedDeployment>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedDeployment {
    /// Its template's hash label; `None` on a Deployment made before canaries existed.
    pub hash: Option<String>,
    /// Its `spec.replicas`.
    pub replicas: i32,
    /// Its ready replicas.
    pub ready: i32,
    /// Whether it has settled: the controller saw its spec and every replica runs the
    /// template and is available (what `kubectl rollout status` waits for).
    pub settled: bool,
}

/// An analysis of one step, as the analyst measured it.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    /// The canary template, step and observation start it measured.
    pub canary: String,
    pub observing_since: Time,
    /// Inconclusive because a figure was missing (not merely too few requests).
    pub missing: bool,
    pub status: AnalysisStatus,
}

/// A person's order, from the promote / abort annotations naming the canary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Promote,
    Abort,
}

/// Which template the stable Deployment runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StableTemplate {
    /// The spec's (a rolling update, or a promotion).
    Desired,
    /// The one it runs now.
    Kept,
}

/// What the reconciler applies.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub stable: StableTemplate,
    pub stable_replicas: i32,
    /// `Some(n)`: a canary Deployment of the spec's template with `n` replicas; `None`: no
    /// canary Deployment (one that exists is deleted).
    pub canary_replicas: Option<i32>,
    pub status: Option<RolloutStatus>,
    /// Reconcile again within this long (a step's time runs out then).
    pub recheck_in: Option<Duration>,
}

/// Everything one decision reads.
pub struct Inputs<'a> {
    /// `None`: `strategy: Rolling`.
    pub plan: Option<&'a CanaryPlan>,
    pub desired: &'a Template,
    pub observed: &'a Observed,
    /// `status.rollout` as last written.
    pub previous: Option<&'a RolloutStatus>,
    /// The latest analysis, if the analyst runs and measured this ModelDeployment.
    pub analysis: Option<&'a Analysis>,
    /// `false` when the operator runs without Prometheus: nothing can pass.
    pub analyst_running: bool,
    pub command: Option<Command>,
    /// Replicas the fleet runs in all (the autoscaler's or the spec's count).
    pub total: i32,
    pub now: &'a Time,
}

/// The decision for one reconcile.
pub fn decide(inputs: &Inputs<'_>) -> Decision {
    let Inputs {
        plan,
        desired,
        observed,
        previous,
        total,
        ..
    } = *inputs;
    let ours = previous.filter(|p| p.canary == desired.hash).cloned();
    let Some(stable) = &observed.stable else {
        // The first Deployment: nothing to compare a canary with.
        return wind_down(observed, StableTemplate::Desired, desired, total, None);
    };
    let Some(plan) = plan else {
        return wind_down(observed, StableTemplate::Desired, desired, total, None);
    };
    // The stable pods already run the spec's template (or were made before canaries, and
    // take this change as a rolling update): finish a promotion, if there is one.
    if stable
        .hash
        .as_deref()
        .is_none_or(|hash| hash == desired.hash)
    {
        let status = ours.map(|mut status| {
            if status.phase != RolloutPhase::Promoted {
                status.phase = RolloutPhase::Promoting;
            }
            status
        });
        let mut decision = wind_down(observed, StableTemplate::Desired, desired, total, status);
        if let Some(status) = &mut decision.status
            && decision.canary_replicas.is_none()
            && status.phase == RolloutPhase::Promoting
        {
            status.phase = RolloutPhase::Promoted;
            status.message = format!("revision {} runs on every replica", status.revision);
        }
        return decision;
    }

    let mut status = ours.unwrap_or_else(|| RolloutStatus {
        canary: desired.hash.clone(),
        revision: desired.revision.clone(),
        phase: RolloutPhase::Progressing,
        step: 1,
        steps: plan.step_count(),
        observing_since: None,
        canary_replicas: 0,
        stable_replicas: stable.replicas,
        message: "starting the canary".into(),
        analysis: None,
    });
    status.steps = plan.step_count();
    if status.phase == RolloutPhase::Promoted {
        // The stable Deployment was put back to another template behind the operator's
        // back; promote again.
        status.phase = RolloutPhase::Promoting;
    }
    if status.phase.is_stepping() {
        match inputs.command {
            Some(Command::Abort) => {
                status.phase = RolloutPhase::Aborted;
                status.message = "aborted by the modelfleet.dev/abort annotation".into();
            }
            Some(Command::Promote) => {
                status.phase = RolloutPhase::Promoting;
                status.message = "promoted by the modelfleet.dev/promote annotation".into();
            }
            None => {}
        }
    }
    match status.phase {
        RolloutPhase::Progressing | RolloutPhase::Paused => step(inputs, plan, status),
        RolloutPhase::Promoting | RolloutPhase::Promoted => wind_down(
            observed,
            StableTemplate::Desired,
            desired,
            total,
            Some(status),
        ),
        RolloutPhase::RolledBack | RolloutPhase::Aborted => {
            wind_down(observed, StableTemplate::Kept, desired, total, Some(status))
        }
    }
}

/// One step of a canary under way.
fn step(inputs: &Inputs<'_>, plan: &CanaryPlan, mut status: RolloutStatus) -> Decision {
    let Inputs {
        desired,
        observed,
        total,
        now,
        ..
    } = *inputs;
    let Some(current) = plan.step(status.step) else {
        // The plan lost steps since: what was passed is all there is.
        status.phase = RolloutPhase::Promoting;
        status.message = format!("promoting revision {}: every step passed", status.revision);
        return wind_down(
            observed,
            StableTemplate::Desired,
            desired,
            total,
            Some(status),
        );
    };
    if total == 0 {
        // Scaled to zero: nothing serves, nothing is measured; the step waits.
        status.canary_replicas = 0;
        status.stable_replicas = 0;
        status.observing_since = None;
        status.message = "scaled to zero; the step resumes when the fleet does".into();
        return stepping(status, 0, 0, None);
    }
    let wanted = split(total, current.share);
    let canary_ready = observed.canary.as_ref().map_or(0, |c| c.ready);
    let stable_replicas = stable_side(total, wanted, canary_ready);

    let Some(since) = status.observing_since.clone() else {
        if canary_ready >= wanted.canary {
            status.observing_since = Some(now.clone());
            status.message = format!(
                "step {} of {}: observing {} canary and {} stable replicas",
                status.step, status.steps, wanted.canary, wanted.stable
            );
            return stepping(status, wanted.stable, wanted.canary, Some(current.pause));
        }
        status.message = format!(
            "step {} of {}: waiting for {} canary replicas to be ready ({canary_ready} are)",
            status.step, status.steps, wanted.canary
        );
        return stepping(status, stable_replicas, wanted.canary, None);
    };

    let analysis = inputs
        .analysis
        .filter(|a| {
            a.canary == status.canary && a.status.step == status.step && a.observing_since == since
        })
        .cloned();
    if let Some(analysis) = &analysis {
        status.analysis = Some(analysis.status.clone());
    }
    let elapsed = seconds_between(&since, now);
    let pause = current.pause.as_secs_f64();
    let fresh = analysis
        .as_ref()
        .filter(|a| seconds_between(&since, &a.status.measured_at) >= pause);

    if let Some(a) = &analysis
        && a.status.verdict == AnalysisVerdict::Fail
    {
        status.phase = RolloutPhase::RolledBack;
        status.message = format!(
            "rolled back at step {} of {}: {}",
            status.step,
            status.steps,
            a.status.reasons.join("; ")
        );
        return wind_down(observed, StableTemplate::Kept, desired, total, Some(status));
    }
    if elapsed < pause {
        status.phase = RolloutPhase::Progressing;
        let left = Duration::from_secs_f64((pause - elapsed).max(0.0));
        return stepping(status, stable_replicas, wanted.canary, Some(left));
    }
    match fresh {
        Some(a) if a.status.verdict == AnalysisVerdict::Pass => {
            if status.step >= plan.step_count() {
                status.phase = RolloutPhase::Promoting;
                status.message = format!(
                    "promoting revision {}: all {} steps passed",
                    status.revision, status.steps
                );
                return wind_down(
                    observed,
                    StableTemplate::Desired,
                    desired,
                    total,
                    Some(status),
                );
            }
            status.step += 1;
            status.observing_since = None;
            status.phase = RolloutPhase::Progressing;
            status.message = format!("step {} passed", status.step - 1);
            // The next step's share, its canary replicas starting.
            let next = plan
                .step(status.step)
                .map_or(wanted, |s| split(total, s.share));
            let stable = stable_side(total, next, canary_ready);
            stepping(status, stable, next.canary, None)
        }
        Some(a) if a.missing && plan.bounds.missing_metrics == MissingMetrics::Rollback => {
            status.phase = RolloutPhase::RolledBack;
            status.message = format!(
                "rolled back at step {} of {}: figures missing ({})",
                status.step,
                status.steps,
                a.status.reasons.join("; ")
            );
            wind_down(observed, StableTemplate::Kept, desired, total, Some(status))
        }
        Some(a) => {
            status.phase = RolloutPhase::Paused;
            status.message = format!(
                "step {} of {} paused, its analysis cannot pass: {}",
                status.step,
                status.steps,
                a.status.reasons.join("; ")
            );
            stepping(status, stable_replicas, wanted.canary, None)
        }
        None if !inputs.analyst_running => {
            status.phase = RolloutPhase::Paused;
            status.message = format!(
                "step {} of {} paused: the operator runs without --prometheus-url, so no \
                 analysis can pass (promote or abort with the annotations)",
                status.step, status.steps
            );
            stepping(status, stable_replicas, wanted.canary, None)
        }
        // The step's time is up; the analysis of its whole window comes with the next
        // reading.
        None => stepping(
            status,
            stable_replicas,
            wanted.canary,
            Some(Duration::from_secs(1)),
        ),
    }
}

/// The stable side's replicas while the canary moves to `wanted`: it shrinks only as canary
/// replicas become ready, so capacity never dips.
fn stable_side(total: i32, wanted: Split, canary_ready: i32) -> i32 {
    wanted
        .stable
        .max(total - canary_ready.min(wanted.canary))
        .min(total)
}

fn stepping(
    mut status: RolloutStatus,
    stable: i32,
    canary: i32,
    recheck_in: Option<Duration>,
) -> Decision {
    status.stable_replicas = stable;
    status.canary_replicas = canary;
    Decision {
        stable: StableTemplate::Kept,
        stable_replicas: stable,
        canary_replicas: Some(canary),
        status: Some(status),
        recheck_in,
    }
}

/// The stable Deployment at full size with `template`; the canary's replicas kept until the
/// stable side has settled there, then the canary Deployment removed.
fn wind_down(
    observed: &Observed,
    template: StableTemplate,
    desired: &Template,
    total: i32,
    status: Option<RolloutStatus>,
) -> Decision {
    let settled = observed.stable.as_ref().is_some_and(|s| {
        let runs_template = match template {
            StableTemplate::Kept => true,
            StableTemplate::Desired => s.hash.as_deref() == Some(desired.hash.as_str()),
        };
        s.settled && s.replicas == total && runs_template
    });
    let canary_replicas = match &observed.canary {
        Some(canary) if !settled => Some(canary.replicas),
        _ => None,
    };
    let status = status.map(|mut status| {
        status.stable_replicas = total;
        status.canary_replicas = canary_replicas.unwrap_or(0);
        status.observing_since = None;
        status
    });
    Decision {
        stable: template,
        stable_replicas: total,
        canary_replicas,
        status,
        recheck_in: None,
    }
}

fn seconds_between(from: &Time, to: &Time) -> f64 {
    let span = to.0.duration_since(from.0);
    span.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::api::Figures;
    use crate::rollout::plan::{Bounds, Share, Step};

    const OLD: &str = "0ld0ld0ld0";
    const NEW: &str = "11e411e411";

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(1_700_000_000 + second).expect("a time"))
    }

    fn plan(missing_metrics: MissingMetrics) -> CanaryPlan {
        let step = |percent| Step {
            share: Share::Percent(percent),
            pause: Duration::from_secs(60),
        };
        CanaryPlan {
            steps: vec![step(25), step(50)],
            bounds: Bounds {
                min_requests: 20.0,
                max_failed_request_ratio: 0.01,
                max_time_to_first_token_ratio: 2.0,
                max_inter_token_latency_ratio: 2.0,
                max_time_to_first_token_p95: None,
                max_inter_token_latency_p95: None,
                missing_metrics,
            },
        }
    }

    fn template() -> Template {
        Template {
            hash: NEW.into(),
            revision: "v2".into(),
        }
    }

    fn deployment(hash: &str, replicas: i32, ready: i32, settled: bool) -> ObservedDeployment {
        ObservedDeployment {
            hash: Some(hash.into()),
            replicas,
            ready,
            settled,
        }
    }

    fn observed(stable: ObservedDeployment, canary: Option<ObservedDeployment>) -> Observed {
        Observed {
            stable: Some(stable),
            canary,
        }
    }

    fn analysis(
        status: &RolloutStatus,
        verdict: AnalysisVerdict,
        measured: i64,
        missing: bool,
    ) -> Analysis {
        Analysis {
            canary: status.canary.clone(),
            observing_since: status.observing_since.clone().expect("observing"),
            missing,
            status: AnalysisStatus {
                verdict,
                step: status.step,
                measured_at: at(measured),
                window_seconds: 60,
                canary: Figures::default(),
                stable: Figures::default(),
                reasons: vec!["a reason".into()],
            },
        }
    }

    struct Case {
        plan: CanaryPlan,
        observed: Observed,
        previous: Option<RolloutStatus>,
        analysis: Option<Analysis>,
        command: Option<Command>,
        total: i32,
        now: Time,
    }

    impl Case {
        fn new(observed: Observed) -> Self {
            Self {
                plan: plan(MissingMetrics::Pause),
                observed,
                previous: None,
                analysis: None,
                command: None,
                total: 4,
                now: at(0),
            }
        }

        fn decide(&self) -> Decision {
            decide(&Inputs {
                plan: Some(&self.plan),
                desired: &template(),
                observed: &self.observed,
                previous: self.previous.as_ref(),
                analysis: self.analysis.as_ref(),
                analyst_running: true,
                command: self.command,
                total: self.total,
                now: &self.now,
            })
        }
    }

    /// A canary at step `step` observed since second 0, its replicas ready.
    fn observing(step: i32) -> (Case, RolloutStatus) {
        let mut case = Case::new(observed(
            deployment(OLD, 2, 2, true),
            Some(deployment(NEW, 2, 2, true)),
        ));
        case.previous = Some(RolloutStatus {
            canary: NEW.into(),
            revision: "v2".into(),
            phase: RolloutPhase::Progressing,
            step,
            steps: 2,
            observing_since: Some(at(0)),
            canary_replicas: 2,
            stable_replicas: 2,
            message: String::new(),
            analysis: None,
        });
        let status = case.previous.clone().expect("set");
        (case, status)
    }

    #[test]
    fn a_new_template_starts_a_canary_whose_stable_side_waits_for_it() {
        let case = Case::new(observed(deployment(OLD, 4, 4, true), None));
        let d = case.decide();
        let status = d.status.expect("a rollout");
        assert_eq!(status.phase, RolloutPhase::Progressing);
        assert_eq!((status.step, status.steps), (1, 2));
        assert_eq!(
            status.observing_since, None,
            "not observed before it is ready"
        );
        assert_eq!(d.stable, StableTemplate::Kept);
        // 25% of 4 is one canary; the stable side stays at 4 until it is ready.
        assert_eq!((d.stable_replicas, d.canary_replicas), (4, Some(1)));
    }

    #[test]
    fn observation_starts_when_the_canary_is_ready_and_ends_after_the_pause() {
        let mut case = Case::new(observed(
            deployment(OLD, 4, 4, true),
            Some(deployment(NEW, 1, 1, true)),
        ));
        case.now = at(5);
        let d = case.decide();
        let status = d.status.expect("a rollout");
        assert_eq!(status.observing_since, Some(at(5)));
        assert_eq!((d.stable_replicas, d.canary_replicas), (3, Some(1)));
        assert_eq!(d.recheck_in, Some(Duration::from_secs(60)));

        // Halfway, a passing analysis is not enough.
        case.previous = Some(status.clone());
        case.now = at(35);
        case.analysis = Some(analysis(&status, AnalysisVerdict::Pass, 35, false));
        let d = case.decide();
        assert_eq!(d.status.as_ref().map(|s| s.step), Some(1));
        assert_eq!(d.recheck_in, Some(Duration::from_secs(30)));
        assert_eq!(
            d.status.and_then(|s| s.analysis).map(|a| a.verdict),
            Some(AnalysisVerdict::Pass),
            "the analysis is recorded"
        );
    }

    #[test]
    fn a_pass_over_the_whole_pause_moves_to_the_next_step() {
        let (mut case, status) = observing(1);
        case.now = at(61);
        // Measured before the pause ended: wait for one that covers it.
        case.analysis = Some(analysis(&status, AnalysisVerdict::Pass, 59, false));
        let d = case.decide();
        assert_eq!(d.status.as_ref().map(|s| s.step), Some(1));
        assert_eq!(d.recheck_in, Some(Duration::from_secs(1)));

        case.analysis = Some(analysis(&status, AnalysisVerdict::Pass, 61, false));
        let d = case.decide();
        let next = d.status.expect("a rollout");
        assert_eq!((next.step, next.phase), (2, RolloutPhase::Progressing));
        assert_eq!(next.observing_since, None);
        // 50% of 4: two canaries; both are ready already, so the stable side is at 2.
        assert_eq!((d.stable_replicas, d.canary_replicas), (2, Some(2)));
    }

    #[test]
    fn a_failing_analysis_rolls_back_at_once_keeping_the_canary_until_the_stable_is_back() {
        let (mut case, status) = observing(1);
        case.now = at(20);
        case.analysis = Some(analysis(&status, AnalysisVerdict::Fail, 20, false));
        let d = case.decide();
        let rolled = d.status.clone().expect("a rollout");
        assert_eq!(rolled.phase, RolloutPhase::RolledBack);
        assert!(rolled.message.contains("a reason"), "{}", rolled.message);
        assert_eq!(d.stable, StableTemplate::Kept);
        assert_eq!((d.stable_replicas, d.canary_replicas), (4, Some(2)));

        // Once the stable Deployment has settled at full size, the canary goes, and the
        // rollout stays rolled back while the spec is unchanged.
        case.previous = Some(rolled);
        case.analysis = None;
        case.observed = observed(
            deployment(OLD, 4, 4, true),
            Some(deployment(NEW, 2, 2, true)),
        );
        let d = case.decide();
        assert_eq!((d.stable_replicas, d.canary_replicas), (4, None));
        assert_eq!(d.status.map(|s| s.phase), Some(RolloutPhase::RolledBack));
    }

    #[test]
    fn without_figures_a_step_pauses_and_never_passes_then_resumes() {
        let (mut case, status) = observing(1);
        case.now = at(90);
        case.analysis = Some(analysis(&status, AnalysisVerdict::Inconclusive, 90, true));
        let d = case.decide();
        let paused = d.status.expect("a rollout");
        assert_eq!((paused.phase, paused.step), (RolloutPhase::Paused, 1));
        assert_eq!(d.canary_replicas, Some(1), "the canary keeps its share");

        case.previous = Some(paused.clone());
        case.now = at(200);
        case.analysis = Some(analysis(&paused, AnalysisVerdict::Pass, 200, false));
        let d = case.decide();
        assert_eq!(d.status.map(|s| s.step), Some(2));
    }

    #[test]
    fn without_figures_a_rollback_policy_rolls_back() {
        let (mut case, status) = observing(1);
        case.plan = plan(MissingMetrics::Rollback);
        case.now = at(61);
        case.analysis = Some(analysis(&status, AnalysisVerdict::Inconclusive, 61, true));
        assert_eq!(
            case.decide().status.map(|s| s.phase),
            Some(RolloutPhase::RolledBack)
        );
        // Too few requests is not a missing figure: it waits.
        case.analysis = Some(analysis(&status, AnalysisVerdict::Inconclusive, 61, false));
        assert_eq!(
            case.decide().status.map(|s| s.phase),
            Some(RolloutPhase::Paused)
        );
    }

    #[test]
    fn the_last_pass_promotes_and_the_canary_goes_once_the_stable_runs_the_new_template() {
        let (mut case, status) = observing(2);
        case.now = at(61);
        case.analysis = Some(analysis(&status, AnalysisVerdict::Pass, 61, false));
        let d = case.decide();
        let promoting = d.status.expect("a rollout");
        assert_eq!(promoting.phase, RolloutPhase::Promoting);
        assert_eq!(d.stable, StableTemplate::Desired);
        assert_eq!((d.stable_replicas, d.canary_replicas), (4, Some(2)));

        // The stable Deployment now carries the new template, still rolling.
        case.previous = Some(promoting);
        case.analysis = None;
        case.observed = observed(
            deployment(NEW, 4, 3, false),
            Some(deployment(NEW, 2, 2, true)),
        );
        let d = case.decide();
        assert_eq!(d.canary_replicas, Some(2));
        assert_eq!(
            d.status.as_ref().map(|s| s.phase),
            Some(RolloutPhase::Promoting)
        );

        case.observed = observed(
            deployment(NEW, 4, 4, true),
            Some(deployment(NEW, 2, 2, true)),
        );
        let d = case.decide();
        assert_eq!(
            (d.stable, d.canary_replicas),
            (StableTemplate::Desired, None)
        );
        assert_eq!(d.status.map(|s| s.phase), Some(RolloutPhase::Promoted));
    }

    #[test]
    fn orders_in_annotations_promote_or_abort_a_step_under_way() {
        let (mut case, _) = observing(1);
        case.command = Some(Command::Promote);
        let d = case.decide();
        assert_eq!(d.stable, StableTemplate::Desired);
        assert_eq!(d.status.map(|s| s.phase), Some(RolloutPhase::Promoting));
        case.command = Some(Command::Abort);
        let d = case.decide();
        assert_eq!(d.stable, StableTemplate::Kept);
        assert_eq!(d.status.map(|s| s.phase), Some(RolloutPhase::Aborted));
    }

    #[test]
    fn writing_back_the_stable_template_ends_the_rollout() {
        let (mut case, _) = observing(1);
        let mut rolled = case.previous.clone().expect("set");
        rolled.phase = RolloutPhase::RolledBack;
        rolled.canary = "another000".into();
        case.previous = Some(rolled);
        // The spec's template is the stable one again.
        case.observed = observed(
            deployment(NEW, 4, 4, true),
            Some(deployment("another000", 1, 1, true)),
        );
        let d = case.decide();
        assert_eq!(d.status, None);
        assert_eq!(
            (d.stable, d.canary_replicas),
            (StableTemplate::Desired, None)
        );
    }

    #[test]
    fn a_rolling_update_or_a_first_deployment_runs_no_canary() {
        let case = Case::new(Observed::default());
        let d = case.decide();
        assert_eq!(
            (d.stable, d.stable_replicas, d.canary_replicas),
            (StableTemplate::Desired, 4, None)
        );
        let observed = observed(deployment(OLD, 4, 4, true), None);
        let d = decide(&Inputs {
            plan: None,
            desired: &template(),
            observed: &observed,
            previous: None,
            analysis: None,
            analyst_running: true,
            command: None,
            total: 4,
            now: &at(0),
        });
        assert_eq!(
            (d.stable, d.canary_replicas, d.status),
            (StableTemplate::Desired, None, None)
        );
    }

    #[test]
    fn the_split_follows_the_total_the_autoscaler_asks_for() {
        let (mut case, _) = observing(1);
        case.total = 8;
        case.observed.canary = Some(deployment(NEW, 2, 2, true));
        let d = case.decide();
        assert_eq!((d.stable_replicas, d.canary_replicas), (6, Some(2)));
    }
}
