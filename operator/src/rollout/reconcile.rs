//! The reconciler's side of a canary rollout: reads what the step machine needs (from the
//! watch cache while nothing is rolling, else the two Deployments), runs it, and turns its
//! decision into the desired state the reconciler applies.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};

use super::{
    Analyses, CanaryPlan, Decision, Inputs, Observed, ObservedDeployment, StableTemplate,
    TEMPLATE_HASH_LABEL, Template, canary_name, command, decide,
};
use crate::api::{ModelDeployment, watched_ref};
use crate::controller::FIELD_MANAGER;
use crate::desired::{DesiredState, build_canary_deployment};
use crate::ownership::ownership;
use crate::{Error, Result};

/// What a reconcile lends the rollout.
pub struct RolloutContext<'a> {
    pub client: &'a Client,
    /// The operator's Deployments, as their metadata-only watch caches them.
    pub deployments: &'a Store<PartialObjectMeta<Deployment>>,
    /// The analyst's latest analyses; `None` without Prometheus.
    pub analyses: Option<&'a Analyses>,
    pub now: Time,
}

impl RolloutContext<'_> {
    /// `desired` as the rollout strategy has it: for a canary, the stable Deployment keeps its
    /// template (or takes the spec's on promotion) at its share of `total`, and the canary's
    /// Deployment runs the spec's template at the rest. The Deployments are read only while a
    /// canary runs or winds down; otherwise the watch cache's labels are enough.
    pub async fn apply_to(
        &self,
        md: &ModelDeployment,
        namespace: &str,
        mut desired: DesiredState,
        total: i32,
    ) -> Result<(DesiredState, Option<Decision>)> {
        let plan = CanaryPlan::of(&md.spec).map_err(|reason| Error::InvalidSpec {
            object: format!("{namespace}/{}", md.name_any()),
            reason,
        })?;
        let cached = |name: &str| {
            self.deployments
                .get(&ObjectRef::new(name).within(namespace))
        };
        let stable_name = md.name_any();
        let canary_name = canary_name(md);
        let cached_canary = cached(&canary_name);
        if plan.is_none() && cached_canary.is_none() {
            return Ok((desired, None));
        }
        let hash = desired
            .deployment
            .labels()
            .get(TEMPLATE_HASH_LABEL)
            .cloned()
            .unwrap_or_default();
        let cached_stable = cached(&stable_name);
        let stable_hash = cached_stable
            .as_ref()
            .and_then(|d| d.labels().get(TEMPLATE_HASH_LABEL).cloned());
        let previous = md.status.as_ref().and_then(|s| s.rollout.as_ref());
        let quiet = cached_canary.is_none()
            && (cached_stable.is_none() || stable_hash.as_deref() == Some(hash.as_str()))
            && previous.is_none_or(|p| p.canary != hash || p.phase.is_final());
        let uid = md.uid().unwrap_or_default();
        let (observed, stable) = if quiet {
            let observed = Observed {
                stable: cached_stable.map(|_| ObservedDeployment {
                    hash: stable_hash,
                    ..ObservedDeployment::default()
                }),
                canary: None,
            };
            (observed, None)
        } else {
            let api = Api::<Deployment>::namespaced(self.client.clone(), namespace);
            let read = |name: String| {
                let api = api.clone();
                let uid = uid.clone();
                async move {
                    let found = api
                        .get_opt(&name)
                        .await
                        .map_err(|e| Error::kube("reading a Deployment of a canary rollout", e))?;
                    Ok::<_, Error>(
                        found.filter(|d| ownership(d.meta(), &uid, FIELD_MANAGER).may_apply()),
                    )
                }
            };
            let (stable, canary) = futures::try_join!(read(stable_name), read(canary_name))?;
            let observed = Observed {
                stable: stable.as_ref().map(observed_deployment),
                canary: canary.as_ref().map(observed_deployment),
            };
            (observed, stable)
        };
        let analysis = self.analyses.and_then(|a| a.get(&watched_ref(md)));
        let decision = decide(&Inputs {
            plan: plan.as_ref(),
            desired: &Template {
                hash: hash.clone(),
                revision: md.spec.model.revision.clone(),
            },
            observed: &observed,
            previous,
            analysis: analysis.as_ref(),
            analyst_running: self.analyses.is_some(),
            command: command(md, &hash),
            total,
            now: &self.now,
        });
        desired.canary = decision
            .canary_replicas
            .map(|replicas| build_canary_deployment(md, &desired.deployment, replicas));
        if decision.stable == StableTemplate::Kept
            && let Some(stable) = stable
            && let Some(kept) = stable.spec.map(|s| s.template)
            && let Some(spec) = desired.deployment.spec.as_mut()
        {
            spec.template = kept;
            let labels = desired.deployment.metadata.labels.get_or_insert_default();
            match stable
                .metadata
                .labels
                .and_then(|l| l.get(TEMPLATE_HASH_LABEL).cloned())
            {
                Some(kept_hash) => labels.insert(TEMPLATE_HASH_LABEL.into(), kept_hash),
                None => labels.remove(TEMPLATE_HASH_LABEL),
            };
        }
        if let Some(spec) = desired.deployment.spec.as_mut() {
            spec.replicas = Some(decision.stable_replicas);
        }
        Ok((desired, Some(decision)))
    }
}

/// What the step machine reads of a Deployment.
fn observed_deployment(deployment: &Deployment) -> ObservedDeployment {
    let replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let seen = match (status.observed_generation, deployment.metadata.generation) {
        (Some(seen), Some(generation)) => seen >= generation,
        _ => false,
    };
    let settled = seen
        && status.updated_replicas.unwrap_or(0) == replicas
        && status.replicas.unwrap_or(0) == replicas
        && status.available_replicas.unwrap_or(0) == replicas;
    ObservedDeployment {
        hash: deployment.labels().get(TEMPLATE_HASH_LABEL).cloned(),
        replicas,
        ready: status.ready_replicas.unwrap_or(0),
        settled,
    }
}
