//! A real local Kubernetes control plane for ModelFleet's tests and demo.
