//! The whole loop, all real but the container runtime: a ModelDeployment becomes engine pods
//! (processes in their own network namespaces), Prometheus scrapes their queue depth, the
//! operator's autoscaler sizes the fleet from it, rollouts swap weights under load, and
//! deletion leaves nothing behind.
//!
//! The scenarios run one at a time: each starts a whole fleet, and together they would
//! starve each other's engines of CPU on a small machine.

#[path = "fleet/support.rs"]
mod support;

#[path = "fleet/scenarios.rs"]
mod scenarios;
