//! The reconciler: applies the desired state of each ModelDeployment and reports its status.
//!
//! Level-triggered: every reconcile builds the whole desired state from the object (see
//! [`crate::desired`]) and server-side-applies it under one field manager with `force`, so
//! whatever another client changed in a field the operator owns is put back, while fields
//! others own (an extra label, an annotation) are left alone. Children carry a controller
//! owner reference; Kubernetes' garbage collector deletes them with their ModelDeployment,
//! so no finalizer is needed. The spec is never written: GitOps tools see no drift.
//!
//! Force never takes over an object that is not the ModelDeployment's (see
//! [`crate::ownership`]): such a child is left as it is and the status says so. A spec that
//! cannot run (an object that does not decode, or a child the API server refuses) is a
//! per-object failure: the status says why (`Ready=False`, `InvalidSpec`), and every other
//! ModelDeployment is reconciled and autoscaled as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::error_boundary::InvalidObject;
use kube::core::{ApiResource, PartialObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::api::{
    DEFAULT_ENGINE_IMAGE, ModelDeployment, ModelDeploymentStatus, WatchedModelDeployment,
    watched_ref,
};
use crate::autoscaler::{AutoscalerConfig, Verdicts, ticker};
use crate::desired::{DesiredState, desired_state, replica_count, selector_labels};
use crate::metrics::Metrics;
use crate::ownership::ownership;
use crate::rollout::{self, Analyses, RolloutContext, canary_name};
use crate::status::{
    AutoscalerView, Blocker, Observed, compute_status, crash_looping_pods, undecodable_status,
};
use crate::transitions::{Severity, transitions};
use crate::{Error, Result};
use modelfleet_contract::labels::DEPLOYMENT as DEPLOYMENT_LABEL;
use modelfleet_contract::prometheus::PrometheusClient;

/// The one field manager every write of the operator uses.
pub use modelfleet_contract::labels::field_manager::OPERATOR as FIELD_MANAGER;
/// Selects the children the operator watches (every object it applies carries it).
const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=modelfleet-operator";
/// Reconcile every object this often even without a change, to catch anything missed.
const RESYNC: Duration = Duration::from_secs(300);
/// First retry after a failed reconcile; doubles per consecutive failure up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Changes closer together than this are reconciled once.
const DEBOUNCE: Duration = Duration::from_millis(500);
/// Reconciles in flight at once (each sends up to five requests of its own at a time).
const CONCURRENT_RECONCILES: u16 = 16;

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
    /// The image of ModelDeployments that leave `spec.engine.image` unset.
    pub engine_image: String,
}

impl ControllerConfig {
    /// Every namespace (or `namespace`), no autoscaler, the built-in engine image.
    pub fn new(namespace: Option<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace,
            identity: identity.into(),
            autoscaler: None,
            engine_image: DEFAULT_ENGINE_IMAGE.to_string(),
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    client: Client,
    recorder: Recorder,
    metrics: Metrics,
    store: Store<WatchedModelDeployment>,
    /// The engine pods, as the watch sees them (status and labels; see [`slim_pod`]).
    pods: Store<Pod>,
    children: ChildCaches,
    /// The autoscaler's verdicts; `None` when it is off.
    verdicts: Option<Verdicts>,
    /// The canary analyst's latest analyses; `None` without Prometheus.
    analyses: Option<Analyses>,
    engine_image: String,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<WatchedModelDeployment>, u32>>,
}

/// The metadata of every child the operator applied, by kind, as their watches see it.
struct ChildCaches {
    deployments: Store<PartialObjectMeta<Deployment>>,
    services: Store<PartialObjectMeta<Service>>,
    pdbs: Store<PartialObjectMeta<PodDisruptionBudget>>,
    policies: Store<PartialObjectMeta<NetworkPolicy>>,
}

/// A metadata-only watch of the operator's children of kind `K`, cached in the returned
/// store; the stream both fills it and triggers the owners' reconciles.
fn child_cache<K>(
    client: &Client,
    config: &ControllerConfig,
    selector: &watcher::Config,
) -> (
    Store<PartialObjectMeta<K>>,
    impl futures::Stream<Item = std::result::Result<PartialObjectMeta<K>, watcher::Error>>
    + Send
    + 'static,
)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let events = watcher(
        scoped::<PartialObjectMeta<K>>(client, config),
        selector.clone(),
    )
    .default_backoff()
    .modify(slim_child)
    .reflect(writer)
    .touched_objects();
    (store, events)
}

/// A child whose controller is known needs no managed fields to tell whose it is (see
/// [`ownership`]); they are most of its metadata.
fn slim_child<K>(child: &mut PartialObjectMeta<K>) {
    let controlled = child
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.controller == Some(true));
    if controlled {
        child.metadata.managed_fields = None;
    }
    child.metadata.annotations = None;
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
    // The children's metadata, cached from their watches: a reconcile reads who owns each
    // child there, and asks the API server only about a child the cache does not hold.
    let (deployments, deployment_events) = child_cache::<Deployment>(&client, &config, &children);
    let (services, service_events) = child_cache::<Service>(&client, &config, &children);
    let (pdbs, pdb_events) = child_cache::<PodDisruptionBudget>(&client, &config, &children);
    let (policies, policy_events) = child_cache::<NetworkPolicy>(&client, &config, &children);
    let (pods, pod_cache) = reflector::store::<Pod>();
    let pod_events = watcher(scoped::<Pod>(&client, &config), children.clone())
        .default_backoff()
        .modify(slim_pod)
        .reflect(pod_cache)
        .touched_objects();
    // Objects that do not decode arrive as errors of their own instead of failing the whole
    // list (and with it every other tenant's reconciles).
    // The ModelDeployments' managed fields are never read here; at fleet sizes they are a
    // large share of the cache.
    let (model_deployments, md_cache) = reflector::store::<WatchedModelDeployment>();
    let md_events = watcher(
        scoped::<WatchedModelDeployment>(&client, &config),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|md| md.meta_mut().managed_fields = None)
    .reflect(md_cache)
    .applied_objects();
    let controller = Controller::for_stream(md_events, model_deployments)
        .owns_stream(deployment_events)
        .owns_stream(service_events)
        .owns_stream(pdb_events)
        .owns_stream(policy_events)
        // Pods are not owned directly (their ReplicaSet is), but a crash-looping pod must
        // turn Degraded on without waiting for the resync. Reconciles read them from this
        // watch's cache, never with a LIST of their own.
        .watches_stream(pod_events, model_deployment_of_pod)
        .reconcile_on(verdict_changes)
        // Coalesce bursts (a rollout touches many objects) into one reconcile, and run a
        // bounded number at once: unbounded, a thousand new objects mean a thousand
        // reconciles, each with connections of its own, contending for the API server.
        .with_config(
            kube::runtime::controller::Config::default()
                .debounce(DEBOUNCE)
                .concurrency(CONCURRENT_RECONCILES),
        )
        .graceful_shutdown_on(shutdown.clone().cancelled_owned());
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: Some(config.identity.clone()),
    };
    let verdicts = prometheus.as_ref().map(|_| Verdicts::default());
    let analyses = prometheus.as_ref().map(|_| Analyses::default());
    let ticker_stop = shutdown.child_token();
    // Also when this future is dropped mid-way (an aborted task), the ticker stops.
    let _stop_ticker = ticker_stop.clone().drop_guard();
    let analyst = match (&config.autoscaler, &prometheus, &analyses) {
        (Some(autoscaler), Some(prometheus), Some(analyses)) => {
            Some(tokio::spawn(rollout::analyst::run(
                autoscaler.interval,
                prometheus.clone(),
                controller.store(),
                analyses.clone(),
                autoscaled.clone(),
                ticker_stop.clone(),
            )))
        }
        _ => None,
    };
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
        pods,
        children: ChildCaches {
            deployments,
            services,
            pdbs,
            policies,
        },
        verdicts,
        analyses,
        engine_image: config.engine_image.clone(),
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
    for task in [ticker, analyst].into_iter().flatten() {
        let _ = task.await;
    }
    tracing::info!("controller stopped");
    Ok(())
}

/// What the operator reads of a pod (its labels, name and container states) is all it keeps
/// of it: at fleet sizes the rest of a pod (its spec, managed fields) is most of the cache.
fn slim_pod(pod: &mut Pod) {
    pod.spec = None;
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
}

/// The ModelDeployment an engine pod belongs to, from its `modelfleet.dev/deployment` label.
fn model_deployment_of_pod(pod: Pod) -> Option<ObjectRef<WatchedModelDeployment>> {
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
#[tracing::instrument(skip_all, fields(object = %object_name(watched.as_ref())))]
pub async fn reconcile(watched: Arc<WatchedModelDeployment>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_duration.start_timer();
    ctx.metrics.reconciles.inc();
    ctx.metrics
        .managed
        .set(i64::try_from(ctx.store.len()).unwrap_or(i64::MAX));
    if watched.meta().deletion_timestamp.is_some() {
        // The garbage collector removes the children; nothing to do.
        forget_failures(&ctx, &ObjectRef::from(watched.as_ref()));
        return Ok(Action::await_change());
    }
    let action = match &watched.0 {
        Ok(md) => reconcile_model_deployment(md, &ctx).await?,
        Err(invalid) => return Err(report_undecodable(invalid, &ctx).await),
    };
    forget_failures(&ctx, &ObjectRef::from(watched.as_ref()));
    Ok(action)
}

async fn reconcile_model_deployment(md: &ModelDeployment, ctx: &Context) -> Result<Action> {
    let namespace = md.namespace().ok_or(Error::MissingField {
        what: "metadata.namespace",
    })?;

    // The autoscaler's latest verdict, else the size the status recorded (so a restart or a
    // Prometheus outage holds it), within the spec's bounds; `spec.replicas.count` wins.
    let verdict = ctx.verdicts.as_ref().and_then(|v| v.get(&watched_ref(md)));
    let replicas = replica_count(md, verdict.as_ref().map(|v| v.replicas));
    let prepared = match desired_state(md, replicas, &ctx.engine_image) {
        Ok(desired) => {
            let rollout = RolloutContext {
                client: &ctx.client,
                deployments: &ctx.children.deployments,
                analyses: ctx.analyses.as_ref(),
                now: now(),
            };
            rollout.apply_to(md, &namespace, desired, replicas).await
        }
        Err(error) => Err(error),
    };
    let mut rollout = None;
    let applied = match prepared {
        Ok((desired, decision)) => {
            rollout = decision;
            apply_children(&ctx.client, &ctx.children, &namespace, md, &desired).await
        }
        Err(error) => Err(error),
    };
    let (applied, blocker) = match applied {
        Ok(applied) => {
            let blocker =
                (!applied.refused.is_empty()).then(|| Blocker::NotOwned(applied.refused.clone()));
            (applied, blocker)
        }
        // A spec the API server refuses: what runs keeps running, and the status says why
        // the new spec does not.
        Err(error) => match invalid_spec_message(&error) {
            Some(message) => (
                current_children(&ctx.client, &namespace, md).await?,
                Some(Blocker::InvalidSpec(message)),
            ),
            None => return Err(error),
        },
    };
    let crash_looping = crash_looping_pods(&engine_pods(&ctx.pods, &namespace, md));

    let observed = Observed {
        deployment: applied.deployment.as_ref(),
        blocker: blocker.as_ref(),
        crash_looping_pods: crash_looping,
        autoscaler: match (&ctx.verdicts, &verdict) {
            (None, _) => AutoscalerView::Off,
            (Some(_), None) => AutoscalerView::Awaiting,
            (Some(_), Some(verdict)) => AutoscalerView::Verdict(verdict),
        },
        canary: applied.canary.as_ref(),
        rollout: rollout.as_ref().and_then(|d| d.status.as_ref()),
    };
    let status = compute_status(md, replicas, &observed, &now());
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
            ctx,
            md.object_ref(&()),
            type_,
            (&transition.reason, &transition.action),
            transition.note,
        )
        .await;
    }
    match blocker {
        // Counted, logged, told in an event and retried with backoff like any failure; the
        // status already says what to do.
        Some(Blocker::InvalidSpec(reason)) => Err(Error::InvalidSpec {
            object: object_name(md),
            reason,
        }),
        Some(Blocker::NotOwned(objects)) => Err(Error::NotOwned {
            object: object_name(md),
            reason: objects.join("; "),
        }),
        None => Ok(Action::requeue(
            rollout
                .and_then(|d| d.recheck_in)
                .map_or(RESYNC, |due| due.clamp(Duration::from_millis(500), RESYNC)),
        )),
    }
}

/// The message of an error that means the spec cannot run (as opposed to a failure worth
/// retrying as it is): the builders' own refusals and the API server's 422 Invalid.
fn invalid_spec_message(error: &Error) -> Option<String> {
    match error {
        Error::InvalidSpec { reason, .. } => Some(reason.clone()),
        Error::Kube {
            action,
            source: kube::Error::Api(status),
        } if status.code == 422 => Some(format!("{action}: {}", status.message)),
        _ => None,
    }
}

/// An object that does not decode: its status says why (naming the field), what it runs
/// is left running, and the returned error goes to [`error_policy`].
async fn report_undecodable(invalid: &InvalidObject, ctx: &Context) -> Error {
    let name = invalid.metadata.name.clone().unwrap_or_default();
    let namespace = invalid.metadata.namespace.clone().unwrap_or_default();
    let object = format!("{namespace}/{name}");
    let resource = ApiResource::erase::<ModelDeployment>(&());
    let raw = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &namespace, &resource)
        .get(&name)
        .await;
    let raw = match raw {
        Ok(raw) => raw,
        Err(e) => return Error::kube("reading a ModelDeployment that does not decode", e),
    };
    let (reason, previous) = decoding_failure(&raw, &invalid.error);
    let status = undecodable_status(previous, raw.metadata.generation, &reason, &now());
    let stale = raw
        .data
        .get("status")
        .is_none_or(|s| serde_json::to_value(&status).ok().as_ref() != Some(s));
    if stale {
        if let Err(error) = write_status(&ctx.client, &namespace, &name, &status).await {
            return error;
        }
        ctx.metrics.status_writes.inc();
    }
    Error::InvalidSpec { object, reason }
}

/// Where decoding `raw` fails (`spec.rollout.maxSurge: invalid value: …`), and the status
/// it holds if that part decodes.
fn decoding_failure(
    raw: &DynamicObject,
    fallback: &str,
) -> (String, Option<ModelDeploymentStatus>) {
    let previous = raw
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    let reason = match serde_json::to_value(raw) {
        Ok(value) => match serde_path_to_error::deserialize::<_, ModelDeployment>(value) {
            Err(error) => format!("{}: {}", error.path(), error.inner()),
            // It decodes now: the watch brings the new version in a moment.
            Ok(_) => fallback.to_string(),
        },
        Err(_) => fallback.to_string(),
    };
    (reason, previous)
}

fn object_name(object: &impl Resource) -> String {
    format!(
        "{}/{}",
        object.meta().namespace.as_deref().unwrap_or_default(),
        object.meta().name.as_deref().unwrap_or_default()
    )
}

/// The children as applied (or found), whether this apply created the Deployment, and the
/// ones that were left alone because they are not this ModelDeployment's.
struct Applied {
    /// The Deployment, if it is this ModelDeployment's.
    deployment: Option<Deployment>,
    /// The canary's Deployment, while a canary rollout runs one.
    canary: Option<Deployment>,
    created: bool,
    /// "Service ns/name exists and is not managed by …", one per child not applied.
    refused: Vec<String>,
}

/// One child: applied, or left alone with the reason.
enum Child<K> {
    Applied { object: K, created: bool },
    Refused(String),
}

impl<K> Child<K> {
    fn refusal(self) -> Option<String> {
        match self {
            Self::Refused(why) => Some(why),
            Self::Applied { .. } => None,
        }
    }
}

/// Applies every child at once: they do not depend on one another, so a reconcile waits for
/// the slowest request rather than for their sum.
async fn apply_children(
    client: &Client,
    caches: &ChildCaches,
    namespace: &str,
    md: &ModelDeployment,
    desired: &DesiredState,
) -> Result<Applied> {
    let uid = md.uid().ok_or(Error::MissingField {
        what: "metadata.uid of the ModelDeployment",
    })?;
    let deployments = Api::namespaced(client.clone(), namespace);
    let services = Api::namespaced(client.clone(), namespace);
    let pdbs = Api::namespaced(client.clone(), namespace);
    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), namespace);
    let name = md.name_any();
    let policy = async {
        match &desired.network_policy {
            Some(policy) => {
                let child =
                    apply_if_ours(&policies, &caches.policies, policy, &uid, "NetworkPolicy")
                        .await?;
                Ok(child.refusal())
            }
            None => {
                delete_if_ours(&policies, &caches.policies, &name, &uid, "NetworkPolicy").await?;
                Ok(None)
            }
        }
    };
    let canary_deployments = deployments.clone();
    let canary = async {
        match &desired.canary {
            Some(canary) => {
                let child = apply_if_ours(
                    &canary_deployments,
                    &caches.deployments,
                    canary,
                    &uid,
                    "canary Deployment",
                )
                .await?;
                Ok(match child {
                    Child::Applied { object, .. } => (Some(object), None),
                    Child::Refused(why) => (None, Some(why)),
                })
            }
            None => {
                delete_if_ours(
                    &canary_deployments,
                    &caches.deployments,
                    &canary_name(md),
                    &uid,
                    "canary Deployment",
                )
                .await?;
                Ok((None, None))
            }
        }
    };
    let (deployment, service, pdb, policy_refusal, (canary, canary_refusal)) = futures::try_join!(
        apply_if_ours(
            &deployments,
            &caches.deployments,
            &desired.deployment,
            &uid,
            "Deployment"
        ),
        apply_if_ours(
            &services,
            &caches.services,
            &desired.service,
            &uid,
            "Service"
        ),
        apply_if_ours(
            &pdbs,
            &caches.pdbs,
            &desired.pdb,
            &uid,
            "PodDisruptionBudget"
        ),
        policy,
        canary,
    )?;
    let mut refused = Vec::new();
    let (deployment, created) = match deployment {
        Child::Applied { object, created } => (Some(object), created),
        Child::Refused(why) => {
            refused.push(why);
            (None, false)
        }
    };
    refused.extend(service.refusal());
    refused.extend(pdb.refusal());
    refused.extend(policy_refusal);
    refused.extend(canary_refusal);
    Ok(Applied {
        deployment,
        canary,
        created,
        refused,
    })
}

/// The children as they are, without applying anything (the spec was refused).
async fn current_children(
    client: &Client,
    namespace: &str,
    md: &ModelDeployment,
) -> Result<Applied> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get_opt(&md.name_any())
        .await
        .map_err(|e| Error::kube("reading the Deployment", e))?
        .filter(|d| {
            md.uid()
                .is_some_and(|uid| ownership(d.meta(), &uid, FIELD_MANAGER).may_apply())
        });
    Ok(Applied {
        deployment,
        canary: None,
        created: false,
        refused: Vec::new(),
    })
}

/// Applies `object` unless an object of its name exists that is not the ModelDeployment's
/// (uid `owner_uid`). Who owns it is read from the cache; only a child the cache does not
/// hold (one not applied yet, or someone else's, which carries no managed-by label) is asked
/// for, so a steady-state reconcile reads nothing from the API server.
async fn apply_if_ours<K>(
    api: &Api<K>,
    cache: &Store<PartialObjectMeta<K>>,
    object: &K,
    owner_uid: &str,
    what: &str,
) -> Result<Child<K>>
where
    K: Clone + DeserializeOwned + Serialize + std::fmt::Debug + Resource<DynamicType = ()>,
{
    let existing = existing_metadata(api, cache, object.meta(), what).await?;
    if let Some(existing) = &existing
        && let Some(why) = ownership(existing, owner_uid, FIELD_MANAGER).refusal()
    {
        let namespace = existing.namespace.as_deref().unwrap_or_default();
        let name = object.name_any();
        return Ok(Child::Refused(format!("{what} {namespace}/{name} {why}")));
    }
    let applied = apply(api, object, what).await?;
    Ok(Child::Applied {
        object: applied,
        created: existing.is_none(),
    })
}

/// The metadata of the object named as `meta` names it: from the cache when it holds it,
/// else from the API server.
async fn existing_metadata<K>(
    api: &Api<K>,
    cache: &Store<PartialObjectMeta<K>>,
    meta: &ObjectMeta,
    what: &str,
) -> Result<Option<ObjectMeta>>
where
    K: Clone + DeserializeOwned + std::fmt::Debug + Resource<DynamicType = ()>,
{
    let name = meta.name.clone().unwrap_or_default();
    let key = ObjectRef::new(&name).within(meta.namespace.as_deref().unwrap_or_default());
    if let Some(cached) = cache.get(&key) {
        return Ok(Some(cached.metadata.clone()));
    }
    let found = api
        .get_metadata_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("reading the {what}"), e))?;
    Ok(found.map(|object| object.metadata))
}

/// Deletes the child `name` if it is the ModelDeployment's; anyone else's is left alone.
/// Only a child in the cache can be the ModelDeployment's (every child it applied carries the
/// label the cache watches), so an absent one costs no request.
async fn delete_if_ours<K>(
    api: &Api<K>,
    cache: &Store<PartialObjectMeta<K>>,
    name: &str,
    owner_uid: &str,
    what: &str,
) -> Result<()>
where
    K: Clone + DeserializeOwned + std::fmt::Debug + Resource<DynamicType = ()>,
{
    let namespace = api.namespace().unwrap_or_default().to_string();
    let Some(existing) = cache.get(&ObjectRef::new(name).within(&namespace)) else {
        return Ok(());
    };
    if !ownership(&existing.metadata, owner_uid, FIELD_MANAGER).may_apply() {
        return Ok(());
    }
    // The uid precondition: never delete a same-named object created since the read.
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: existing.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(e) => Err(Error::kube(format!("deleting the {what}"), e)),
    }
}

/// The engine pods of `md`, from the pod watch's cache.
fn engine_pods(pods: &Store<Pod>, namespace: &str, md: &ModelDeployment) -> Vec<Pod> {
    let selector = selector_labels(md);
    pods.state_filter(|pod| {
        pod.metadata.namespace.as_deref() == Some(namespace)
            && selector
                .iter()
                .all(|(key, value)| pod.labels().get(key) == Some(value))
    })
    .iter()
    .map(|pod| Pod::clone(pod))
    .collect()
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
pub(crate) fn now() -> Time {
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
    regarding: k8s_openapi::api::core::v1::ObjectReference,
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
    if let Err(error) = ctx.recorder.publish(&event, &regarding).await {
        tracing::warn!(%error, reason, "could not publish an event");
    }
}

/// Drops `object`'s run of failures (it reconciled, or it is going away), and those of
/// objects no longer in the cache: a deleted object is never reconciled again, so its entry
/// would otherwise stay for the life of the process.
fn forget_failures(ctx: &Context, object: &ObjectRef<WatchedModelDeployment>) {
    let mut failures = ctx.failures.lock().unwrap_or_else(PoisonError::into_inner);
    failures.remove(object);
    failures.retain(|other, _| ctx.store.get(other).is_some());
}

/// Logs and counts the failure, and retries with exponential backoff per object.
pub fn error_policy(md: Arc<WatchedModelDeployment>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.record_error(error);
    let attempt = {
        let mut failures = ctx.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let count = failures.entry(ObjectRef::from(md.as_ref())).or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let delay = backoff(attempt);
    tracing::warn!(
        object = %object_name(md.as_ref()), %error, attempt, retry_in = ?delay, "reconcile failed"
    );
    if attempt == 1 {
        // Tell the user once per run of failures; the log has every retry.
        let note = error.to_string();
        tokio::spawn(async move {
            publish(
                &ctx,
                md.object_ref(&()),
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
