//! The operator's Kubernetes client: kube's, with every request counted by method in
//! [`Metrics::api_requests`], so the cost of a reconcile in API calls is measured, not guessed.

use kube::client::ClientBuilder;
use kube::{Client, Config};
use tower::util::MapRequestLayer;

use crate::metrics::Metrics;

/// A client for `config` that counts its requests into `metrics`.
pub fn counted_client(config: Config, metrics: &Metrics) -> Result<Client, kube::Error> {
    let requests = metrics.api_requests.clone();
    let count = MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
        requests
            .with_label_values(&[request.method().as_str()])
            .inc();
        request
    });
    Ok(ClientBuilder::try_from(config)?.with_layer(&count).build())
}
