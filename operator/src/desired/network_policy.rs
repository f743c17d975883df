//! The NetworkPolicy that admits only the clients `spec.networkPolicy` names (to gRPC and
//! HTTP) and its Prometheus (to HTTP, where `/metrics` is), when the spec asks for one.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec as PolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use modelfleet_contract::ports;

use super::labels::selector_labels;
use super::owned_metadata;
use crate::Result;
use crate::api::{ModelDeployment, NetworkPeer};

/// The policy for `md`, or `None` when `spec.networkPolicy` is unset.
pub fn build_network_policy(md: &ModelDeployment) -> Result<Option<NetworkPolicy>> {
    let Some(wanted) = &md.spec.network_policy else {
        return Ok(None);
    };
    // An ingress rule with no peers admits everyone, so a rule is written only for a
    // non-empty list: with no rules at all, the policy admits nobody.
    let mut ingress = Vec::new();
    if !wanted.clients.is_empty() {
        ingress.push(rule(
            &wanted.clients,
            &[ports::GRPC.k8s(), ports::HTTP.k8s()],
        ));
    }
    if !wanted.prometheus.is_empty() {
        ingress.push(rule(&wanted.prometheus, &[ports::HTTP.k8s()]));
    }
    Ok(Some(NetworkPolicy {
        metadata: owned_metadata(md)?,
        spec: Some(PolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(md)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            egress: None,
        }),
    }))
}

fn rule(peers: &[NetworkPeer], ports: &[i32]) -> NetworkPolicyIngressRule {
    NetworkPolicyIngressRule {
        from: Some(
            peers
                .iter()
                .map(|peer| NetworkPolicyPeer {
                    pod_selector: peer.pod_selector.clone(),
                    namespace_selector: peer.namespace_selector.clone(),
                    ip_block: None,
                })
                .collect(),
        ),
        ports: Some(
            ports
                .iter()
                .map(|port| NetworkPolicyPort {
                    port: Some(IntOrString::Int(*port)),
                    protocol: Some("TCP".into()),
                    end_port: None,
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::NetworkPolicySpec;
    use crate::desired::test_support::minimal;

    fn labels(key: &str, value: &str) -> Option<LabelSelector> {
        Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(key.to_string(), value.to_string())])),
            ..LabelSelector::default()
        })
    }

    fn ports(rule: &NetworkPolicyIngressRule) -> Vec<i32> {
        rule.ports
            .iter()
            .flatten()
            .filter_map(|p| match p.port {
                Some(IntOrString::Int(n)) => Some(n),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn no_policy_unless_the_spec_asks_for_one() {
        assert_eq!(build_network_policy(&minimal("chat")).expect("build"), None);
    }

    #[test]
    fn clients_reach_both_ports_and_prometheus_only_http() {
        let mut md = minimal("chat");
        md.spec.network_policy = Some(NetworkPolicySpec {
            clients: vec![NetworkPeer {
                pod_selector: labels("app", "gateway"),
                namespace_selector: None,
            }],
            prometheus: vec![NetworkPeer {
                pod_selector: labels("app.kubernetes.io/name", "prometheus"),
                namespace_selector: labels("kubernetes.io/metadata.name", "monitoring"),
            }],
        });
        let policy = build_network_policy(&md).expect("build").expect("policy");
        assert_eq!(policy.metadata.name.as_deref(), Some("chat"));
        assert_eq!(policy.metadata.owner_references.map(|o| o.len()), Some(1));
        let spec = policy.spec.expect("spec");
        assert_eq!(
            spec.pod_selector.and_then(|s| s.match_labels),
            Some(selector_labels(&md))
        );
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
        let ingress = spec.ingress.expect("ingress");
        assert_eq!(ingress.len(), 2);
        assert_eq!(
            ports(&ingress[0]),
            vec![ports::GRPC.k8s(), ports::HTTP.k8s()]
        );
        let clients = ingress[0].from.as_ref().expect("from");
        assert_eq!(clients[0].pod_selector, labels("app", "gateway"));
        assert_eq!(clients[0].namespace_selector, None);
        assert_eq!(ports(&ingress[1]), vec![ports::HTTP.k8s()]);
        let prometheus = ingress[1].from.as_ref().expect("from");
        assert_eq!(
            prometheus[0].namespace_selector,
            labels("kubernetes.io/metadata.name", "monitoring")
        );
    }

    #[test]
    fn an_empty_client_list_admits_nobody_rather_than_everybody() {
        let mut md = minimal("chat");
        md.spec.network_policy = Some(NetworkPolicySpec::default());
        let policy = build_network_policy(&md).expect("build").expect("policy");
        let spec = policy.spec.expect("spec");
        assert_eq!(
            spec.ingress,
            Some(vec![]),
            "no rule, not a rule without peers"
        );
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
    }
}
