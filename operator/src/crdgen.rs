//! Renders the ModelDeployment CRD from the Rust types; `crds/` holds its output.

use kube::CustomResourceExt;

use crate::Result;
use crate::api::ModelDeployment;

/// The file under `crds/` that holds the ModelDeployment CRD.
pub const CRD_FILE: &str = "modelfleet.dev_modeldeployments.yaml";

/// The ModelDeployment CRD as YAML, with a header saying it is generated.
pub fn crd_yaml() -> Result<String> {
    let body = serde_yaml::to_string(&ModelDeployment::crd())?;
    Ok(format!(
        "# Generated from the Rust types in operator/src/api by `make crds`; do not edit.\n{body}"
    ))
}
