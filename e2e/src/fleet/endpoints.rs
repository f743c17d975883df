//! Finding a ModelDeployment's serving pods the way a gateway does: through the
//! EndpointSlices of its Service. A gateway balances requests over the ready endpoints and
//! drops one the moment it is marked terminating; a client of the Service's cluster IP
//! keeps its connection (kube-proxy balances connections, not requests) until the pod closes
//! it.

use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams};
use modelfleet_loadgen::{Target, TargetSet};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// How often a follower re-reads the EndpointSlices. A gateway watching them reacts about as
/// fast; the engines' preStop pause is longer than this.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// The addresses of the Service's ready endpoints (ready, not terminating), sorted.
pub async fn ready_endpoints(
    client: &Client,
    namespace: &str,
    service: &str,
) -> Result<Vec<String>, Error> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await?;
    let mut addresses: Vec<String> = list
        .items
        .iter()
        .flat_map(|slice| slice.endpoints.iter())
        .filter(|endpoint| {
            endpoint
                .conditions
                .as_ref()
                .is_some_and(|c| c.ready.unwrap_or(false) && !c.terminating.unwrap_or(false))
        })
        .flat_map(|endpoint| endpoint.addresses.iter().cloned())
        .collect();
    addresses.sort();
    addresses.dedup();
    Ok(addresses)
}

/// Keeps a load generator's targets equal to a Service's ready endpoints.
pub struct EndpointFollower {
    task: JoinHandle<()>,
}

impl EndpointFollower {
    /// Starts following; `to_target` turns an endpoint address into the target to load
    /// (e.g. `grpc://<ip>:50051`). While the Service has no ready endpoint the targets stay
    /// as they were, so the load generator keeps reporting failures rather than idling.
    pub fn start(
        client: Client,
        namespace: String,
        service: String,
        targets: TargetSet,
        to_target: impl Fn(&str) -> Target + Send + 'static,
        cancel: CancellationToken,
    ) -> Self {
        let task = tokio::spawn(async move {
            loop {
                match ready_endpoints(&client, &namespace, &service).await {
                    Ok(addresses) if !addresses.is_empty() => {
                        let wanted: Vec<Target> = addresses.iter().map(|a| to_target(a)).collect();
                        if *targets.current() != *wanted {
                            tracing::info!(?addresses, "load follows the ready endpoints");
                            targets.replace(wanted);
                        }
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "reading EndpointSlices failed"),
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
                }
            }
        });
        Self { task }
    }
}

impl Drop for EndpointFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}
