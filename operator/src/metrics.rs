//! The operator's Prometheus metrics. Names live here and nowhere else.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::Result;

pub const RECONCILES_TOTAL: &str = "modelfleet_operator_reconciles_total";
pub const RECONCILE_ERRORS_TOTAL: &str = "modelfleet_operator_reconcile_errors_total";
pub const RECONCILE_DURATION_SECONDS: &str = "modelfleet_operator_reconcile_duration_seconds";
pub const MANAGED_MODELDEPLOYMENTS: &str = "modelfleet_operator_managed_modeldeployments";
pub const STATUS_WRITES_TOTAL: &str = "modelfleet_operator_status_writes_total";
pub const LEADER: &str = "modelfleet_operator_leader";
pub const AUTOSCALER_QUERY_FAILURES_TOTAL: &str =
    "modelfleet_operator_autoscaler_query_failures_total";
pub const AUTOSCALER_TICK_DURATION_SECONDS: &str =
    "modelfleet_operator_autoscaler_tick_duration_seconds";
pub const API_REQUESTS_TOTAL: &str = "modelfleet_operator_api_requests_total";

/// Label on [`RECONCILE_ERRORS_TOTAL`]: the kind of error (bounded set, see
/// [`crate::Error::metric_label`]).
const ERROR_LABEL: &str = "error";
/// Label on [`API_REQUESTS_TOTAL`]: the HTTP method (GET, PATCH, …; a watch is a GET).
const METHOD_LABEL: &str = "method";
/// Buckets of both duration histograms, in seconds.
const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric the operator exports, registered in its own registry (no globals, so two
/// operators in one process, as in the tests, keep separate counts).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub reconciles: IntCounter,
    pub reconcile_errors: IntCounterVec,
    pub reconcile_duration: Histogram,
    pub managed: IntGauge,
    pub status_writes: IntCounter,
    pub leader: IntGauge,
    pub autoscaler_query_failures: IntCounter,
    pub autoscaler_tick_duration: Histogram,
    pub api_requests: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self> {
        let registry = Registry::new();
        let reconciles =
            IntCounter::new(RECONCILES_TOTAL, "Reconciles of ModelDeployments started")?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                RECONCILE_ERRORS_TOTAL,
                "Reconciles that failed, by kind of error",
            ),
            &[ERROR_LABEL],
        )?;
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(RECONCILE_DURATION_SECONDS, "Time one reconcile took")
                .buckets(DURATION_BUCKETS.to_vec()),
        )?;
        let autoscaler_tick_duration = Histogram::with_opts(
            HistogramOpts::new(
                AUTOSCALER_TICK_DURATION_SECONDS,
                "Time one autoscaler tick took: every query and decision",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
        )?;
        let api_requests = IntCounterVec::new(
            Opts::new(
                API_REQUESTS_TOTAL,
                "Requests to the Kubernetes API, by HTTP method",
            ),
            &[METHOD_LABEL],
        )?;
        let managed = IntGauge::new(
            MANAGED_MODELDEPLOYMENTS,
            "ModelDeployments this operator watches",
        )?;
        let status_writes = IntCounter::new(
            STATUS_WRITES_TOTAL,
            "ModelDeployment status updates written",
        )?;
        let leader = IntGauge::new(LEADER, "1 while this process holds the leader lease")?;
        let autoscaler_query_failures = IntCounter::new(
            AUTOSCALER_QUERY_FAILURES_TOTAL,
            "Queue-depth queries to Prometheus that got no answer",
        )?;
        // Export every error kind at 0 from the start, so rates and alerts have a series.
        for label in crate::Error::METRIC_LABELS {
            reconcile_errors.with_label_values(&[*label]);
        }
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(managed.clone()))?;
        registry.register(Box::new(status_writes.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(autoscaler_query_failures.clone()))?;
        registry.register(Box::new(autoscaler_tick_duration.clone()))?;
        registry.register(Box::new(api_requests.clone()))?;
        Ok(Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            managed,
            status_writes,
            leader,
            autoscaler_query_failures,
            autoscaler_tick_duration,
            api_requests,
        })
    }

    pub fn record_error(&self, error: &crate::Error) {
        self.reconcile_errors
            .with_label_values(&[error.metric_label()])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric() {
        let m = Metrics::new().expect("metrics");
        m.reconciles.inc();
        m.record_error(&crate::Error::MissingField { what: "x" });
        m.reconcile_duration.observe(0.2);
        let text = m.encode().expect("encode");
        for name in [
            RECONCILES_TOTAL,
            RECONCILE_DURATION_SECONDS,
            MANAGED_MODELDEPLOYMENTS,
            STATUS_WRITES_TOTAL,
            LEADER,
            AUTOSCALER_QUERY_FAILURES_TOTAL,
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        assert!(
            text.contains(&format!(
                "{RECONCILE_ERRORS_TOTAL}{{error=\"missing_field\"}} 1"
            )),
            "{text}"
        );
    }
}
