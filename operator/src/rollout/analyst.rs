//! The loop that measures canaries: every interval, for each ModelDeployment whose status
//! says a canary step is being observed, the figures of the canary's and the stable pods
//! since the observation began, their verdict, and a reconcile when the analysis changed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::plan::CanaryPlan;
use super::promql::{Queries, Side, queries};
use super::verdict::{judge, round4};
use super::{Analyses, Analysis};
use crate::api::{AnalysisStatus, Figures, ModelDeployment, RolloutStatus, WatchedModelDeployment};
use modelfleet_contract::prometheus::PrometheusClient;

/// Canaries measured at once.
const CONCURRENT_CANARIES: usize = 4;

/// Runs until `shutdown` fires, measuring every `interval`.
pub async fn run(
    interval: Duration,
    prometheus: PrometheusClient,
    store: Store<WatchedModelDeployment>,
    analyses: Analyses,
    reconcile: UnboundedSender<ObjectRef<WatchedModelDeployment>>,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let observed: Vec<(Arc<WatchedModelDeployment>, RolloutStatus, Time)> = store
            .state()
            .into_iter()
            .filter_map(|watched| {
                let (rollout, since) = under_observation(watched.0.as_ref().ok()?)?;
                Some((watched, rollout, since))
            })
            .collect();
        analyses.retain(|object| {
            observed
                .iter()
                .any(|(watched, ..)| &ObjectRef::from(watched.as_ref()) == object)
        });
        let measured: Vec<(ObjectRef<WatchedModelDeployment>, Analysis)> =
            futures::stream::iter(observed)
                .map(|(watched, rollout, since)| {
                    let prometheus = prometheus.clone();
                    async move {
                        let md = watched.0.as_ref().ok()?;
                        let plan = CanaryPlan::of(&md.spec).ok().flatten()?;
                        let analysis = analyse(&prometheus, md, &plan, &rollout, since).await;
                        Some((ObjectRef::from(watched.as_ref()), analysis))
                    }
                })
                .buffer_unordered(CONCURRENT_CANARIES)
                .filter_map(futures::future::ready)
                .collect()
                .await;
        for (object, analysis) in measured {
            tracing::debug!(object = %object, verdict = ?analysis.status.verdict, "canary analysis");
            if analyses.set(object.clone(), analysis) && reconcile.unbounded_send(object).is_err() {
                return;
            }
        }
    }
    tracing::info!("canary analyst stopped");
}

/// The rollout of `md` and when its step's observation began, if a step is observed now.
fn under_observation(md: &ModelDeployment) -> Option<(RolloutStatus, Time)> {
    if md.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let rollout = md.status.as_ref()?.rollout.clone()?;
    if !rollout.phase.is_stepping() {
        return None;
    }
    let since = rollout.observing_since.clone()?;
    Some((rollout, since))
}

/// One analysis of the step `rollout` of `md` is at, observed since `since`: the figures of
/// both sides from Prometheus, and their verdict under `plan`'s bounds.
pub async fn analyse(
    prometheus: &PrometheusClient,
    md: &ModelDeployment,
    plan: &CanaryPlan,
    rollout: &RolloutStatus,
    since: Time,
) -> Analysis {
    let Time(now) = crate::controller::now();
    let window = Duration::try_from(now.duration_since(since.0)).unwrap_or(Duration::ZERO);
    let namespace = md.namespace().unwrap_or_default();
    let name = md.name_any();
    let canary_queries = queries(&namespace, &name, Side::Canary, window);
    let stable_queries = queries(&namespace, &name, Side::Stable, window);
    let (canary, stable) = futures::join!(
        figures(prometheus, &canary_queries),
        figures(prometheus, &stable_queries),
    );
    let judgement = judge(&plan.bounds, &canary, &stable);
    Analysis {
        canary: rollout.canary.clone(),
        observing_since: since,
        missing: judgement.missing,
        status: AnalysisStatus {
            verdict: judgement.verdict,
            step: rollout.step,
            measured_at: Time(now),
            window_seconds: i64::try_from(window.as_secs()).unwrap_or(i64::MAX),
            canary,
            stable,
            reasons: judgement.reasons,
        },
    }
}

/// One side's figures; a query that fails, has no series, or is not a number (a quantile
/// of no requests) leaves its figure out.
async fn figures(prometheus: &PrometheusClient, queries: &Queries) -> Figures {
    let value = |query: &str| {
        let query = query.to_string();
        async move {
            match prometheus.query_scalar(&query).await {
                Ok(Some(value)) if value.is_finite() => Some(round4(value)),
                Ok(_) => None,
                Err(error) => {
                    tracing::debug!(%error, "canary figure unavailable");
                    None
                }
            }
        }
    };
    let (requests, failed, ttft, itl) = futures::join!(
        value(&queries.requests),
        value(&queries.failed_request_ratio),
        value(&queries.time_to_first_token_p95),
        value(&queries.inter_token_latency_p95),
    );
    Figures {
        requests,
        failed_request_ratio: failed,
        time_to_first_token_p95_seconds: ttft,
        inter_token_latency_p95_seconds: itl,
    }
}
