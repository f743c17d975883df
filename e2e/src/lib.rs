//! A real local Kubernetes control plane for ModelFleet's tests and demo.
//!
//! [`Cluster::start`] runs etcd and kube-apiserver (plus, on request, the controller-manager
//! and the scheduler) from the binaries `make tools` provisions, on free local ports, with
//! TLS, service-account tokens and RBAC, and hands back a [`kube::Client`]. Tests in parallel
//! each get their own cluster. [`real_node::RealNode`] adds a real node (containerd, the
//! kubelet, kube-proxy) running the images `make images` built; [`kwok::Kwok`] simulated
//! nodes at scale. [`prometheus::Prometheus`] scrapes pods it discovers through a cluster's
//! API server, or fixed targets. [`fleet::Fleet`] is all of it with the operator.

pub mod at_exit;
mod background;
pub mod binaries;
mod cluster;
mod error;
pub mod fleet;
pub mod forward;
pub mod images;
pub mod kubeconfig;
pub mod kwok;
pub mod pki;
mod ports;
pub mod process;
pub mod prometheus;
pub mod queue_depth_endpoint;
pub mod real_node;
pub mod subnets;
pub mod tools;
pub mod wait;

pub use cluster::{APISERVER_TLS_NAME, Cluster, ClusterOptions};
pub use error::Error;
