//! The Service clients call: gRPC and OpenAI-compatible HTTP on every ready engine pod.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use modelfleet_contract::ports::{self, EnginePort};

use super::labels::selector_labels;
use super::owned_metadata;
use crate::Result;
use crate::api::ModelDeployment;

/// The ClusterIP Service in front of `md`'s pods.
pub fn build_service(md: &ModelDeployment) -> Result<Service> {
    Ok(Service {
        metadata: owned_metadata(md)?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(md)),
            ports: Some(vec![
                // h2c tells gateways and meshes to speak HTTP/2 cleartext, which gRPC needs.
                service_port(ports::GRPC, "kubernetes.io/h2c"),
                service_port(ports::HTTP, "http"),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

/// The in-cluster URL of the OpenAI-compatible API.
pub fn endpoint(md: &ModelDeployment) -> String {
    format!(
        "http://{}.{}.svc:{}",
        md.name_any(),
        md.namespace().unwrap_or_default(),
        ports::HTTP.number
    )
}

fn service_port(port: EnginePort, app_protocol: &str) -> ServicePort {
    ServicePort {
        name: Some(port.name.into()),
        port: port.k8s(),
        // The Service's port forwards to the container port of the same name.
        target_port: Some(IntOrString::String(port.name.into())),
        protocol: Some("TCP".into()),
        app_protocol: Some(app_protocol.into()),
        ..ServicePort::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::test_support::minimal;

    #[test]
    fn selects_the_pods_and_exposes_both_named_ports() {
        let md = minimal("chat");
        let svc = build_service(&md).expect("service");
        let spec = svc.spec.expect("spec");
        assert_eq!(spec.selector, Some(selector_labels(&md)));
        let ports: Vec<_> = spec
            .ports
            .expect("ports")
            .into_iter()
            .map(|p| (p.name, p.port, p.target_port))
            .collect();
        assert_eq!(
            ports,
            vec![
                (
                    Some("grpc".into()),
                    50051,
                    Some(IntOrString::String("grpc".into()))
                ),
                (
                    Some("http".into()),
                    8000,
                    Some(IntOrString::String("http".into()))
                ),
            ]
        );
        assert_eq!(svc.metadata.owner_references.map(|o| o.len()), Some(1));
    }

    #[test]
    fn endpoint_is_the_service_dns_name() {
        assert_eq!(endpoint(&minimal("chat")), "http://chat.ml.svc:8000");
    }
}
