//! Renders the ModelDeployment CRD from the Rust types; `crds/` holds its output.

use kube::CustomResourceExt;
use serde_json::Value;

use crate::api::ModelDeployment;
use crate::{Error, Result};

/// The file under `crds/` that holds the ModelDeployment CRD.
pub const CRD_FILE: &str = "modelfleet.dev_modeldeployments.yaml";

/// The ModelDeployment CRD as YAML, with a header saying it is generated. Keys are sorted:
/// the schema is JSON inside, whose key order depends on whether some other crate in the
/// build turned on serde_json's `preserve_order`, and the file must not.
pub fn crd_yaml() -> Result<String> {
    let crd = serde_json::to_value(ModelDeployment::crd()).map_err(|source| Error::Serialize {
        what: "the CRD",
        source,
    })?;
    let body = serde_yaml::to_string(&sorted(crd))?;
    Ok(format!(
        "# Generated from the Rust types in operator/src/api by `make crds`; do not edit.\n{body}"
    ))
}

/// `value` with the keys of every object in sorted order (a map rebuilt in that order keeps
/// it, with or without `preserve_order`).
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}
