//! The PromQL of a canary's analysis: each figure over one side's pods (the canary's, by the
//! `track` series label, or the stable ones, without it) over the step's window.

use std::time::Duration;

use modelfleet_contract::labels::CANARY_TRACK;
use modelfleet_contract::metrics::{
    INTER_TOKEN_LATENCY, MODEL_DEPLOYMENT, NAMESPACE, OUTCOME, REQUESTS, TIME_TO_FIRST_TOKEN, TRACK,
};

use crate::autoscaler::promql::escape_label_value;

/// The `outcome` of a request the engine failed while serving.
const FAILED_OUTCOME: &str = "failed";

/// Which pods a query covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Canary,
    Stable,
}

/// One side's queries for one ModelDeployment over one window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queries {
    /// Requests that ended in the window.
    pub requests: String,
    /// The share of those the engine failed.
    pub failed_request_ratio: String,
    pub time_to_first_token_p95: String,
    pub inter_token_latency_p95: String,
}

/// The queries of `side` of `namespace/name` over the last `window`.
pub fn queries(namespace: &str, name: &str, side: Side, window: Duration) -> Queries {
    let track = match side {
        Side::Canary => format!("{TRACK}=\"{CANARY_TRACK}\""),
        Side::Stable => format!("{TRACK}!=\"{CANARY_TRACK}\""),
    };
    let selector = format!(
        "{NAMESPACE}=\"{}\",{MODEL_DEPLOYMENT}=\"{}\",{track}",
        escape_label_value(namespace),
        escape_label_value(name),
    );
    let range = range(window);
    let ended = format!("sum(increase({REQUESTS}{{{selector}}}[{range}]))");
    let failed =
        format!("sum(increase({REQUESTS}{{{selector},{OUTCOME}=\"{FAILED_OUTCOME}\"}}[{range}]))");
    let p95 = |histogram: &str| {
        format!(
            "histogram_quantile(0.95, sum by (le) (increase({histogram}_bucket{{{selector}}}[{range}])))"
        )
    };
    Queries {
        // No failed series (an engine that exports outcomes only once they happen) is no
        // failure; `clamp_min` keeps the ratio defined (0) when nothing ended, and no ended
        // series at all leaves it undefined.
        failed_request_ratio: format!("({failed} or vector(0)) / clamp_min({ended}, 1)"),
        requests: ended,
        time_to_first_token_p95: p95(TIME_TO_FIRST_TOKEN),
        inter_token_latency_p95: p95(INTER_TOKEN_LATENCY),
    }
}

/// A range of whole seconds, at least one.
fn range(window: Duration) -> String {
    format!("{}s", window.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canary_and_the_stable_differ_only_by_the_track_matcher() {
        let canary = queries("ml", "chat", Side::Canary, Duration::from_secs(90));
        let stable = queries("ml", "chat", Side::Stable, Duration::from_secs(90));
        assert_eq!(
            canary.requests,
            "sum(increase(modelfleet_engine_requests_total{namespace=\"ml\",modeldeployment=\"chat\",track=\"canary\"}[90s]))"
        );
        assert_eq!(
            stable.requests,
            canary
                .requests
                .replace("track=\"canary\"", "track!=\"canary\"")
        );
        assert_eq!(
            canary.time_to_first_token_p95,
            "histogram_quantile(0.95, sum by (le) (increase(modelfleet_engine_time_to_first_token_seconds_bucket{namespace=\"ml\",modeldeployment=\"chat\",track=\"canary\"}[90s])))"
        );
        assert!(canary.failed_request_ratio.contains("outcome=\"failed\""));
        assert!(
            canary
                .failed_request_ratio
                .contains("/ clamp_min(sum(increase(")
        );
    }

    #[test]
    fn names_cannot_break_out_of_their_matchers() {
        let q = queries("ml\"}", "chat", Side::Canary, Duration::ZERO);
        assert!(
            q.requests.contains("namespace=\"ml\\\"}\""),
            "{}",
            q.requests
        );
        assert!(q.requests.ends_with("[1s]))"));
    }
}
