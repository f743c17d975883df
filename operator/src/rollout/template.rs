//! A pod template's identity: the hash the Deployments carry as a label, so the reconciler
//! can tell from the watch cache alone whether the stable pods run the spec's template.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use sha2::{Digest, Sha256};

/// The Deployment label holding [`template_hash`] of its pod template.
pub const TEMPLATE_HASH_LABEL: &str = "modelfleet.dev/template-hash";

/// Ten hex digits of the SHA-256 of the template's JSON. Serialising the typed template is
/// deterministic (fields in declaration order, maps sorted), so one spec always hashes the
/// same, in this process and the next.
pub fn template_hash(template: &PodTemplateSpec) -> Result<String, serde_json::Error> {
    let json = serde_json::to_vec(template)?;
    Ok(Sha256::digest(&json)
        .iter()
        .take(5)
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::build_deployment;
    use crate::desired::test_support::minimal;

    fn template(md: &crate::api::ModelDeployment) -> PodTemplateSpec {
        build_deployment(md, 1, "engine:1")
            .expect("builds")
            .spec
            .expect("spec")
            .template
    }

    #[test]
    fn one_spec_hashes_the_same_and_a_new_revision_differently() {
        let md = minimal("chat");
        let hash = template_hash(&template(&md)).expect("hashes");
        assert_eq!(hash.len(), 10);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(hash, template_hash(&template(&md)).expect("hashes"));

        let mut newer = md.clone();
        newer.spec.model.revision = "another".into();
        assert_ne!(hash, template_hash(&template(&newer)).expect("hashes"));
        // The replica count is not part of the template.
        assert_eq!(
            hash,
            template_hash(
                &build_deployment(&md, 7, "engine:1")
                    .expect("builds")
                    .spec
                    .expect("spec")
                    .template
            )
            .expect("hashes")
        );
    }
}
