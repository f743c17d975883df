//! Labels on every object a ModelDeployment owns.

use std::collections::BTreeMap;

use kube::ResourceExt;
// Names the ModelDeployment a pod (or Deployment, Service, PDB) belongs to; Prometheus
// relabels it into the `modeldeployment` label the autoscaler queries by.
use modelfleet_contract::labels::{DEPLOYMENT as DEPLOYMENT_LABEL, field_manager};

use crate::api::ModelDeployment;

const NAME_LABEL: &str = "app.kubernetes.io/name";
const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

const APP_NAME: &str = "modelfleet-engine";

/// The labels that select a ModelDeployment's pods. A Deployment's selector is immutable,
/// so this set must never change for an existing ModelDeployment: keep it minimal.
pub fn selector_labels(md: &ModelDeployment) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_string(), APP_NAME.to_string()),
        (DEPLOYMENT_LABEL.to_string(), md.name_any()),
    ])
}

/// The selector in the string form the `scale` subresource reports.
pub fn selector_string(md: &ModelDeployment) -> String {
    selector_labels(md)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Selector labels plus the descriptive `app.kubernetes.io/*` ones.
pub fn common_labels(md: &ModelDeployment) -> BTreeMap<String, String> {
    let mut labels = selector_labels(md);
    labels.insert(INSTANCE_LABEL.to_string(), md.name_any());
    labels.insert(COMPONENT_LABEL.to_string(), "inference".to_string());
    labels.insert(PART_OF_LABEL.to_string(), "modelfleet".to_string());
    labels.insert(
        MANAGED_BY_LABEL.to_string(),
        field_manager::OPERATOR.to_string(),
    );
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::test_support::minimal;

    #[test]
    fn selector_is_a_subset_of_the_common_labels() {
        let md = minimal("chat");
        let common = common_labels(&md);
        for (k, v) in selector_labels(&md) {
            assert_eq!(
                common.get(&k),
                Some(&v),
                "selector label {k} missing from common labels"
            );
        }
        assert_eq!(
            common.get(DEPLOYMENT_LABEL).map(String::as_str),
            Some("chat")
        );
        assert_eq!(
            common
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("modelfleet-operator")
        );
    }

    #[test]
    fn selector_string_lists_labels_sorted_by_key() {
        assert_eq!(
            selector_string(&minimal("chat")),
            "app.kubernetes.io/name=modelfleet-engine,modelfleet.dev/deployment=chat"
        );
    }
}
