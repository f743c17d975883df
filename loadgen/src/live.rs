//! Running figures of a load run, readable while it runs (a demo table, a scenario waiting
//! for load to reach the fleet).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::percentile::quantile;
use super::record::{Outcome, RequestRecord};

/// How many of the latest times to first token the recent percentiles are taken over.
pub const RECENT_TTFT_WINDOW: usize = 256;

/// Counters shared between a run and whoever watches it. All updates are lock-free except
/// the short window of recent times to first token.
#[derive(Debug, Default)]
pub struct LiveStats {
    started: OnceLock<Instant>,
    issued: AtomicU64,
    in_flight: AtomicU64,
    ok: AtomicU64,
    rejected: AtomicU64,
    unavailable: AtomicU64,
    errors: AtomicU64,
    output_tokens: AtomicU64,
    recent_ttft: Mutex<VecDeque<Duration>>,
}

/// The figures at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LiveSnapshot {
    /// Seconds since the run started (0 before).
    pub elapsed_secs: f64,
    pub issued: u64,
    pub in_flight: u64,
    pub ok: u64,
    pub rejected: u64,
    pub unavailable: u64,
    pub errors: u64,
    /// Output tokens of finished requests.
    pub output_tokens: u64,
    /// Over the last [`RECENT_TTFT_WINDOW`] successful requests.
    pub recent_ttft_p50_ms: Option<f64>,
    pub recent_ttft_p99_ms: Option<f64>,
}

impl LiveSnapshot {
    /// Requests that finished without success.
    pub fn failed(&self) -> u64 {
        self.rejected + self.unavailable + self.errors
    }

    /// Requests that finished, either way.
    pub fn done(&self) -> u64 {
        self.ok + self.failed()
    }

    /// Output tokens per second since the start.
    pub fn output_tokens_per_sec(&self) -> f64 {
        rate(self.output_tokens, self.elapsed_secs)
    }

    /// Successful requests per second since the start.
    pub fn requests_per_sec(&self) -> f64 {
        rate(self.ok, self.elapsed_secs)
    }
}

fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

impl LiveStats {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self) -> LiveSnapshot {
        let mut recent: Vec<f64> = self
            .recent_ttft
            .lock()
            .map(|w| w.iter().map(|d| d.as_secs_f64() * 1000.0).collect())
            .unwrap_or_default();
        recent.sort_by(f64::total_cmp);
        LiveSnapshot {
            elapsed_secs: self
                .started
                .get()
                .map_or(0.0, |s| s.elapsed().as_secs_f64()),
            issued: self.issued.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            unavailable: self.unavailable.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            output_tokens: self.output_tokens.load(Ordering::Relaxed),
            recent_ttft_p50_ms: quantile(&recent, 0.50),
            recent_ttft_p99_ms: quantile(&recent, 0.99),
        }
    }

    pub(crate) fn mark_started(&self, at: Instant) {
        let _first_run_wins = self.started.set(at);
    }

    /// A request was sent; the guard counts it in flight until dropped.
    pub(crate) fn request_started(&self) -> InFlight<'_> {
        self.issued.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { stats: self }
    }

    pub(crate) fn request_finished(&self, record: &RequestRecord) {
        let counter = match record.outcome {
            Outcome::Ok => &self.ok,
            Outcome::Rejected => &self.rejected,
            Outcome::Unavailable => &self.unavailable,
            Outcome::Error => &self.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.output_tokens
            .fetch_add(record.output_tokens, Ordering::Relaxed);
        if record.outcome == Outcome::Ok
            && let Some(ttft) = record.ttft
            && let Ok(mut window) = self.recent_ttft.lock()
        {
            if window.len() == RECENT_TTFT_WINDOW {
                window.pop_front();
            }
            window.push_back(ttft);
        }
    }
}

/// Counts one request in flight while it lives (a cancelled request's future is dropped).
#[derive(Debug)]
pub(crate) struct InFlight<'a> {
    stats: &'a LiveStats,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outcome: Outcome, ttft_ms: u64, tokens: u64) -> RequestRecord {
        RequestRecord {
            target: "grpc://a:1".into(),
            outcome,
            error: None,
            reached_server: true,
            ttft: Some(Duration::from_millis(ttft_ms)),
            inter_token: Vec::new(),
            e2e: Duration::from_millis(ttft_ms * 2),
            output_tokens: tokens,
            prompt_tokens: None,
        }
    }

    #[test]
    fn counters_follow_requests_and_the_ttft_window_keeps_the_latest() {
        let stats = LiveStats::new();
        {
            let _a = stats.request_started();
            let _b = stats.request_started();
            assert_eq!(stats.snapshot().in_flight, 2);
        }
        assert_eq!(stats.snapshot().in_flight, 0);
        // Old, slow requests fall out of the window.
        for _ in 0..RECENT_TTFT_WINDOW {
            stats.request_finished(&record(Outcome::Ok, 1000, 4));
        }
        for ms in 1..=RECENT_TTFT_WINDOW as u64 {
            stats.request_finished(&record(Outcome::Ok, ms, 4));
        }
        stats.request_finished(&record(Outcome::Rejected, 5, 0));
        stats.request_finished(&record(Outcome::Error, 5000, 1));
        let s = stats.snapshot();
        assert_eq!(s.issued, 2);
        assert_eq!(s.ok, 2 * RECENT_TTFT_WINDOW as u64);
        assert_eq!((s.rejected, s.errors, s.failed()), (1, 1, 2));
        assert_eq!(s.done(), 2 * RECENT_TTFT_WINDOW as u64 + 2);
        assert_eq!(s.output_tokens, 8 * RECENT_TTFT_WINDOW as u64 + 1);
        assert_eq!(s.recent_ttft_p50_ms, Some(128.0));
        assert_eq!(s.recent_ttft_p99_ms, Some(254.0));
        assert_eq!(s.elapsed_secs, 0.0);
    }
}
