//! Labels on the objects the operator makes, and who applies objects.

/// Names the ModelDeployment a pod (or Deployment, Service, PDB) belongs to. Prometheus
/// keeps the pods that carry it and relabels it into [`crate::metrics::MODEL_DEPLOYMENT`],
/// the series label the autoscaler queries by.
pub const DEPLOYMENT: &str = "modelfleet.dev/deployment";

/// On the pods of a canary rollout's new template, with the value [`CANARY_TRACK`]; the
/// stable pods do not carry it. Prometheus relabels it into [`crate::metrics::TRACK`], so a
/// canary's analysis can tell the two apart.
pub const TRACK: &str = "modelfleet.dev/track";
/// The value of [`TRACK`] on a canary's pods.
pub const CANARY_TRACK: &str = "canary";

/// Server-side-apply field managers: who owns which fields of an object.
pub mod field_manager {
    /// The operator, for everything it reconciles.
    pub const OPERATOR: &str = "modelfleet-operator";
    /// The test harness and the demo, for what they set up around the operator.
    pub const HARNESS: &str = "modelfleet-e2e";
}

/// A Kubernetes label name as Prometheus's service discovery spells it in its meta labels:
/// `__meta_kubernetes_pod_label_<name>` with every character but `[a-zA-Z0-9]` as `_`.
pub fn prometheus_pod_meta_label(label: &str) -> String {
    let name: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("__meta_kubernetes_pod_label_{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deployment_label_as_service_discovery_spells_it() {
        assert_eq!(
            prometheus_pod_meta_label(DEPLOYMENT),
            "__meta_kubernetes_pod_label_modelfleet_dev_deployment"
        );
    }
}
