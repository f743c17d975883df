//! The reconciler: applies the desired state of each ModelDeployment and reports its status.
//!
//! Level-triggered: every reconcile builds the whole desired state from the object (see
//! [`crate::desired`]) and server-side-applies it under one field manager with `force`, so
//! whatever another client changed in a field the operator owns is put back, while fields
//! others own (an extra label, an annotation) are left alone. Children carry a controller
//! owner reference; Kubernetes' garbage collector deletes them with their ModelDeployment,
//! so no finalizer is needed. The spec is never written: GitOps tools see no drift.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::api::{ModelDeployment, ModelDeploymentStatus};
use crate::autoscaler::prometheus::PrometheusClient;
use crate::autoscaler::{AutoscalerConfig, Verdicts, ticker};
use crate::desired::{
    DEPLOYMENT_LABEL, DesiredState, desired_replicas, desired_state, selector_string,
};
use crate::metrics::Metrics;
use crate::status::{AutoscalerView, Observed, compute_status, crash_looping_pods};
use crate::transitions::{Severity, transitions};
use crate::{Error, Result};

/// The one field manager every write of the operator uses.
pub const FIELD_MANAGER: &str = "modelfleet-operator";
/// Selects the children the operator watches (every object it applies carries it).
const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=modelfleet-operator";
/// Reconcile every object this often even without a change, to catch anything missed.
const RESYNC: Duration = Duration::from_secs(300);
/// First retry after a failed reconcile; doubles per consecutive failure up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Changes closer together than this are reconciled once.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// Where the controller looks and how it names itself.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Watch one namespace, or all when `None`.
    pub namespace: Option<String>,
    /// This process's name in events (`reportingInstance`).
    pub identity: String,
    /// Read the queue depth from Prometheus and size fleets by it; `None` holds each
    /// ModelDeployment at the size its status last recorded (or `spec.replicas.min`).
    pub autoscaler: Option<AutoscalerConfig>,
}

/// What every reconcile shares.
pub struct Context {
    client: Client,
    recorder: Recorder,
    metrics: Metrics,
    store: Store<ModelDeployment>,
    /// The autoscaler's verdicts; `None` when it is off.
    verdicts: Option<Verdicts>,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<ModelDeployment>, u32>>,
}

/// Runs the controller until `shutdown` fires.
pub async fn run_controller(
    client: Client,
    config: ControllerConfig,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> Result<()> {
    let prometheus = config
        .autoscaler
        .as_ref()
        .map(|a| PrometheusClient::new(&a.prometheus_url))
        .transpose()?;
    // The autoscaler asks for a reconcile whenever its verdict on an object changes.
    let (autoscaled, verdict_changes) = futures::channel::mpsc::unbounded();
    let children = watcher::Config::default().labels(MANAGED_SELECTOR);
    let controller = Controller::new(
        scoped::<ModelDeployment>(&client, &config),
        watcher::Config::default(),
    )
    .owns(scoped::<Deployment>(&client, &config), children.clone())
    .owns(scoped::<Service>(&client, &config), children.clone())
    .owns(
        scoped::<PodDisruptionBudget>(&client, &config),
        children.clone(),
    )
    // Pods are not owned directly (their ReplicaSet is), but a crash-looping pod must
    // turn Degraded on without waiting for the resync.
    .watches(
        scoped::<Pod>(&client, &config),
        children,
        model_deployment_of_pod,
    )
    .reconcile_on(verdict_changes)
    // Coalesce bursts (a rollout touches many objects) into one reconcile.
    .with_config(kube::runtime::controller::Config::default().debounce(DEBOUNCE))
    .graceful_shutdown_on(shutdown.clone().cancelled_owned());
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: Some(config.identity.clone()),
    };
    let verdicts = prometheus.as_ref().map(|_| Verdicts::default());
    let ticker_stop = shutdown.child_token();
    // Also when this future is dropped mid-way (an aborted task), the ticker stops.
    let _stop_ticker = ticker_stop.clone().drop_guard();
    let ticker = match (&config.autoscaler, prometheus, &verdicts) {
        (Some(autoscaler), Some(prometheus), Some(verdicts)) => Some(tokio::spawn(ticker::run(
            autoscaler.clone(),
            prometheus,
            controller.store(),
            verdicts.clone(),
            autoscaled,
            metrics.clone(),
            ticker_stop.clone(),
        ))),
        _ => None,
    };
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        metrics,
        store: controller.store(),
        verdicts,
        failures: Mutex::default(),
    });
    tracing::info!(
        namespace = config.namespace.as_deref().unwrap_or("(all)"),
        "controller started"
    );
    controller
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(object = %object, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile did not complete"),
            }
        })
        .await;
    ticker_stop.cancel();
    if let Some(ticker) = ticker {
        let _ = ticker.await;
    }
    tracing::info!("controller stopped");
    Ok(())
}

/// The ModelDeployment an engine pod belongs to, from its `modelfleet.dev/deployment` label.
fn model_deployment_of_pod(pod: Pod) -> Option<ObjectRef<ModelDeployment>> {
    let name = pod.labels().get(DEPLOYMENT_LABEL)?;
    Some(ObjectRef::new(name).within(&pod.namespace()?))
}

fn scoped<K>(client: &Client, config: &ControllerConfig) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Brings one ModelDeployment's children and status in line with its spec.
#[tracing::instrument(skip_all, fields(object = %format!("{}/{}", md.namespace().unwrap_or_default(), md.name_any())))]
pub async fn reconcile(md: Arc<ModelDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_duration.start_timer();
    ctx.metrics.reconciles.inc();
    ctx.metrics
        .managed
        .set(i64::try_from(ctx.store.state().len()).unwrap_or(i64::MAX));
    if md.meta().deletion_timestamp.is_some() {
        // The garbage collector removes the children; nothing to do.
        return Ok(Action::await_change());
    }
    let namespace = md.namespace().ok_or(Error::MissingField {
        what: "metadata.namespace",
    })?;

    // The autoscaler's latest verdict, else the size the status recorded (so a restart or a
    // Prometheus outage holds it), within the spec's bounds; `spec.replicas.count` wins.
    let verdict = ctx
        .verdicts
        .as_ref()
        .and_then(|v| v.get(&ObjectRef::from(md.as_ref())));
    let held = md
        .status
        .as_ref()
        .filter(|s| s.observed_generation.is_some())
        .map(|s| s.desired_replicas);
    let replicas = desired_replicas(
        &md.spec.replicas,
        verdict.as_ref().map(|v| v.replicas).or(held),
    );
    let desired = desired_state(&md, replicas)?;
    let applied = apply_children(&ctx.client, &namespace, &desired).await?;
    let crash_looping = crash_looping_pods(&engine_pods(&ctx.client, &namespace, &md).await?);

    let observed = Observed {
        deployment: Some(&applied.deployment),
        crash_looping_pods: crash_looping,
        autoscaler: match (&ctx.verdicts, &verdict) {
            (None, _) => AutoscalerView::Off,
            (Some(_), None) => AutoscalerView::Awaiting,
            (Some(_), Some(verdict)) => AutoscalerView::Verdict(verdict),
        },
    };
    let status = compute_status(&md, replicas, &observed, &now());
    if md.status.as_ref() != Some(&status) {
        write_status(&ctx.client, &namespace, &md.name_any(), &status).await?;
        ctx.metrics.status_writes.inc();
    }
    let scale_cause = |from, to| {
        verdict
            .as_ref()
            .and_then(|v| v.cause_of(from, to).map(String::from))
    };
    for transition in transitions(md.status.as_ref(), &status, applied.created, scale_cause) {
        let type_ = match transition.severity {
            Severity::Normal => EventType::Normal,
            Severity::Warning => EventType::Warning,
        };
        tracing::info!(reason = %transition.reason, note = %transition.note, "transition");
        publish(
            &ctx,
            &md,
            type_,
            (&transition.reason, &transition.action),
            transition.note,
        )
        .await;
    }

    ctx.failures
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&ObjectRef::from(md.as_ref()));
    Ok(Action::requeue(RESYNC))
}

/// The Deployment as the API server returned it, and whether this apply created it.
struct Applied {
    deployment: Deployment,
    created: bool,
}

async fn apply_children(
    client: &Client,
    namespace: &str,
    desired: &DesiredState,
) -> Result<Applied> {
    let name = desired.deployment.name_any();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let created = deployments
        .get_metadata_opt(&name)
        .await
        .map_err(|e| Error::kube("reading the Deployment", e))?
        .is_none();
    let deployment = apply(&deployments, &desired.deployment, "Deployment").await?;
    apply(
        &Api::namespaced(client.clone(), namespace),
        &desired.service,
        "Service",
    )
    .await?;
    apply(
        &Api::namespaced(client.clone(), namespace),
        &desired.pdb,
        "PodDisruptionBudget",
    )
    .await?;
    Ok(Applied {
        deployment,
        created,
    })
}

async fn engine_pods(client: &Client, namespace: &str, md: &ModelDeployment) -> Result<Vec<Pod>> {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&selector_string(md)))
        .await
        .map_err(|e| Error::kube("listing the engine pods", e))?;
    Ok(pods.items)
}

/// Server-side apply of the status subresource: fields left out of `status` are removed.
async fn write_status(
    client: &Client,
    namespace: &str,
    name: &str,
    status: &ModelDeploymentStatus,
) -> Result<()> {
    let patch = serde_json::json!({
        "apiVersion": ModelDeployment::api_version(&()),
        "kind": ModelDeployment::kind(&()),
        "status": status,
    });
    Api::<ModelDeployment>::namespaced(client.clone(), namespace)
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| Error::kube("writing the ModelDeployment status", e))?;
    Ok(())
}

/// Now, in whole seconds: metav1.Time has whole seconds on the wire, so a status read back
/// compares equal to the one computed.
fn now() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Server-side apply of one child under the operator's field manager, taking over any
/// field another manager changed. Applying an unchanged object writes nothing.
async fn apply<K>(api: &Api<K>, object: &K, what: &str) -> Result<K>
where
    K: Clone + DeserializeOwned + Serialize + std::fmt::Debug + Resource,
{
    api.patch(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|e| Error::kube(format!("applying the {what}"), e))
}

async fn publish(
    ctx: &Context,
    md: &ModelDeployment,
    type_: EventType,
    (reason, action): (&str, &str),
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    // An event that cannot be published must not fail the reconcile that caused it.
    if let Err(error) = ctx.recorder.publish(&event, &md.object_ref(&())).await {
        tracing::warn!(%error, reason, "could not publish an event");
    }
}

/// Logs and counts the failure, and retries with exponential backoff per object.
pub fn error_policy(md: Arc<ModelDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.record_error(error);
    let attempt = {
        let mut failures = ctx.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let count = failures.entry(ObjectRef::from(md.as_ref())).or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let delay = backoff(attempt);
    tracing::warn!(
        object = %format!("{}/{}", md.namespace().unwrap_or_default(), md.name_any()),
        %error, attempt, retry_in = ?delay, "reconcile failed"
    );
    if attempt == 1 {
        // Tell the user once per run of failures; the log has every retry.
        let note = error.to_string();
        tokio::spawn(async move {
            publish(
                &ctx,
                &md,
                EventType::Warning,
                ("ReconcileFailed", "Reconcile"),
                note,
            )
            .await;
        });
    }
    Action::requeue(delay)
}

/// The wait before retry number `attempt` (1-based): 0.5 s, 1 s, 2 s, … up to 5 minutes.
pub fn backoff(attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
    BASE_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(30), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
