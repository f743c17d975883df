//! The canary's Deployment during a canary rollout: the spec's template beside the stable
//! one, behind the same Service (its pods carry every selector label), told apart by the
//! track label on its pods, which Prometheus puts on their series.

use k8s_openapi::api::apps::v1::Deployment;
use modelfleet_contract::labels::{CANARY_TRACK, TRACK};

use crate::api::ModelDeployment;
use crate::rollout::canary_name;

/// `from_spec` (the Deployment [`super::build_deployment`] makes of the spec) as the
/// canary's: its own name, `replicas` pods, each labelled as the canary track. Its selector
/// adds the track, so it never counts the stable pods as its own.
pub fn build_canary_deployment(
    md: &ModelDeployment,
    from_spec: &Deployment,
    replicas: i32,
) -> Deployment {
    let mut canary = from_spec.clone();
    canary.metadata.name = Some(canary_name(md));
    if let Some(spec) = canary.spec.as_mut() {
        spec.replicas = Some(replicas);
        spec.selector
            .match_labels
            .get_or_insert_default()
            .insert(TRACK.into(), CANARY_TRACK.into());
        spec.template
            .metadata
            .get_or_insert_default()
            .labels
            .get_or_insert_default()
            .insert(TRACK.into(), CANARY_TRACK.into());
    }
    canary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::test_support::minimal;
    use crate::desired::{build_deployment, selector_labels};

    #[test]
    fn the_canary_runs_the_spec_template_under_its_own_name_and_track() {
        let md = minimal("chat");
        let stable = build_deployment(&md, 4, "engine:1").expect("builds");
        let canary = build_canary_deployment(&md, &stable, 1);
        assert_eq!(canary.metadata.name.as_deref(), Some("chat-canary"));
        assert_eq!(
            canary.metadata.owner_references,
            stable.metadata.owner_references
        );
        let spec = canary.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(1));
        let labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .expect("pod labels");
        assert_eq!(labels.get(TRACK).map(String::as_str), Some(CANARY_TRACK));
        // Behind the same Service: every selector label of the ModelDeployment is there.
        for (key, value) in selector_labels(&md) {
            assert_eq!(labels.get(&key), Some(&value), "{key}");
        }
        let selector = spec.selector.match_labels.as_ref().expect("selector");
        assert_eq!(selector.get(TRACK).map(String::as_str), Some(CANARY_TRACK));
        // The containers are the spec's, unchanged.
        assert_eq!(
            spec.template.spec,
            stable.spec.as_ref().expect("spec").template.spec
        );
    }
}
