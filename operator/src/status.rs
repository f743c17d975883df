//! Computes a ModelDeployment's status from its children. Pure: the reconciler fetches the
//! inputs and writes the output only when it differs from what the object already says.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    AnalysisVerdict, ModelDeployment, ModelDeploymentStatus, RolloutPhase, RolloutStatus, condition,
};
use crate::autoscaler::{Activity, Verdict};
use crate::conditions::{self, Observation, Status};
use crate::desired::{Authority, REVISION_ANNOTATION, authority, endpoint, selector_string};
use modelfleet_contract::metrics::QUEUE_DEPTH;

/// The Deployment condition reason that means a rollout missed its progress deadline.
const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
/// The container waiting reason of a crash-looping container.
const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
/// At most this many pod names go into a condition message.
const PODS_NAMED: usize = 3;

/// The condition reason of a spec that cannot run: the object does not decode, or the API
/// server refused a child built from it.
pub const INVALID_SPEC: &str = "InvalidSpec";
/// The condition reason of a child the operator refused to take over.
pub const NOT_OWNED: &str = "NotOwned";

/// Why the reconciler could not put the whole desired state in place. The ModelDeployment is
/// not Ready and is Degraded (it needs a person) until this goes away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// The spec cannot run; the message is the API server's (or the decoder's).
    InvalidSpec(String),
    /// Objects with a child's name that are not this ModelDeployment's, each with why.
    NotOwned(Vec<String>),
}

impl Blocker {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidSpec(_) => INVALID_SPEC,
            Self::NotOwned(_) => NOT_OWNED,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::InvalidSpec(message) => format!("the spec cannot run: {message}"),
            Self::NotOwned(objects) => format!(
                "{}; the operator does not take over objects it does not own: delete or \
                 rename them, or rename this ModelDeployment",
                objects.join("; ")
            ),
        }
    }
}

/// What the reconciler observed of the children.
#[derive(Clone, Debug, Default)]
pub struct Observed<'a> {
    /// The Deployment as the API server returned it after the apply (or as it is, when the
    /// apply was refused), if it is this ModelDeployment's.
    pub deployment: Option<&'a Deployment>,
    /// What kept the desired state from being applied in full.
    pub blocker: Option<&'a Blocker>,
    /// Names of the pods with a crash-looping container.
    pub crash_looping_pods: Vec<String>,
    /// What the queue-depth autoscaler said.
    pub autoscaler: AutoscalerView<'a>,
    /// The canary's Deployment, while one exists.
    pub canary: Option<&'a Deployment>,
    /// The canary rollout as the step machine left it.
    pub rollout: Option<&'a RolloutStatus>,
}

/// The autoscaler as the status reports it.
#[derive(Clone, Debug, Default)]
pub enum AutoscalerView<'a> {
    /// The operator runs without a Prometheus URL: nothing reads the queue depth.
    Off,
    /// No reading yet since the operator started.
    #[default]
    Awaiting,
    /// The latest verdict.
    Verdict(&'a Verdict),
}

/// The status `md` should have, given what was observed and the replica count asked for.
pub fn compute_status(
    md: &ModelDeployment,
    desired_replicas: i32,
    observed: &Observed<'_>,
    now: &Time,
) -> ModelDeploymentStatus {
    let previous = md.status.clone().unwrap_or_default();
    // During a canary the stable Deployment is asked for its share only.
    let stable_replicas = observed
        .rollout
        .map_or(desired_replicas, |r| r.stable_replicas);
    let mut rollout = Rollout::of(observed.deployment, stable_replicas);
    let canary = Rollout::of(observed.canary, 0);
    rollout.replicas += canary.replicas;
    rollout.ready += canary.ready;
    rollout.available += canary.available;

    let updated_revision = if rollout.observed {
        rollout
            .template_revision
            .clone()
            .or(previous.updated_revision.clone())
    } else {
        previous.updated_revision.clone()
    };
    let current_revision = if rollout.complete {
        updated_revision.clone()
    } else {
        previous.current_revision.clone()
    };
    let last_scale_time = if previous.observed_generation.is_some()
        && previous.desired_replicas != desired_replicas
    {
        Some(now.clone())
    } else {
        previous.last_scale_time.clone()
    };

    let mut observations = match observed.blocker {
        None => vec![
            ready(md, desired_replicas, &rollout),
            progressing(&rollout, updated_revision.as_deref(), observed.rollout),
            degraded(&rollout, &observed.crash_looping_pods),
            scaling_active(md, desired_replicas, &observed.autoscaler),
        ],
        Some(blocker) => vec![
            blocked(condition::READY, Status::False, blocker),
            progressing(&rollout, updated_revision.as_deref(), observed.rollout),
            blocked(condition::DEGRADED, Status::True, blocker),
            scaling_active(md, desired_replicas, &observed.autoscaler),
        ],
    };
    observations.extend(observed.rollout.map(rollout_healthy));
    ModelDeploymentStatus {
        observed_generation: md.metadata.generation,
        replicas: rollout.replicas,
        ready_replicas: rollout.ready,
        updated_replicas: rollout.updated,
        desired_replicas,
        current_revision,
        updated_revision,
        last_scale_time,
        queue_depth: match &observed.autoscaler {
            AutoscalerView::Verdict(v) if v.queue_depth.is_some() => v.queue_depth,
            _ => previous.queue_depth,
        },
        endpoint: Some(endpoint(md)),
        selector: Some(selector_string(md)),
        rollout: observed.rollout.cloned(),
        conditions: conditions::merge(
            &previous.conditions,
            observations,
            md.metadata.generation,
            now,
        ),
    }
}

/// The status of an object that does not decode: what it said before, with every condition
/// saying why nothing of it is reconciled (or autoscaled) until its spec is fixed.
pub fn undecodable_status(
    previous: Option<ModelDeploymentStatus>,
    generation: Option<i64>,
    error: &str,
    now: &Time,
) -> ModelDeploymentStatus {
    let previous = previous.unwrap_or_default();
    let blocker = Blocker::InvalidSpec(error.to_string());
    let observations = vec![
        blocked(condition::READY, Status::False, &blocker),
        blocked(condition::PROGRESSING, Status::False, &blocker),
        blocked(condition::DEGRADED, Status::True, &blocker),
        blocked(condition::SCALING_ACTIVE, Status::False, &blocker),
    ];
    ModelDeploymentStatus {
        observed_generation: generation,
        conditions: conditions::merge(&previous.conditions, observations, generation, now),
        ..previous
    }
}

fn blocked(type_: &'static str, status: Status, blocker: &Blocker) -> Observation {
    Observation {
        type_,
        status,
        reason: blocker.reason(),
        message: blocker.message(),
    }
}

/// Names of pods with an init or main container waiting in CrashLoopBackOff.
pub fn crash_looping_pods(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter(|pod| {
            let Some(status) = &pod.status else {
                return false;
            };
            status
                .init_container_statuses
                .iter()
                .chain(status.container_statuses.iter())
                .flatten()
                .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.as_deref())
                .any(|reason| reason == CRASH_LOOP_BACK_OFF)
        })
        .filter_map(|pod| pod.metadata.name.clone())
        .collect()
}

/// The facts about the Deployment's rollout that the conditions are made of.
#[derive(Clone, Debug, Default)]
struct Rollout {
    /// The Deployment controller has seen the latest spec.
    observed: bool,
    /// Every replica runs the latest template and is available, and no old pod is left.
    complete: bool,
    deadline_exceeded: Option<String>,
    template_revision: Option<String>,
    replicas: i32,
    ready: i32,
    updated: i32,
    available: i32,
}

impl Rollout {
    fn of(deployment: Option<&Deployment>, desired: i32) -> Self {
        let Some(deployment) = deployment else {
            return Self::default();
        };
        let status = deployment.status.clone().unwrap_or_default();
        let observed = match (status.observed_generation, deployment.metadata.generation) {
            (Some(seen), Some(generation)) => seen >= generation,
            _ => false,
        };
        let replicas = status.replicas.unwrap_or(0);
        let updated = status.updated_replicas.unwrap_or(0);
        let available = status.available_replicas.unwrap_or(0);
        // The same test `kubectl rollout status` makes.
        let complete =
            observed && updated == desired && replicas == desired && available == desired;
        let deadline_exceeded = status
            .conditions
            .iter()
            .flatten()
            .find(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some(PROGRESS_DEADLINE_EXCEEDED)
            })
            .map(|c| c.message.clone().unwrap_or_default());
        let template_revision = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(REVISION_ANNOTATION).cloned());
        Self {
            observed,
            complete,
            deadline_exceeded: if observed { deadline_exceeded } else { None },
            template_revision,
            replicas,
            ready: status.ready_replicas.unwrap_or(0),
            updated,
            available,
        }
    }
}

/// Ready when at least `max(1, min(desired, replicas.min))` replicas are available: a
/// scale-up beyond the floor the user set does not make a serving fleet unready.
fn ready(md: &ModelDeployment, desired: i32, rollout: &Rollout) -> Observation {
    let obs = |status, reason, message| Observation {
        type_: condition::READY,
        status,
        reason,
        message,
    };
    if desired == 0 {
        return obs(
            Status::False,
            "ScaledToZero",
            "scaled to zero replicas".into(),
        );
    }
    let needed = desired.min(md.spec.replicas.min).max(1);
    let message = format!("{} of {desired} replicas available", rollout.available);
    if rollout.available >= needed {
        obs(Status::True, "ReplicasAvailable", message)
    } else {
        obs(Status::False, "ReplicasUnavailable", message)
    }
}

fn progressing(
    rollout: &Rollout,
    revision: Option<&str>,
    canary: Option<&RolloutStatus>,
) -> Observation {
    let obs = |status, reason, message| Observation {
        type_: condition::PROGRESSING,
        status,
        reason,
        message,
    };
    if let Some(canary) = canary.filter(|c| !c.phase.is_final()) {
        return obs(
            Status::True,
            "CanaryInProgress",
            format!("canary of revision {}: {}", canary.revision, canary.message),
        );
    }
    let revision = revision.unwrap_or("(none yet)");
    if let Some(message) = &rollout.deadline_exceeded {
        obs(Status::False, PROGRESS_DEADLINE_EXCEEDED, message.clone())
    } else if rollout.complete {
        obs(
            Status::False,
            "RolloutComplete",
            format!("revision {revision} runs on every replica"),
        )
    } else if !rollout.observed {
        obs(
            Status::True,
            "Updating",
            "waiting for the Deployment controller to see the new spec".into(),
        )
    } else {
        obs(
            Status::True,
            "RolloutInProgress",
            format!(
                "revision {revision}: {} updated, {} available, {} total replicas",
                rollout.updated, rollout.available, rollout.replicas
            ),
        )
    }
}

fn degraded(rollout: &Rollout, crash_looping: &[String]) -> Observation {
    let obs = |status, reason, message| Observation {
        type_: condition::DEGRADED,
        status,
        reason,
        message,
    };
    if !crash_looping.is_empty() {
        let mut named = crash_looping
            .iter()
            .take(PODS_NAMED)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if crash_looping.len() > PODS_NAMED {
            named.push_str(&format!(" and {} more", crash_looping.len() - PODS_NAMED));
        }
        return obs(
            Status::True,
            CRASH_LOOP_BACK_OFF,
            format!("pods crash-looping: {named}; see `kubectl logs` of those pods"),
        );
    }
    if let Some(message) = &rollout.deadline_exceeded {
        return obs(
            Status::True,
            PROGRESS_DEADLINE_EXCEEDED,
            format!("rollout made no progress within spec.rollout.progressDeadline: {message}"),
        );
    }
    obs(
        Status::False,
        "AsExpected",
        "no failing rollout and no crash-looping pods".into(),
    )
}

/// Whether the canary's figures hold: True while its analysis passes (and once promoted),
/// False once it rolled back or was aborted, Unknown while no verdict can be had.
fn rollout_healthy(rollout: &RolloutStatus) -> Observation {
    let obs = |status, reason, message| Observation {
        type_: condition::ROLLOUT_HEALTHY,
        status,
        reason,
        message,
    };
    let message = rollout.message.clone();
    match rollout.phase {
        RolloutPhase::RolledBack => obs(Status::False, "AnalysisFailed", message),
        RolloutPhase::Aborted => obs(Status::False, "Aborted", message),
        RolloutPhase::Promoted => obs(Status::True, "Promoted", message),
        RolloutPhase::Promoting => obs(Status::True, "Promoting", message),
        RolloutPhase::Paused => obs(Status::Unknown, "AnalysisInconclusive", message),
        RolloutPhase::Progressing => match rollout.analysis.as_ref().map(|a| a.verdict) {
            Some(AnalysisVerdict::Pass) => obs(Status::True, "AnalysisPassing", message),
            Some(AnalysisVerdict::Fail) => obs(Status::False, "AnalysisFailed", message),
            Some(AnalysisVerdict::Inconclusive) => {
                obs(Status::Unknown, "AnalysisInconclusive", message)
            }
            None => obs(Status::Unknown, "AwaitingAnalysis", message),
        },
    }
}

/// Who decides the replica count. The queue-depth autoscaler is active only when neither a
/// fixed size nor the `scale` subresource does, and only while it can read the queue depth.
fn scaling_active(md: &ModelDeployment, desired: i32, view: &AutoscalerView<'_>) -> Observation {
    let obs = |status, reason, message| Observation {
        type_: condition::SCALING_ACTIVE,
        status,
        reason,
        message,
    };
    match authority(&md.spec.replicas) {
        Authority::ScaleSubresource { .. } => obs(
            Status::False,
            "ScaleSubresource",
            format!(
                "spec.replicas.count ({}) is set, so the scale subresource drives the size",
                md.spec.replicas.count.unwrap_or_default()
            ),
        ),
        Authority::FixedSize { replicas } => obs(
            Status::False,
            "FixedSize",
            format!("spec.replicas.min == max == {replicas}"),
        ),
        Authority::Autoscaler { .. } => match view {
            AutoscalerView::Off => obs(
                Status::False,
                "NoPrometheus",
                format!(
                    "the operator runs without --prometheus-url, so nothing reads the queue \
                     depth; holding {desired} replicas"
                ),
            ),
            AutoscalerView::Awaiting => obs(
                Status::Unknown,
                "AwaitingMetrics",
                format!("no queue-depth reading yet; holding {desired} replicas"),
            ),
            AutoscalerView::Verdict(v) => match &v.activity {
                Activity::Active => obs(
                    Status::True,
                    "QueueDepth",
                    format!(
                        "queue depth {} against a target of {} per replica",
                        v.queue_depth.unwrap_or_default(),
                        v.target_queue_depth
                    ),
                ),
                Activity::NoMetrics => obs(
                    Status::False,
                    "NoMetrics",
                    format!(
                        "Prometheus has no {QUEUE_DEPTH} series for this \
                         ModelDeployment (are its pods scraped?); holding {desired} replicas"
                    ),
                ),
                Activity::PrometheusUnavailable(error) => obs(
                    Status::False,
                    "PrometheusUnavailable",
                    format!("cannot query Prometheus ({error}); holding {desired} replicas"),
                ),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateWaiting, ContainerStatus, PodStatus,
    };
    use k8s_openapi::jiff::Timestamp;
    use kube::api::ObjectMeta;

    use super::*;
    use crate::desired::{build_deployment, test_support::minimal};

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("timestamp"))
    }

    /// The Deployment the operator would apply, with the given generation and status.
    fn deployment(
        md: &ModelDeployment,
        replicas: i32,
        generation: i64,
        status: DeploymentStatus,
    ) -> Deployment {
        let mut d =
            build_deployment(md, replicas, crate::api::DEFAULT_ENGINE_IMAGE).expect("deployment");
        d.metadata.generation = Some(generation);
        d.status = Some(status);
        d
    }

    fn dstatus(
        observed: i64,
        replicas: i32,
        updated: i32,
        ready: i32,
        available: i32,
    ) -> DeploymentStatus {
        DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            ..DeploymentStatus::default()
        }
    }

    fn cond<'a>(
        s: &'a ModelDeploymentStatus,
        type_: &str,
    ) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
        s.condition(type_)
            .unwrap_or_else(|| panic!("condition {type_} missing"))
    }

    #[test]
    fn before_the_deployment_exists_nothing_is_ready_and_a_rollout_is_pending() {
        let md = minimal("chat");
        let s = compute_status(&md, 1, &Observed::default(), &at(10));
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(s.desired_replicas, 1);
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(cond(&s, "Progressing").status, "True");
        assert_eq!(cond(&s, "Degraded").status, "False");
        assert_eq!(cond(&s, "ScalingActive").reason, "FixedSize");
        assert_eq!(s.updated_revision, None);
        assert_eq!(s.endpoint.as_deref(), Some("http://chat.ml.svc:8000"));
        assert_eq!(
            s.selector.as_deref(),
            Some("app.kubernetes.io/name=modelfleet-engine,modelfleet.dev/deployment=chat")
        );
    }

    #[test]
    fn rollout_in_progress_moves_updated_revision_but_not_current() {
        let mut md = minimal("chat");
        md.status = Some(ModelDeploymentStatus {
            current_revision: Some("old".into()),
            updated_revision: Some("old".into()),
            ..ModelDeploymentStatus::default()
        });
        md.spec.model.revision = "new".into();
        let d = deployment(&md, 2, 3, dstatus(3, 3, 1, 2, 2));
        let s = compute_status(
            &md,
            2,
            &Observed {
                deployment: Some(&d),
                ..Observed::default()
            },
            &at(10),
        );
        assert_eq!(s.updated_revision.as_deref(), Some("new"));
        assert_eq!(s.current_revision.as_deref(), Some("old"));
        assert_eq!(cond(&s, "Progressing").status, "True");
        assert_eq!(cond(&s, "Progressing").reason, "RolloutInProgress");
        assert_eq!(cond(&s, "Ready").status, "True", "old pods still serve");
        assert_eq!(
            (s.replicas, s.updated_replicas, s.ready_replicas),
            (3, 1, 2)
        );
    }

    #[test]
    fn a_canary_counts_its_pods_and_says_whether_its_analysis_holds() {
        let md = minimal("chat");
        let stable = deployment(&md, 3, 1, dstatus(1, 3, 3, 3, 3));
        let canary = deployment(&md, 1, 1, dstatus(1, 1, 1, 1, 1));
        let mut rollout = RolloutStatus {
            canary: "abc".into(),
            revision: "new".into(),
            phase: RolloutPhase::Progressing,
            step: 1,
            steps: 2,
            observing_since: None,
            canary_replicas: 1,
            stable_replicas: 3,
            message: "step 1 of 2".into(),
            analysis: None,
        };
        let status = |rollout: &RolloutStatus| {
            compute_status(
                &md,
                4,
                &Observed {
                    deployment: Some(&stable),
                    canary: Some(&canary),
                    rollout: Some(rollout),
                    ..Observed::default()
                },
                &at(10),
            )
        };
        let s = status(&rollout);
        assert_eq!(
            (s.replicas, s.ready_replicas, s.desired_replicas),
            (4, 4, 4)
        );
        assert_eq!(s.rollout.as_ref(), Some(&rollout));
        assert_eq!(cond(&s, "RolloutHealthy").status, "Unknown");
        assert_eq!(cond(&s, "RolloutHealthy").reason, "AwaitingAnalysis");
        assert_eq!(cond(&s, "Progressing").reason, "CanaryInProgress");

        rollout.phase = RolloutPhase::RolledBack;
        rollout.message = "rolled back at step 1 of 2: TTFT".into();
        let s = status(&rollout);
        let healthy = cond(&s, "RolloutHealthy");
        assert_eq!(
            (healthy.status.as_str(), healthy.reason.as_str()),
            ("False", "AnalysisFailed")
        );
        assert!(healthy.message.contains("TTFT"));
    }

    #[test]
    fn unobserved_deployment_spec_keeps_the_previous_revisions() {
        let mut md = minimal("chat");
        md.status = Some(ModelDeploymentStatus {
            updated_revision: Some("old".into()),
            ..Default::default()
        });
        md.spec.model.revision = "new".into();
        let d = deployment(&md, 1, 4, dstatus(3, 1, 1, 1, 1));
        let s = compute_status(
            &md,
            1,
            &Observed {
                deployment: Some(&d),
                ..Observed::default()
            },
            &at(10),
        );
        assert_eq!(s.updated_revision.as_deref(), Some("old"));
        assert_eq!(cond(&s, "Progressing").reason, "Updating");
    }

    #[test]
    fn finished_rollout_sets_current_revision_and_ready() {
        let md = minimal("chat");
        let d = deployment(&md, 1, 1, dstatus(1, 1, 1, 1, 1));
        let s = compute_status(
            &md,
            1,
            &Observed {
                deployment: Some(&d),
                ..Observed::default()
            },
            &at(10),
        );
        let revision = Some(md.spec.model.revision.clone());
        assert_eq!(s.current_revision, revision);
        assert_eq!(s.updated_revision, revision);
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Progressing").status, "False");
        assert_eq!(cond(&s, "Progressing").reason, "RolloutComplete");
    }

    #[test]
    fn old_pods_left_over_mean_the_rollout_is_not_finished() {
        let md = minimal("chat");
        let d = deployment(&md, 1, 1, dstatus(1, 2, 1, 2, 2));
        let s = compute_status(
            &md,
            1,
            &Observed {
                deployment: Some(&d),
                ..Observed::default()
            },
            &at(10),
        );
        assert_eq!(s.current_revision, None);
        assert_eq!(cond(&s, "Progressing").status, "True");
    }

    #[test]
    fn ready_needs_the_floor_not_every_desired_replica() {
        let mut md = minimal("chat");
        md.spec.replicas.min = 2;
        md.spec.replicas.max = 6;
        let d = deployment(&md, 5, 1, dstatus(1, 5, 5, 2, 2));
        let s = compute_status(
            &md,
            5,
            &Observed {
                deployment: Some(&d),
                ..Observed::default()
            },
            &at(10),
        );
        assert_eq!(cond(&s, "Ready").status, "True");
        let d = deployment(&md, 5, 1, dstatus(1, 5, 5, 1, 1));
        let s = compute_status(
            &md,
            5,
            &Observed {
                deployment: Some(&d),
                ..Observed::default()
            },
            &at(10),
        );
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(cond(&s, "Ready").message, "1 of 5 replicas available");
    }

    #[test]
    fn scaled_to_zero_is_not_ready() {
        let mut md = minimal("chat");
        md.spec.replicas.min = 0;
        let d = deployment(&md, 0, 1, dstatus(1, 0, 0, 0, 0));
        let s = compute_status(
            &md,
            0,
            &Observed {
                deployment: Some(&d),
                ..Observed::default()
            },
            &at(10),
        );
        assert_eq!(cond(&s, "Ready").reason, "ScaledToZero");
    }

    #[test]
    fn progress_deadline_exceeded_is_degraded_with_the_reason() {
        let md = minimal("chat");
        let mut status = dstatus(1, 1, 1, 0, 0);
        status.conditions = Some(vec![DeploymentCondition {
            type_: "Progressing".into(),
            status: "False".into(),
            reason: Some("ProgressDeadlineExceeded".into()),
            message: Some("ReplicaSet \"chat-6d4\" has timed out progressing.".into()),
            ..DeploymentCondition::default()
        }]);
        let d = deployment(&md, 1, 1, status);
        let s = compute_status(
            &md,
            1,
            &Observed {
                deployment: Some(&d),
                ..Observed::default()
            },
            &at(10),
        );
        let degraded = cond(&s, "Degraded");
        assert_eq!(degraded.status, "True");
        assert_eq!(degraded.reason, "ProgressDeadlineExceeded");
        assert!(
            degraded.message.contains("has timed out progressing"),
            "{}",
            degraded.message
        );
        assert_eq!(cond(&s, "Progressing").status, "False");
    }

    #[test]
    fn crash_looping_pods_are_degraded_and_named() {
        let md = minimal("chat");
        let names: Vec<String> = (1..=5).map(|i| format!("chat-{i}")).collect();
        let s = compute_status(
            &md,
            1,
            &Observed {
                deployment: None,
                crash_looping_pods: names,
                ..Observed::default()
            },
            &at(10),
        );
        let degraded = cond(&s, "Degraded");
        assert_eq!(degraded.status, "True");
        assert_eq!(degraded.reason, "CrashLoopBackOff");
        assert!(
            degraded
                .message
                .contains("chat-1, chat-2, chat-3 and 2 more"),
            "{}",
            degraded.message
        );
    }

    fn pod(name: &str, init_waiting: Option<&str>, main_waiting: Option<&str>) -> Pod {
        let status = |reason: Option<&str>| {
            reason.map(|r| {
                vec![ContainerStatus {
                    name: "c".into(),
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(r.into()),
                            message: None,
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]
            })
        };
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                init_container_statuses: status(init_waiting),
                container_statuses: status(main_waiting),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn crash_looping_is_detected_in_init_and_main_containers() {
        let pods = vec![
            pod("a", None, Some("CrashLoopBackOff")),
            pod("b", Some("CrashLoopBackOff"), None),
            pod("c", None, Some("ContainerCreating")),
            pod("d", None, None),
        ];
        assert_eq!(
            crash_looping_pods(&pods),
            vec!["a".to_string(), "b".to_string()]
        );
    }

    #[test]
    fn recomputing_from_the_same_inputs_gives_the_same_status() {
        let mut md = minimal("chat");
        let d = deployment(&md, 1, 1, dstatus(1, 1, 1, 0, 0));
        let observed = Observed {
            deployment: Some(&d),
            ..Observed::default()
        };
        let first = compute_status(&md, 1, &observed, &at(10));
        md.status = Some(first.clone());
        let second = compute_status(&md, 1, &observed, &at(99));
        assert_eq!(first, second, "no change must mean no status write");
    }

    #[test]
    fn scale_change_records_last_scale_time() {
        let mut md = minimal("chat");
        md.spec.replicas.max = 4;
        let first = compute_status(&md, 1, &Observed::default(), &at(10));
        assert_eq!(first.last_scale_time, None);
        md.status = Some(first);
        let second = compute_status(&md, 3, &Observed::default(), &at(20));
        assert_eq!(second.last_scale_time, Some(at(20)));
    }

    #[test]
    fn an_invalid_spec_is_not_ready_and_degraded_with_the_api_servers_message() {
        let md = minimal("chat");
        let blocker = Blocker::InvalidSpec(
            "Deployment.apps \"chat\" is invalid: spec.template.spec.nodeSelector: Invalid value"
                .into(),
        );
        let s = compute_status(
            &md,
            1,
            &Observed {
                blocker: Some(&blocker),
                ..Observed::default()
            },
            &at(10),
        );
        for (type_, status) in [("Ready", "False"), ("Degraded", "True")] {
            let c = cond(&s, type_);
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                (status, "InvalidSpec")
            );
            assert!(
                c.message.contains("spec.template.spec.nodeSelector"),
                "{}",
                c.message
            );
        }
        assert_eq!(s.observed_generation, Some(1));
    }

    #[test]
    fn a_child_that_is_not_ours_is_named_in_ready_and_degraded() {
        let md = minimal("chat");
        let blocker = Blocker::NotOwned(vec![
            "Service ml/chat exists and is not managed by this ModelDeployment".into(),
        ]);
        let s = compute_status(
            &md,
            1,
            &Observed {
                blocker: Some(&blocker),
                ..Observed::default()
            },
            &at(10),
        );
        let ready = cond(&s, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "NotOwned")
        );
        assert!(
            ready.message.contains("Service ml/chat"),
            "{}",
            ready.message
        );
        assert_eq!(cond(&s, "Degraded").reason, "NotOwned");
    }

    #[test]
    fn an_undecodable_object_keeps_its_figures_and_says_why_nothing_happens() {
        let previous = ModelDeploymentStatus {
            desired_replicas: 3,
            ready_replicas: 3,
            current_revision: Some("r1".into()),
            ..ModelDeploymentStatus::default()
        };
        let s = undecodable_status(
            Some(previous),
            Some(4),
            "spec.rollout.maxSurge: invalid value: integer `3000000000`, expected i32",
            &at(10),
        );
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(
            (
                s.desired_replicas,
                s.ready_replicas,
                s.current_revision.as_deref()
            ),
            (3, 3, Some("r1")),
            "what was running is still described"
        );
        assert_eq!(s.conditions.len(), 4);
        for c in &s.conditions {
            assert_eq!(c.reason, "InvalidSpec", "{}", c.type_);
            assert!(c.message.contains("spec.rollout.maxSurge"), "{}", c.message);
        }
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(cond(&s, "Degraded").status, "True");
    }

    #[test]
    fn scaling_active_says_who_decides_the_size() {
        let mut md = minimal("chat");
        md.spec.replicas.max = 4;
        let s = compute_status(&md, 1, &Observed::default(), &at(10));
        assert_eq!(cond(&s, "ScalingActive").status, "Unknown");
        md.spec.replicas.count = Some(3);
        let s = compute_status(&md, 3, &Observed::default(), &at(10));
        assert_eq!(cond(&s, "ScalingActive").reason, "ScaleSubresource");
    }

    #[test]
    fn scaling_active_follows_the_autoscaler_and_holds_the_size_it_reports() {
        let mut md = minimal("chat");
        md.spec.replicas.max = 4;
        let with = |view| Observed {
            autoscaler: view,
            ..Observed::default()
        };
        let s = compute_status(&md, 2, &with(AutoscalerView::Off), &at(10));
        assert_eq!(cond(&s, "ScalingActive").status, "False");
        assert_eq!(cond(&s, "ScalingActive").reason, "NoPrometheus");

        let mut verdict = Verdict {
            replicas: 3,
            queue_depth: Some(12.0),
            activity: Activity::Active,
            target_queue_depth: 4.0,
            last_change: None,
        };
        let active = verdict.clone();
        let s = compute_status(&md, 3, &with(AutoscalerView::Verdict(&active)), &at(10));
        assert_eq!(cond(&s, "ScalingActive").status, "True");
        assert_eq!(s.queue_depth, Some(12.0));
        md.status = Some(s);

        verdict.activity = Activity::PrometheusUnavailable("connection refused".into());
        verdict.queue_depth = None;
        let s = compute_status(&md, 3, &with(AutoscalerView::Verdict(&verdict)), &at(20));
        let c = cond(&s, "ScalingActive");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "PrometheusUnavailable")
        );
        assert!(c.message.contains("connection refused"), "{}", c.message);
        assert!(c.message.contains("holding 3 replicas"), "{}", c.message);
        assert_eq!(s.queue_depth, Some(12.0), "the last reading stays");
    }
}
