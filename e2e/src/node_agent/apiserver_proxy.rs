//! How pods reach the API server. The control plane listens on 127.0.0.1, which inside a
//! pod's network namespace is the pod itself; so the agent forwards TCP from the bridge's
//! address (port 443) to the API server, and pods name that address
//! `kubernetes.default.svc` in their `/etc/hosts`, a name the serving certificate carries.
//! TLS stays end to end: the agent only copies bytes.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::NodeAgentError;

/// The port pods dial, as for the `kubernetes` Service.
pub const SERVICE_PORT: u16 = 443;
/// The name pods use for the API server.
pub const SERVICE_HOST: &str = "kubernetes.default.svc";

/// Listens on `gateway:443` and forwards every connection to `apiserver`. Aborting the
/// returned task closes the listener and every forwarded connection.
pub async fn start(
    gateway: Ipv4Addr,
    apiserver: SocketAddr,
) -> Result<JoinHandle<()>, NodeAgentError> {
    let listener = TcpListener::bind((gateway, SERVICE_PORT))
        .await
        .map_err(|source| NodeAgentError::Io {
            context: format!("listening on {gateway}:{SERVICE_PORT} for pods' API traffic"),
            source,
        })?;
    Ok(tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((pod_side, _)) => {
                        connections.spawn(forward(pod_side, apiserver));
                    }
                    Err(err) => tracing::warn!(error = %err, "accepting a pod's API connection failed"),
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }))
}

async fn forward(mut pod_side: TcpStream, apiserver: SocketAddr) {
    match TcpStream::connect(apiserver).await {
        Ok(mut server_side) => {
            let _ = tokio::io::copy_bidirectional(&mut pod_side, &mut server_side).await;
        }
        Err(err) => tracing::warn!(error = %err, "reaching the API server for a pod failed"),
    }
}

/// The pod's `/etc/hosts`, as the kubelet writes one, plus the API server's name.
pub fn hosts_file(pod_ip: Ipv4Addr, hostname: &str, gateway: Option<Ipv4Addr>) -> String {
    let mut hosts = String::from(
        "# Kubernetes-managed hosts file (node agent).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    hosts.push_str(&format!("{pod_ip}\t{hostname}\n"));
    if let Some(gateway) = gateway {
        hosts.push_str(&format!(
            "{gateway}\tkubernetes kubernetes.default {SERVICE_HOST} {SERVICE_HOST}.cluster.local\n"
        ));
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_file_names_the_pod_and_the_api_server() {
        let hosts = hosts_file(
            Ipv4Addr::new(10, 200, 0, 2),
            "web-1",
            Some(Ipv4Addr::new(10, 200, 0, 1)),
        );
        assert!(hosts.contains("10.200.0.2\tweb-1\n"));
        assert!(
            hosts.contains("10.200.0.1\tkubernetes kubernetes.default kubernetes.default.svc ")
        );
        let without = hosts_file(Ipv4Addr::new(10, 200, 0, 2), "web-1", None);
        assert!(!without.contains("kubernetes"));
    }
}
