//! A synthetic queue-depth series for every ModelDeployment of the benchmark, labelled as
//! the pod relabelling labels engines' series, served for Prometheus to scrape.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, RwLock};

use modelfleet_contract::metrics::{
    MODEL_DEPLOYMENT as MODEL_DEPLOYMENT_LABEL, NAMESPACE as NAMESPACE_LABEL, QUEUE_DEPTH,
};
use modelfleet_e2e::queue_depth_endpoint::serve_exposition;

/// The queue depth of each (namespace, name), 0 until set.
pub struct SyntheticQueues {
    depths: RwLock<HashMap<(String, String), f64>>,
}

impl SyntheticQueues {
    pub fn new(names: &[(String, String)]) -> Arc<Self> {
        Arc::new(Self {
            depths: RwLock::new(names.iter().map(|key| (key.clone(), 0.0)).collect()),
        })
    }

    pub fn set(&self, namespace: &str, name: &str, depth: f64) {
        let mut depths = self.depths.write().unwrap_or_else(|e| e.into_inner());
        depths.insert((namespace.to_string(), name.to_string()), depth);
    }

    /// Serves every series; returns the `host:port` to scrape.
    pub async fn serve(self: &Arc<Self>) -> String {
        let queues = self.clone();
        serve_exposition(move || queues.exposition()).await
    }

    fn exposition(&self) -> String {
        let depths = self.depths.read().unwrap_or_else(|e| e.into_inner());
        let mut body = format!("# TYPE {QUEUE_DEPTH} gauge\n");
        for ((namespace, name), depth) in depths.iter() {
            let _ = writeln!(
                body,
                "{QUEUE_DEPTH}{{{NAMESPACE_LABEL}=\"{namespace}\",{MODEL_DEPLOYMENT_LABEL}=\"{name}\"}} {depth}"
            );
        }
        body
    }
}
