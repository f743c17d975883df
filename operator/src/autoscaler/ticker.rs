//! The loop around the pure scaler: every interval, one query per autoscaled
//! ModelDeployment, one step of its [`Scaler`], and a reconcile whenever the verdict changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::prometheus::PrometheusClient;
use super::scaler::round2;
use super::{
    AutoscalerConfig, Policy, Reading, Scaler, Verdict, Verdicts, autoscaling_applies, promql,
};
use crate::api::{ModelDeployment, WatchedModelDeployment, watched_ref};
use crate::desired::desired_replicas;
use crate::metrics::Metrics;

/// Queries in flight at once.
const CONCURRENT_QUERIES: usize = 8;

/// Runs until `shutdown` fires. Verdicts go into `verdicts`; `reconcile` asks the controller
/// to apply one.
pub async fn run(
    config: AutoscalerConfig,
    prometheus: PrometheusClient,
    store: Store<WatchedModelDeployment>,
    verdicts: Verdicts,
    reconcile: UnboundedSender<ObjectRef<WatchedModelDeployment>>,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    tracing::info!(prometheus = %prometheus.url(), interval = ?config.interval, "autoscaler started");
    let mut scalers: HashMap<ObjectRef<WatchedModelDeployment>, Scaler> = HashMap::new();
    let mut ticker = tokio::time::interval(config.interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        // An object that does not decode is skipped (its status says why); the others are
        // autoscaled as ever.
        let autoscaled: Vec<Arc<ModelDeployment>> = store
            .state()
            .iter()
            .filter_map(|watched| watched.0.as_ref().ok())
            .filter(|md| md.meta().deletion_timestamp.is_none() && autoscaling_applies(&md.spec))
            .map(|md| Arc::new(md.clone()))
            .collect();
        // Forget objects that are gone or no longer autoscaled: a later return starts from
        // their status, as after a restart.
        let live: std::collections::HashSet<_> =
            autoscaled.iter().map(|md| watched_ref(md)).collect();
        scalers.retain(|object, _| live.contains(object));
        verdicts.retain(|object| live.contains(object));

        let readings: Vec<(Arc<ModelDeployment>, Policy, Reading)> =
            futures::stream::iter(autoscaled)
                .filter_map(|md| async move {
                    match Policy::of(&md.spec) {
                        Ok(policy) => Some((md, policy)),
                        Err(reason) => {
                            tracing::warn!(object = %object_name(&md), %reason, "not autoscaling");
                            None
                        }
                    }
                })
                .map(|(md, policy)| {
                    let prometheus = prometheus.clone();
                    async move {
                        let reading = read(&prometheus, &md, &policy).await;
                        (md, policy, reading)
                    }
                })
                .buffer_unordered(CONCURRENT_QUERIES)
                .collect()
                .await;

        let now = Timestamp::now();
        for (md, policy, reading) in readings {
            let object = watched_ref(&md);
            if let Reading::Unavailable(error) = &reading {
                metrics.autoscaler_query_failures.inc();
                tracing::debug!(object = %object_name(&md), %error, "queue depth unavailable");
            }
            let scaler = scalers
                .entry(object.clone())
                .or_insert_with(|| Scaler::new(running_replicas(&md)));
            let decision = scaler.step(&policy, &reading, now);
            let last_change = match decision.cause(&policy) {
                Some(cause) => {
                    tracing::info!(
                        object = %object_name(&md),
                        from = decision.previous, to = decision.replicas, %cause, "autoscaling"
                    );
                    Some((decision.previous, decision.replicas, cause))
                }
                None => verdicts.get(&object).and_then(|v| v.last_change),
            };
            let verdict = Verdict {
                replicas: decision.replicas,
                queue_depth: decision.queue_depth.map(round2),
                activity: decision.activity,
                target_queue_depth: policy.target_queue_depth,
                last_change,
            };
            if verdicts.set(object.clone(), verdict) && reconcile.unbounded_send(object).is_err() {
                // The controller is gone; the process is shutting down.
                return;
            }
        }
    }
    tracing::info!("autoscaler stopped");
}

/// The size the reconciler runs now: what the status says was decided, kept in bounds.
fn running_replicas(md: &ModelDeployment) -> i32 {
    let held = md
        .status
        .as_ref()
        .filter(|s| s.observed_generation.is_some())
        .map(|s| s.desired_replicas);
    desired_replicas(&md.spec.replicas, held)
}

async fn read(prometheus: &PrometheusClient, md: &ModelDeployment, policy: &Policy) -> Reading {
    let query = promql::queue_depth(
        &md.namespace().unwrap_or_default(),
        &md.name_any(),
        policy.window,
    );
    match prometheus.query_scalar(&query).await {
        Ok(Some(depth)) => Reading::QueueDepth(depth),
        Ok(None) => Reading::NoMetrics,
        Err(error) => Reading::Unavailable(error.to_string()),
    }
}

fn object_name(md: &ModelDeployment) -> String {
    format!("{}/{}", md.namespace().unwrap_or_default(), md.name_any())
}
