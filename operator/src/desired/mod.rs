//! Desired state: pure functions from a ModelDeployment to the objects that run it.
//!
//! Nothing here talks to the cluster. The reconciler calls [`desired_state`] and applies
//! what comes back, so every field the operator owns is decided (and unit-tested) here.

mod canary;
mod deployment;
mod labels;
mod network_policy;
mod pdb;
mod replicas;
mod service;
pub mod source;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

pub use canary::build_canary_deployment;
pub use deployment::{
    API_KEY_FILE, MODEL_DIR, REVISION_ANNOTATION, build_deployment, engine_container_name,
};
pub use labels::{selector_labels, selector_string};
pub use network_policy::build_network_policy;
pub use pdb::build_pdb;
pub use replicas::{Authority, authority, autoscaler_floor, held_replicas, replica_count};
pub use service::{build_service, endpoint};

use crate::api::ModelDeployment;
use crate::{Error, Result};

/// Every object one ModelDeployment owns, as the operator wants it.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredState {
    pub deployment: Deployment,
    pub service: Service,
    pub pdb: PodDisruptionBudget,
    /// `None`: the ModelDeployment wants no NetworkPolicy (and one it owns is deleted).
    pub network_policy: Option<NetworkPolicy>,
    /// The canary's Deployment while a canary rollout runs one; `None`: there is none (and
    /// one it owns is deleted). [`desired_state`] leaves it to the rollout's decision.
    pub canary: Option<Deployment>,
}

/// Builds everything `md` owns, running `replicas` engine pods of `spec.engine.image` or,
/// when that is unset, of `default_image` (the operator's `--engine-image`).
pub fn desired_state(
    md: &ModelDeployment,
    replicas: i32,
    default_image: &str,
) -> Result<DesiredState> {
    Ok(DesiredState {
        deployment: build_deployment(md, replicas, default_image)?,
        service: build_service(md)?,
        pdb: build_pdb(md)?,
        network_policy: build_network_policy(md)?,
        canary: None,
    })
}

/// Metadata shared by every owned object: same name and namespace as the ModelDeployment,
/// its labels, and a controller owner reference so Kubernetes' garbage collector deletes the
/// object with its owner.
fn owned_metadata(md: &ModelDeployment) -> Result<ObjectMeta> {
    Ok(ObjectMeta {
        name: Some(md.name_any()),
        namespace: md.namespace(),
        labels: Some(labels::common_labels(md)),
        owner_references: Some(vec![owner_reference(md)?]),
        ..ObjectMeta::default()
    })
}

/// A controller reference that also blocks the owner's foreground deletion until the child
/// is gone (as controller-runtime's `SetControllerReference` does), so `kubectl delete
/// --cascade=foreground` waits for the whole fleet.
fn owner_reference(md: &ModelDeployment) -> Result<OwnerReference> {
    let mut owner = md.controller_owner_ref(&()).ok_or(Error::MissingField {
        what: "metadata.uid of the ModelDeployment",
    })?;
    owner.block_owner_deletion = Some(true);
    Ok(owner)
}

#[cfg(test)]
pub(crate) mod test_support {
    use kube::api::ObjectMeta;

    use crate::api::{ModelDeployment, ModelDeploymentSpec, ModelSpec};

    /// A ModelDeployment as the API server would return it for a minimal manifest.
    pub fn minimal(name: &str) -> ModelDeployment {
        let spec = ModelDeploymentSpec {
            model: ModelSpec {
                source: "hf://HuggingFaceTB/SmolLM2-135M-Instruct".into(),
                revision: "12fd25f77366fa6b3b4b768ec3050bf629380bac".into(),
                served_name: None,
            },
            engine: Default::default(),
            resources: Default::default(),
            replicas: Default::default(),
            autoscaling: Default::default(),
            rollout: Default::default(),
            scheduling: Default::default(),
            network_policy: None,
        };
        let mut md = ModelDeployment::new(name, spec);
        md.metadata = ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ml".into()),
            uid: Some("0b8e6a4c-4f57-4a5e-9d1e-2d7d3b1f7a10".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        };
        md
    }
}
