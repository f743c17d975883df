//! The ModelFleet operator: the `ModelDeployment` API and the controller that reconciles it.
//!
//! - [`api`]: the types, from which the CRD is generated ([`crdgen`]).
//! - [`desired`]: pure functions from a ModelDeployment to its Deployment, Service, PDB and
//!   NetworkPolicy; [`ownership`]: which existing objects of those names are the operator's.
//! - [`status`], [`conditions`], [`transitions`]: pure status computation and the events
//!   its changes raise.
//! - [`controller`]: the reconciler, the only part that talks to the API server about
//!   ModelDeployments; [`leader`] and [`operator`] decide when it runs.
//! - [`autoscaler`]: the queue-depth autoscaler (Prometheus in, a replica count out).
//! - [`rollout`]: canary rollouts, their step machine and their analysis.
//! - [`metrics`], [`telemetry`]: what the operator tells about itself.

pub mod api;
pub mod autoscaler;
pub mod conditions;
pub mod controller;
pub mod crdgen;
pub mod desired;
pub mod error;
pub mod kube_client;
pub mod leader;
pub mod metrics;
pub mod operator;
pub mod ownership;
pub mod rbac;
pub mod rollout;
pub mod status;
pub mod telemetry;
pub mod transitions;

pub use error::{Error, Result};
