//! The verdict of one analysis: the canary's figures against the bounds, on their own and
//! relative to the stable pods' figures over the same window. Pure.

use super::plan::Bounds;
use crate::api::{AnalysisVerdict, Figures};

/// A latency ratio never fails on a difference smaller than this: the engines' latency
/// histograms cannot resolve less, and a few milliseconds on a fast model are noise.
pub const LATENCY_SLACK_SECONDS: f64 = 0.010;

/// The verdict on `canary` against `stable` within `bounds`, and why (each failed bound, or
/// what kept it from a verdict). `missing` in the result says the verdict is inconclusive
/// because a figure could not be measured (as opposed to too few requests so far).
pub fn judge(bounds: &Bounds, canary: &Figures, stable: &Figures) -> Judgement {
    let mut failures = Vec::new();
    let mut missing = Vec::new();

    let Some(requests) = canary.requests else {
        missing.push("no request figures for the canary's pods".to_string());
        return Judgement::inconclusive(missing, true);
    };
    match canary.failed_request_ratio {
        Some(ratio) if ratio > bounds.max_failed_request_ratio => failures.push(format!(
            "failed-request ratio {} is above {}",
            round4(ratio),
            bounds.max_failed_request_ratio
        )),
        Some(_) => {}
        None => missing.push("no failed-request ratio for the canary's pods".into()),
    }
    latency(
        "time-to-first-token p95",
        canary.time_to_first_token_p95_seconds,
        stable.time_to_first_token_p95_seconds,
        bounds.max_time_to_first_token_p95,
        bounds.max_time_to_first_token_ratio,
        &mut failures,
        &mut missing,
    );
    latency(
        "inter-token latency p95",
        canary.inter_token_latency_p95_seconds,
        stable.inter_token_latency_p95_seconds,
        bounds.max_inter_token_latency_p95,
        bounds.max_inter_token_latency_ratio,
        &mut failures,
        &mut missing,
    );

    // Too few requests: a figure that looks bad over three requests is not a verdict.
    if requests < bounds.min_requests {
        let mut reasons = vec![format!(
            "{} of the {} requests the analysis needs",
            requests.floor(),
            bounds.min_requests
        )];
        reasons.extend(missing);
        return Judgement::inconclusive(reasons, false);
    }
    if !failures.is_empty() {
        failures.extend(missing);
        return Judgement {
            verdict: AnalysisVerdict::Fail,
            reasons: failures,
            missing: false,
        };
    }
    if !missing.is_empty() {
        return Judgement::inconclusive(missing, true);
    }
    Judgement {
        verdict: AnalysisVerdict::Pass,
        reasons: Vec::new(),
        missing: false,
    }
}

/// A verdict and its reasons.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    pub verdict: AnalysisVerdict,
    pub reasons: Vec<String>,
    /// Inconclusive because a figure is missing (not merely too few requests).
    pub missing: bool,
}

impl Judgement {
    fn inconclusive(reasons: Vec<String>, missing: bool) -> Self {
        Self {
            verdict: AnalysisVerdict::Inconclusive,
            reasons,
            missing,
        }
    }
}

/// Checks one latency figure: against its absolute bound, and against `ratio` times the
/// stable's (with [`LATENCY_SLACK_SECONDS`] of slack).
fn latency(
    what: &str,
    canary: Option<f64>,
    stable: Option<f64>,
    absolute: Option<f64>,
    ratio: f64,
    failures: &mut Vec<String>,
    missing: &mut Vec<String>,
) {
    let Some(canary) = canary else {
        missing.push(format!("no {what} for the canary's pods"));
        return;
    };
    if let Some(bound) = absolute
        && canary > bound
    {
        failures.push(format!(
            "{what} {}s is above the bound of {bound}s",
            round4(canary)
        ));
    }
    let Some(stable) = stable else {
        missing.push(format!("no {what} for the stable pods to compare with"));
        return;
    };
    let allowed = (stable * ratio).max(stable + LATENCY_SLACK_SECONDS);
    if canary > allowed {
        failures.push(format!(
            "{what} {}s is {:.1}x the stable's {}s (at most {ratio}x)",
            round4(canary),
            canary / stable.max(f64::MIN_POSITIVE),
            round4(stable)
        ));
    }
}

/// Four decimals: enough for seconds and ratios in a status.
pub fn round4(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MissingMetrics;

    fn bounds() -> Bounds {
        Bounds {
            min_requests: 20.0,
            max_failed_request_ratio: 0.01,
            max_time_to_first_token_ratio: 2.0,
            max_inter_token_latency_ratio: 2.0,
            max_time_to_first_token_p95: None,
            max_inter_token_latency_p95: None,
            missing_metrics: MissingMetrics::Pause,
        }
    }

    fn figures(requests: f64, failed: f64, ttft: f64, itl: f64) -> Figures {
        Figures {
            requests: Some(requests),
            failed_request_ratio: Some(failed),
            time_to_first_token_p95_seconds: Some(ttft),
            inter_token_latency_p95_seconds: Some(itl),
        }
    }

    #[test]
    fn a_canary_like_the_stable_passes() {
        let j = judge(
            &bounds(),
            &figures(40.0, 0.0, 0.12, 0.03),
            &figures(80.0, 0.0, 0.10, 0.03),
        );
        assert_eq!(j.verdict, AnalysisVerdict::Pass, "{:?}", j.reasons);
        assert!(j.reasons.is_empty());
    }

    #[test]
    fn a_several_fold_time_to_first_token_fails_naming_both_figures() {
        let j = judge(
            &bounds(),
            &figures(40.0, 0.0, 0.9, 0.03),
            &figures(80.0, 0.0, 0.1, 0.03),
        );
        assert_eq!(j.verdict, AnalysisVerdict::Fail);
        assert_eq!(j.reasons.len(), 1, "{:?}", j.reasons);
        assert!(
            j.reasons[0].contains("time-to-first-token p95 0.9s"),
            "{:?}",
            j.reasons
        );
        assert!(
            j.reasons[0].contains("9.0x the stable's 0.1s"),
            "{:?}",
            j.reasons
        );
    }

    #[test]
    fn failures_and_absolute_bounds_fail_on_their_own() {
        let j = judge(
            &bounds(),
            &figures(100.0, 0.05, 0.1, 0.03),
            &figures(100.0, 0.0, 0.1, 0.03),
        );
        assert_eq!(j.verdict, AnalysisVerdict::Fail);
        assert!(j.reasons[0].contains("failed-request ratio 0.05"));

        let strict = Bounds {
            max_inter_token_latency_p95: Some(0.02),
            ..bounds()
        };
        let j = judge(
            &strict,
            &figures(100.0, 0.0, 0.1, 0.03),
            &figures(100.0, 0.0, 0.1, 0.03),
        );
        assert_eq!(j.verdict, AnalysisVerdict::Fail);
        assert!(
            j.reasons[0].contains("above the bound of 0.02s"),
            "{:?}",
            j.reasons
        );
    }

    #[test]
    fn too_few_requests_is_no_verdict_even_with_bad_figures() {
        let j = judge(
            &bounds(),
            &figures(3.0, 0.5, 5.0, 1.0),
            &figures(80.0, 0.0, 0.1, 0.03),
        );
        assert_eq!(j.verdict, AnalysisVerdict::Inconclusive);
        assert!(!j.missing);
        assert!(
            j.reasons[0].contains("3 of the 20 requests"),
            "{:?}",
            j.reasons
        );
    }

    #[test]
    fn a_missing_figure_is_never_a_pass() {
        // Prometheus unreachable: nothing at all.
        let j = judge(&bounds(), &Figures::default(), &Figures::default());
        assert_eq!(j.verdict, AnalysisVerdict::Inconclusive);
        assert!(j.missing);
        // The stable pods' latency missing: nothing to compare with.
        let stable = Figures {
            time_to_first_token_p95_seconds: None,
            ..figures(80.0, 0.0, 0.1, 0.03)
        };
        let j = judge(&bounds(), &figures(40.0, 0.0, 0.1, 0.03), &stable);
        assert_eq!(j.verdict, AnalysisVerdict::Inconclusive);
        assert!(j.missing);
        assert!(j.reasons[0].contains("stable pods"), "{:?}", j.reasons);
    }

    #[test]
    fn a_few_milliseconds_never_fail_a_ratio() {
        let j = judge(
            &bounds(),
            &figures(40.0, 0.0, 0.012, 0.004),
            &figures(80.0, 0.0, 0.004, 0.001),
        );
        assert_eq!(j.verdict, AnalysisVerdict::Pass, "{:?}", j.reasons);
    }
}
