//! The whole loop on a real node: a ModelDeployment becomes engine pods (the engine image,
//! run by the kubelet through containerd under the restricted security context), clients
//! reach them through the Service (kube-proxy), Prometheus discovers and scrapes their queue
//! depth, the operator's autoscaler sizes the fleet from it, rollouts swap weights under
//! load (and canaries promote, roll back or pause on their own metrics), a killed engine
//! container is restarted, and deletion leaves nothing on the node.
//!
//! The scenarios run one at a time: each starts a whole fleet, and together they would
//! starve each other's engines of CPU on a small machine.

#[path = "fleet/support.rs"]
mod support;

#[path = "fleet/scenarios.rs"]
mod scenarios;

#[path = "fleet/canary.rs"]
mod canary;
