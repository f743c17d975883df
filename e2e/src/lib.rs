//! A real local Kubernetes control plane for ModelFleet's tests and demo.
//!
//! [`Cluster::start`] runs etcd and kube-apiserver (plus, on request, the controller-manager
//! and the scheduler) from the binaries `make tools` provisions, on free local ports, with
//! TLS, service-account tokens and RBAC, and hands back a [`kube::Client`]. Tests in parallel
//! each get their own cluster. [`prometheus::Prometheus`] scrapes pods found through a
//! cluster's API server, or fixed targets.

pub mod binaries;
mod cluster;
mod error;
pub mod fleet;
pub mod kubeconfig;
pub mod node_agent;
pub mod nodes;
pub mod pki;
mod ports;
pub mod process;
pub mod prometheus;
pub mod tools;
pub mod wait;

pub use cluster::{Cluster, ClusterOptions};
pub use error::Error;
