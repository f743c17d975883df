//! The PodDisruptionBudget: voluntary disruptions (node drains, upgrades) take at most one
//! engine pod at a time, since each pod needs minutes to load weights before it serves.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::selector_labels;
use super::owned_metadata;
use crate::Result;
use crate::api::ModelDeployment;

pub fn build_pdb(md: &ModelDeployment) -> Result<PodDisruptionBudget> {
    Ok(PodDisruptionBudget {
        metadata: owned_metadata(md)?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(md)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::test_support::minimal;

    #[test]
    fn allows_one_pod_unavailable_and_selects_the_pods() {
        let md = minimal("chat");
        let spec = build_pdb(&md).expect("pdb").spec.expect("spec");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        assert_eq!(
            spec.selector.and_then(|s| s.match_labels),
            Some(selector_labels(&md))
        );
    }
}
