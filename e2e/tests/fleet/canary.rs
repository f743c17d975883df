//! Canary rollouts under steady load: a good revision promotes through every step, a bad
//! one (an engine setting that makes time to first token regress several-fold) rolls back
//! by itself with the verdict's figures in the status, and a canary whose Prometheus goes
//! away pauses and never promotes until its figures come back. No client request fails in
//! any of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use modelfleet_e2e::fleet::{EndpointFollower, ModelDeploymentStatus};
use modelfleet_loadgen::{LiveStats, LoadgenError, Report};
use modelfleet_operator::api::condition::ROLLOUT_HEALTHY;
use modelfleet_operator::api::{
    AnalysisSpec, AnalysisVerdict, CanarySpec, CanaryStep, ModelDeployment, RolloutPhase,
    RolloutStrategy,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::{NAME, Scenario, condition, grpc_target, load, served_revision};

const POD_START: Duration = Duration::from_secs(240);
/// Long enough for a canary pod to start, its steps to pass and the stable side to roll.
const ROLLOUT: Duration = Duration::from_secs(420);

/// The example at `replicas` fixed replicas, rolled out as a canary of `steps`, each
/// observed for `pause`. The analysis needs few requests and allows three times the stable's
/// latency: the engines share two cores with everything else here, so their latencies are
/// noisier than on a serving node.
fn canary_example(scenario: &Scenario, replicas: i32, steps: Vec<CanaryStep>) -> ModelDeployment {
    let mut md = scenario.example();
    md.spec.replicas.min = replicas;
    md.spec.replicas.max = replicas;
    md.spec.rollout.strategy = RolloutStrategy::Canary;
    md.spec.rollout.canary = Some(CanarySpec {
        steps,
        analysis: AnalysisSpec {
            min_requests: 10,
            max_time_to_first_token_ratio: 3.0,
            max_inter_token_latency_ratio: 3.0,
            ..AnalysisSpec::default()
        },
    });
    md
}

fn step(weight: Option<i32>, replicas: Option<i32>, pause: &str) -> CanaryStep {
    CanaryStep {
        weight,
        replicas,
        pause: pause.into(),
    }
}

/// Closed-loop load over the Service's ready endpoints, following them as they change.
struct SteadyLoad {
    live: Arc<LiveStats>,
    cancel: CancellationToken,
    running: JoinHandle<Result<Report, LoadgenError>>,
    _follower: EndpointFollower,
}

impl SteadyLoad {
    async fn start(scenario: &Scenario, concurrency: usize) -> Self {
        let targets = scenario
            .ready_endpoints()
            .await
            .iter()
            .map(|a| grpc_target(a))
            .collect();
        let generator = load(targets, concurrency, 16);
        let live = generator.live();
        let cancel = CancellationToken::new();
        let follower = EndpointFollower::start(
            scenario.fleet.client(),
            scenario.namespace.clone(),
            NAME.into(),
            generator.targets(),
            grpc_target,
            cancel.clone(),
        );
        let running = tokio::spawn(generator.run(cancel.clone()));
        let load = Self {
            live,
            cancel,
            running,
            _follower: follower,
        };
        load.wait_for(8).await;
        load
    }

    /// Waits until `more` further requests have succeeded.
    async fn wait_for(&self, more: u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let target = self.live.snapshot().ok + more;
        while self.live.snapshot().ok < target {
            assert!(
                Instant::now() < deadline,
                "the load made no progress: {:?}",
                self.live.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the load; fails if any request failed.
    async fn stop(self, what: &str) -> u64 {
        self.cancel.cancel();
        let report = self.running.await.expect("load task").expect("load run");
        let snapshot = self.live.snapshot();
        assert_eq!(
            snapshot.failed(),
            0,
            "requests failed during {what}: {}",
            report.to_text()
        );
        snapshot.ok
    }
}

fn phase(status: &ModelDeploymentStatus) -> Option<RolloutPhase> {
    status.rollout.as_ref().map(|r| r.phase)
}

async fn canary_deployment_exists(scenario: &Scenario) -> bool {
    Api::<Deployment>::namespaced(scenario.fleet.client(), &scenario.namespace)
        .get_opt(&format!("{NAME}-canary"))
        .await
        .expect("reading the canary Deployment")
        .is_some()
}

/// Every ready endpoint serves `revision`.
async fn assert_serving(scenario: &Scenario, replicas: usize, revision: &str) {
    let endpoints = scenario.ready_endpoints().await;
    assert_eq!(endpoints.len(), replicas, "{endpoints:?}");
    for address in &endpoints {
        assert_eq!(served_revision(address).await, revision, "{address}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_canary_promotes_through_every_step_with_no_failed_request() {
    let started = Instant::now();
    let scenario = Scenario::start("canary-good").await;
    let mut md = canary_example(
        &scenario,
        3,
        vec![step(Some(33), None, "15s"), step(None, Some(2), "15s")],
    );
    scenario.apply(&md).await;
    scenario.wait_ready(3, POD_START).await;
    let load = SteadyLoad::start(&scenario, 6).await;

    let new_revision = format!("{}-rebuilt", md.spec.model.revision);
    md.spec.model.revision = new_revision.clone();
    scenario.apply(&md).await;
    let status = scenario
        .wait_status("the canary at step 2", ROLLOUT, |s| {
            s.rollout.as_ref().is_some_and(|r| r.step == 2)
                || phase(s) == Some(RolloutPhase::RolledBack)
        })
        .await;
    let rollout = status.rollout.clone().expect("a rollout");
    assert_eq!(rollout.revision, new_revision);
    assert_ne!(rollout.phase, RolloutPhase::RolledBack, "{rollout:#?}");
    let status = scenario
        .wait_status("the canary promoted", ROLLOUT, |s| {
            phase(s) == Some(RolloutPhase::Promoted) || phase(s) == Some(RolloutPhase::RolledBack)
        })
        .await;
    let rollout = status.rollout.clone().expect("a rollout");
    assert_eq!(rollout.phase, RolloutPhase::Promoted, "{rollout:#?}");
    assert_eq!((rollout.step, rollout.steps), (2, 2));
    assert_eq!(
        rollout.analysis.as_ref().map(|a| a.verdict),
        Some(AnalysisVerdict::Pass),
        "{rollout:#?}"
    );
    assert_eq!(
        condition(&status, ROLLOUT_HEALTHY).map(|c| c.status.as_str()),
        Some("True")
    );
    scenario.wait_ready(3, POD_START).await;
    assert!(
        !canary_deployment_exists(&scenario).await,
        "the canary Deployment is gone"
    );
    load.wait_for(8).await;
    let served = load.stop("the canary's promotion").await;
    assert_serving(&scenario, 3, &new_revision).await;
    for reason in ["CanaryStarted", "CanaryStepPassed", "CanaryPromoted"] {
        assert!(
            !scenario.event_messages(reason).await.is_empty(),
            "no {reason} event"
        );
    }
    eprintln!(
        "canary promoted: {:.0}s, {served} requests, none failed",
        started.elapsed().as_secs_f64()
    );
    scenario.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_regresses_time_to_first_token_rolls_back_by_itself() {
    let started = Instant::now();
    let scenario = Scenario::start("canary-bad").await;
    let mut md = canary_example(&scenario, 2, vec![step(Some(50), None, "30s")]);
    scenario.apply(&md).await;
    scenario.wait_ready(2, POD_START).await;
    let old_revision = md.spec.model.revision.clone();
    let load = SteadyLoad::start(&scenario, 4).await;

    // A real misconfiguration: one token per engine step, so every prompt takes as many
    // steps as it has tokens before its first token.
    let new_revision = format!("{old_revision}-slow");
    md.spec.model.revision = new_revision.clone();
    md.spec
        .engine
        .extra_args
        .extend(["--max-num-batched-tokens".to_string(), "1".to_string()]);
    scenario.apply(&md).await;
    let status = scenario
        .wait_status("the canary rolled back", ROLLOUT, |s| {
            phase(s) == Some(RolloutPhase::RolledBack) || phase(s) == Some(RolloutPhase::Promoting)
        })
        .await;
    let rollout = status.rollout.clone().expect("a rollout");
    assert_eq!(rollout.phase, RolloutPhase::RolledBack, "{rollout:#?}");
    let analysis = rollout.analysis.clone().expect("the failing analysis");
    assert_eq!(analysis.verdict, AnalysisVerdict::Fail);
    assert!(
        analysis
            .reasons
            .iter()
            .any(|r| r.contains("time-to-first-token p95")),
        "{analysis:#?}"
    );
    let canary_ttft = analysis
        .canary
        .time_to_first_token_p95_seconds
        .expect("measured");
    let stable_ttft = analysis
        .stable
        .time_to_first_token_p95_seconds
        .expect("measured");
    assert!(canary_ttft > 3.0 * stable_ttft, "{analysis:#?}");
    assert!(
        rollout.message.contains("rolled back"),
        "{}",
        rollout.message
    );
    assert_eq!(
        condition(&status, ROLLOUT_HEALTHY).map(|c| (c.status.as_str(), c.reason.as_str())),
        Some(("False", "AnalysisFailed"))
    );

    // The canary goes once the stable side is back at full size; the spec stays as written.
    let deadline = Instant::now() + POD_START;
    while canary_deployment_exists(&scenario).await {
        assert!(Instant::now() < deadline, "the canary Deployment stayed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    scenario.wait_ready(2, POD_START).await;
    load.wait_for(8).await;
    let served = load.stop("the canary's rollback").await;
    assert_serving(&scenario, 2, &old_revision).await;
    let stored =
        modelfleet_e2e::fleet::model_deployments(&scenario.fleet.client(), &scenario.namespace)
            .get(NAME)
            .await
            .expect("the ModelDeployment");
    assert_eq!(
        stored.spec.model.revision, new_revision,
        "the spec is left as written"
    );
    assert_eq!(
        phase(&scenario.status().await),
        Some(RolloutPhase::RolledBack)
    );
    assert!(
        scenario
            .event_messages("CanaryRolledBack")
            .await
            .iter()
            .any(|m| m.contains("time-to-first-token")),
        "no CanaryRolledBack event with the verdict"
    );
    eprintln!(
        "canary rolled back: {:.0}s, canary TTFT p95 {canary_ttft}s against {stable_ttft}s, \
         {served} requests, none failed",
        started.elapsed().as_secs_f64()
    );
    scenario.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_without_prometheus_pauses_and_never_promotes_until_it_returns() {
    let started = Instant::now();
    let mut scenario = Scenario::start("canary-blind").await;
    let mut md = canary_example(&scenario, 2, vec![step(Some(50), None, "20s")]);
    scenario.apply(&md).await;
    scenario.wait_ready(2, POD_START).await;
    let load = SteadyLoad::start(&scenario, 4).await;

    let new_revision = format!("{}-rebuilt", md.spec.model.revision);
    md.spec.model.revision = new_revision.clone();
    scenario.apply(&md).await;
    scenario
        .wait_status("the canary under observation", ROLLOUT, |s| {
            s.rollout
                .as_ref()
                .is_some_and(|r| r.observing_since.is_some())
        })
        .await;
    scenario.fleet.prometheus_mut().stop();
    let status = scenario
        .wait_status("the canary paused", ROLLOUT, |s| {
            phase(s).is_some_and(|p| p != RolloutPhase::Progressing)
        })
        .await;
    let rollout = status.rollout.clone().expect("a rollout");
    assert_eq!(rollout.phase, RolloutPhase::Paused, "{rollout:#?}");
    assert_eq!(
        condition(&status, ROLLOUT_HEALTHY).map(|c| c.status.as_str()),
        Some("Unknown")
    );
    // Held: well past its pause, the canary neither promotes nor rolls back.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let held = scenario.status().await;
    assert_eq!(phase(&held), Some(RolloutPhase::Paused), "{held:#?}");
    assert!(canary_deployment_exists(&scenario).await);

    // The positive control: with its figures back, the same canary promotes.
    scenario
        .fleet
        .prometheus_mut()
        .start_again()
        .await
        .expect("restarting Prometheus");
    let status = scenario
        .wait_status("the canary promoted", ROLLOUT, |s| {
            phase(s) == Some(RolloutPhase::Promoted) || phase(s) == Some(RolloutPhase::RolledBack)
        })
        .await;
    assert_eq!(phase(&status), Some(RolloutPhase::Promoted), "{status:#?}");
    scenario.wait_ready(2, POD_START).await;
    load.wait_for(8).await;
    let served = load.stop("the paused canary").await;
    assert_serving(&scenario, 2, &new_revision).await;
    assert!(!scenario.event_messages("CanaryPaused").await.is_empty());
    eprintln!(
        "canary paused without Prometheus, promoted after: {:.0}s, {served} requests, none failed",
        started.elapsed().as_secs_f64()
    );
    scenario.shutdown().await;
}
