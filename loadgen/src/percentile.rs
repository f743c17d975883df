//! Latency percentiles.
//!
//! Exact quantiles over the sorted samples (nearest-rank), not an HDR histogram: a run keeps
//! at most a few hundred thousand samples (requests × output tokens for inter-token gaps), so
//! sorting them costs milliseconds, needs no extra dependency, and the figures are exact
//! rather than rounded to a histogram bucket — which also makes them testable to the sample.

use std::time::Duration;

use serde::Serialize;

/// The nearest-rank `q`-quantile (0 < q ≤ 1) of ascending `sorted` samples: the smallest
/// sample such that at least a fraction `q` of the samples are at or below it. `None` when
/// there are no samples.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// Summary of one latency, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    /// `None` when there are no samples.
    pub fn from_durations<'a>(samples: impl IntoIterator<Item = &'a Duration>) -> Option<Self> {
        let mut ms: Vec<f64> = samples
            .into_iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        Self::from_millis(&mut ms)
    }

    /// Sorts `ms` in place.
    pub fn from_millis(ms: &mut [f64]) -> Option<Self> {
        if ms.is_empty() {
            return None;
        }
        ms.sort_by(f64::total_cmp);
        let count = ms.len();
        let mean_ms = ms.iter().sum::<f64>() / count as f64;
        Some(Self {
            count,
            mean_ms,
            p50_ms: quantile(ms, 0.50)?,
            p90_ms: quantile(ms, 0.90)?,
            p99_ms: quantile(ms, 0.99)?,
            max_ms: *ms.last()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles_of_one_to_a_hundred() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&xs, 0.50), Some(50.0));
        assert_eq!(quantile(&xs, 0.90), Some(90.0));
        assert_eq!(quantile(&xs, 0.99), Some(99.0));
        assert_eq!(quantile(&xs, 1.0), Some(100.0));
        assert_eq!(quantile(&xs, 0.0), Some(1.0));
        assert_eq!(quantile(&xs, 0.001), Some(1.0));
    }

    #[test]
    fn small_and_empty_sample_sets() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
        // Ten samples: p50 is the 5th, p90 the 9th, p99 the 10th.
        let xs: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile(&xs, 0.5), Some(5.0));
        assert_eq!(quantile(&xs, 0.9), Some(9.0));
        assert_eq!(quantile(&xs, 0.99), Some(10.0));
    }

    #[test]
    fn a_summary_sorts_its_samples_and_is_ordered() {
        let samples: Vec<Duration> = [30u64, 10, 20, 1000, 40]
            .iter()
            .map(|&ms| Duration::from_millis(ms))
            .collect();
        let s = LatencySummary::from_durations(&samples).expect("samples");
        assert_eq!(s.count, 5);
        assert!((s.mean_ms - 220.0).abs() < 1e-9);
        assert!((s.p50_ms - 30.0).abs() < 1e-9);
        assert!((s.p90_ms - 1000.0).abs() < 1e-9);
        assert!((s.max_ms - 1000.0).abs() < 1e-9);
        assert!(s.p50_ms <= s.p90_ms && s.p90_ms <= s.p99_ms && s.p99_ms <= s.max_ms);
        assert_eq!(LatencySummary::from_durations(&[]), None);
    }
}
