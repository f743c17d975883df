//! What the load generator's tests and the engine's tests of it share: a run's
//! configuration and the checks every successful report must pass.

use modelfleet_loadgen::{
    Arrival, LatencySummary, LoadConfig, Prompt, Report, RequestSettings, StopAfter,
};

/// `requests` requests of 12 filler words and `max_tokens` tokens each.
pub fn config(arrival: Arrival, requests: u64, max_tokens: u32) -> LoadConfig {
    LoadConfig {
        arrival,
        stop: StopAfter {
            requests: Some(requests),
            duration: None,
        },
        request: RequestSettings {
            prompt: Prompt::Words(12),
            max_tokens,
            ignore_eos: true,
            ..RequestSettings::default()
        },
        seed: 7,
    }
}

pub fn assert_ordered(name: &str, s: Option<LatencySummary>) -> LatencySummary {
    let s = s.unwrap_or_else(|| panic!("{name}: no samples"));
    assert!(
        0.0 <= s.p50_ms && s.p50_ms <= s.p90_ms && s.p90_ms <= s.p99_ms && s.p99_ms <= s.max_ms,
        "{name} percentiles out of order: {s:?}"
    );
    s
}

/// Every request succeeded with `max_tokens` tokens, and the figures are consistent. The
/// test servers send one token per delta, so their inter-token gaps can be counted exactly.
pub fn assert_all_ok(report: &Report, requests: u64, max_tokens: u32) {
    let itl = assert_all_ok_with_tokens(report, requests, max_tokens);
    assert_eq!(itl.count as u64, requests * u64::from(max_tokens - 1));
}

/// As [`assert_all_ok`], for a server whose text deltas need not be one token each (a
/// character split over tokens, a held-back possible stop string): at most one gap per token
/// after the first. Returns the inter-token summary.
pub fn assert_all_ok_with_tokens(
    report: &Report,
    requests: u64,
    max_tokens: u32,
) -> LatencySummary {
    assert_eq!(report.requests.ok, requests, "{}", report.to_text());
    assert_eq!(report.requests.total, requests);
    assert_eq!(report.requests.failed(), 0);
    assert_eq!(report.output_tokens, requests * u64::from(max_tokens));
    let ttft = assert_ordered("ttft", report.latency.ttft);
    let itl = assert_ordered("inter-token", report.latency.inter_token);
    let e2e = assert_ordered("e2e", report.latency.e2e);
    assert_eq!(ttft.count as u64, requests);
    assert_eq!(e2e.count as u64, requests);
    assert!(itl.count as u64 <= requests * u64::from(max_tokens - 1));
    // A request's first token comes before its end.
    assert!(ttft.p50_ms <= e2e.max_ms);
    assert!(ttft.max_ms <= e2e.max_ms);
    assert!(report.throughput.requests_per_sec > 0.0);
    assert!(report.throughput.output_tokens_per_sec > report.throughput.requests_per_sec);
    itl
}
