//! The engine's ports: what it listens on, what the operator's pods, Services, probes and
//! NetworkPolicies name, and what the harness connects to.

/// One port of the engine container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnginePort {
    /// The container port's (and Service port's) name.
    pub name: &'static str,
    pub number: u16,
}

impl EnginePort {
    /// The number as Kubernetes' API types hold ports (an int32).
    pub const fn k8s(self) -> i32 {
        self.number as i32
    }
}

/// gRPC: `modelfleet.engine.v1.Generation` and `grpc.health.v1` (the pod's probes).
pub const GRPC: EnginePort = EnginePort {
    name: "grpc",
    number: 50051,
};

/// HTTP: the OpenAI-compatible API and `/metrics`. Prometheus scrapes the container port
/// of this name.
pub const HTTP: EnginePort = EnginePort {
    name: "http",
    number: 8000,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ports_differ_and_fit_kubernetes() {
        assert_ne!(GRPC.number, HTTP.number);
        assert_ne!(GRPC.name, HTTP.name);
        assert_eq!(GRPC.k8s(), 50051);
        assert_eq!(HTTP.k8s(), 8000);
    }
}
