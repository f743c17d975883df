//! The loop around the pure scaler: every interval, one query per autoscaled
//! ModelDeployment, one step of its [`Scaler`], and a reconcile whenever the verdict changed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::scaler::round2;
use super::{
    AutoscalerConfig, Policy, Reading, Scaler, Verdict, Verdicts, autoscaling_applies, promql,
};
use crate::api::{ModelDeployment, WatchedModelDeployment, watched_ref};
use crate::desired::replica_count;
use crate::metrics::Metrics;
use modelfleet_contract::prometheus::PrometheusClient;

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
    let mut policies = Policies::default();
    let mut ticker = tokio::time::interval(config.interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let tick = metrics.autoscaler_tick_duration.start_timer();
        // An object that does not decode is skipped (its status says why); the others are
        // autoscaled as ever. The cache's objects are shared, not copied.
        let autoscaled: Vec<Arc<WatchedModelDeployment>> = store.state_filter(|watched| {
            watched.0.as_ref().is_ok_and(|md| {
                md.meta().deletion_timestamp.is_none() && autoscaling_applies(&md.spec)
            })
        });
        // Forget objects that are gone or no longer autoscaled: a later return starts from
        // their status, as after a restart.
        let live: HashSet<_> = autoscaled
            .iter()
            .map(|watched| ObjectRef::from(watched.as_ref()))
            .collect();
        scalers.retain(|object, _| live.contains(object));
        policies.retain(|object| live.contains(object));
        verdicts.retain(|object| live.contains(object));

        let mut queries = Vec::with_capacity(autoscaled.len());
        for watched in autoscaled {
            let object = ObjectRef::from(watched.as_ref());
            if let Some(policy) = policies.policy_of(object, &watched) {
                queries.push((watched, policy));
            }
        }
        let readings: Vec<(Arc<WatchedModelDeployment>, Policy, Reading)> =
            futures::stream::iter(queries)
                .map(|(watched, policy)| {
                    let prometheus = prometheus.clone();
                    async move {
                        let reading = match &watched.0 {
                            Ok(md) => read(&prometheus, md, &policy).await,
                            Err(_) => Reading::NoMetrics,
                        };
                        (watched, policy, reading)
                    }
                })
                .buffer_unordered(CONCURRENT_QUERIES)
                .collect()
                .await;

        let now = Timestamp::now();
        for (watched, policy, reading) in readings {
            let Ok(md) = &watched.0 else { continue };
            let object = watched_ref(md);
            if let Reading::Unavailable(error) = &reading {
                metrics.autoscaler_query_failures.inc();
                tracing::debug!(object = %object_name(md), %error, "queue depth unavailable");
            }
            let scaler = scalers
                .entry(object.clone())
                .or_insert_with(|| Scaler::new(replica_count(md, None)));
            let decision = scaler.step(&policy, &reading, now);
            let last_change = match decision.cause(&policy) {
                Some(cause) => {
                    tracing::info!(
                        object = %object_name(md),
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
        tick.observe_duration();
    }
    tracing::info!("autoscaler stopped");
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

/// Each object's parsed [`Policy`] by the generation it was parsed at: a tick does no work
/// for an object that did not change beyond its query.
#[derive(Default)]
struct Policies(HashMap<ObjectRef<WatchedModelDeployment>, (Option<i64>, Option<Policy>)>);

impl Policies {
    /// The policy of `watched`, or `None` (logged once per generation) when its spec does
    /// not parse.
    fn policy_of(
        &mut self,
        object: ObjectRef<WatchedModelDeployment>,
        watched: &WatchedModelDeployment,
    ) -> Option<Policy> {
        let md = watched.0.as_ref().ok()?;
        let generation = md.meta().generation;
        if let Some((parsed_at, policy)) = self.0.get(&object)
            && *parsed_at == generation
        {
            return policy.clone();
        }
        let policy = match Policy::of(&md.spec) {
            Ok(policy) => Some(policy),
            Err(reason) => {
                tracing::warn!(object = %object_name(md), %reason, "not autoscaling");
                None
            }
        };
        self.0.insert(object, (generation, policy.clone()));
        policy
    }

    fn retain(&mut self, keep: impl Fn(&ObjectRef<WatchedModelDeployment>) -> bool) {
        self.0.retain(|object, _| keep(object));
    }
}
