//! The permissions the operator needs, as data: the Helm chart's ClusterRole and Role are
//! meant to say exactly this, and a cluster test runs the operator with nothing more.

use k8s_openapi::api::rbac::v1::PolicyRule;

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec![group.to_string()]),
        resources: Some(resources.iter().map(|r| r.to_string()).collect()),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    }
}

/// Rules for every namespace the operator watches (a ClusterRole, or a Role per namespace
/// for a namespace-scoped install).
pub fn controller_rules() -> Vec<PolicyRule> {
    // Server-side apply of an object that does not exist yet needs `create` as well as `patch`.
    let owned = ["get", "list", "watch", "create", "patch"];
    vec![
        rule(
            "modelfleet.dev",
            &["modeldeployments"],
            &["get", "list", "watch"],
        ),
        rule(
            "modelfleet.dev",
            &["modeldeployments/status"],
            &["get", "patch"],
        ),
        // Setting blockOwnerDeletion on a child needs update on the owner's finalizers.
        rule(
            "modelfleet.dev",
            &["modeldeployments/finalizers"],
            &["update"],
        ),
        // A canary rollout's Deployment is deleted when the rollout ends.
        rule(
            "apps",
            &["deployments"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        rule("", &["services"], &owned),
        rule("policy", &["poddisruptionbudgets"], &owned),
        // A NetworkPolicy is deleted when the spec stops asking for one.
        rule(
            "networking.k8s.io",
            &["networkpolicies"],
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        // Pods are only read, to tell crash-looping ones.
        rule("", &["pods"], &["list", "watch"]),
        rule("events.k8s.io", &["events"], &["create", "patch"]),
    ]
}

/// Rules in the operator's own namespace, for leader election.
pub fn leader_election_rules() -> Vec<PolicyRule> {
    vec![rule(
        "coordination.k8s.io",
        &["leases"],
        &["get", "create", "update"],
    )]
}
