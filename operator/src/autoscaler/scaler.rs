//! The replica decision for one ModelDeployment: pure, fed one queue-depth reading per tick.
//!
//! Each reading gives a recommendation, `clamp(ceil(queue depth / target), floor, max)`.
//! Stabilization works as the HPA's does, over the recommendations of the current unbroken
//! run of readings: scaling up goes to the *lowest* recommendation of the last
//! `scaleUpStabilization` (so a higher one must hold that long; `0s` scales up at once),
//! scaling down to the *highest* of the last `scaleDownStabilization` (so a dip shorter than
//! the window changes nothing). A window counts only once readings have covered all of it:
//! after an operator restart, or after Prometheus was unreachable, a scale-down waits a
//! whole window of fresh readings. A missing reading never changes the size.

use std::collections::VecDeque;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::policy::Policy;

/// What one tick learnt about the queue depth.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// Waiting requests summed over the pods, averaged over the window.
    QueueDepth(f64),
    /// Prometheus answered, but holds no queue-depth series for this ModelDeployment.
    NoMetrics,
    /// Prometheus could not be asked (the error, for the condition message).
    Unavailable(String),
}

/// Whether the autoscaler could act on the last reading, for `ScalingActive`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Activity {
    /// Deciding from the queue depth.
    Active,
    /// Holding the last decision: Prometheus answered with no series.
    NoMetrics,
    /// Holding the last decision: Prometheus could not be reached (the error).
    PrometheusUnavailable(String),
}

/// The outcome of one tick.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Replicas to run from now on.
    pub replicas: i32,
    /// Replicas before this tick.
    pub previous: i32,
    /// The queue depth read this tick, if any.
    pub queue_depth: Option<f64>,
    /// What this reading alone would ask for.
    pub recommendation: Option<i32>,
    pub activity: Activity,
}

impl Decision {
    /// Why the size changed, for the event: "queue depth 12 over target 4".
    pub fn cause(&self, policy: &Policy) -> Option<String> {
        if self.replicas == self.previous {
            return None;
        }
        let depth = self.queue_depth?;
        let relation = if self.replicas > self.previous {
            "over"
        } else {
            "under"
        };
        Some(if self.replicas == 0 {
            format!(
                "queue empty for {}s",
                policy.scale_to_zero_after.unwrap_or_default().as_secs()
            )
        } else {
            format!(
                "queue depth {} {relation} target {} per replica",
                round2(depth),
                policy.target_queue_depth
            )
        })
    }
}

/// Rounds to two decimals, as status and messages show the queue depth.
pub fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The memory of one ModelDeployment's autoscaler between ticks.
#[derive(Clone, Debug)]
pub struct Scaler {
    replicas: i32,
    /// Start of the current unbroken run of readings.
    observing_since: Option<Timestamp>,
    /// Recommendations of that run, oldest first, pruned to the longest window.
    history: VecDeque<(Timestamp, i32)>,
    /// Since when every reading has been an empty queue.
    idle_since: Option<Timestamp>,
}

impl Scaler {
    /// Starts from the size last decided (e.g. `status.desiredReplicas`), with no readings.
    pub fn new(replicas: i32) -> Self {
        Self {
            replicas,
            observing_since: None,
            history: VecDeque::new(),
            idle_since: None,
        }
    }

    /// The size last decided.
    pub fn replicas(&self) -> i32 {
        self.replicas
    }

    /// Takes one reading at `now` and decides.
    pub fn step(&mut self, policy: &Policy, reading: &Reading, now: Timestamp) -> Decision {
        let previous = self.replicas.clamp(0, policy.max);
        // Bounds may have moved since the last decision; zero stays zero only if allowed.
        let mut current = previous.clamp(policy.floor(), policy.max);
        if previous == 0 && policy.scale_to_zero_after.is_some() {
            current = 0;
        }
        let idle_at_zero = match reading {
            Reading::QueueDepth(depth) => !depth.is_finite() || *depth <= 0.0,
            Reading::NoMetrics => true,
            Reading::Unavailable(_) => false,
        };
        let depth = match reading {
            _ if current == 0 && idle_at_zero => {
                // Scaled to zero: no pod, so no series, is what an idle fleet looks like.
                self.replicas = 0;
                return Decision {
                    replicas: 0,
                    previous,
                    queue_depth: Some(0.0),
                    recommendation: Some(0),
                    activity: Activity::Active,
                };
            }
            Reading::QueueDepth(depth) if depth.is_finite() => depth.max(0.0),
            other => {
                // A gap: forget the run, so stabilization restarts from fresh readings.
                self.observing_since = None;
                self.history.clear();
                self.idle_since = None;
                self.replicas = current;
                let activity = match other {
                    Reading::Unavailable(error) => Activity::PrometheusUnavailable(error.clone()),
                    _ => Activity::NoMetrics,
                };
                return Decision {
                    replicas: current,
                    previous,
                    queue_depth: None,
                    recommendation: None,
                    activity,
                };
            }
        };

        let recommendation = recommend(policy, depth);
        let since = *self.observing_since.get_or_insert(now);
        self.history.push_back((now, recommendation));
        let keep = policy
            .scale_up_stabilization
            .max(policy.scale_down_stabilization);
        while self
            .history
            .front()
            .is_some_and(|(t, _)| elapsed(*t, now) > keep)
        {
            self.history.pop_front();
        }
        self.idle_since = if depth == 0.0 {
            Some(self.idle_since.unwrap_or(now))
        } else {
            None
        };

        let observed_for = elapsed(since, now);
        let in_window = |window: Duration| {
            self.history
                .iter()
                .filter(move |(t, _)| elapsed(*t, now) <= window)
                .map(|(_, r)| *r)
        };
        let up = (observed_for >= policy.scale_up_stabilization)
            .then(|| in_window(policy.scale_up_stabilization).min())
            .flatten();
        let down = (observed_for >= policy.scale_down_stabilization)
            .then(|| in_window(policy.scale_down_stabilization).max())
            .flatten();
        let idle_long_enough = match (policy.scale_to_zero_after, self.idle_since) {
            (Some(after), Some(idle)) => elapsed(idle, now) >= after && observed_for >= after,
            _ => false,
        };

        let next = match (up, down) {
            _ if idle_long_enough => 0,
            (Some(up), _) if up > current => up,
            (_, Some(down)) if down < current => down,
            _ => current,
        };
        self.replicas = next;
        Decision {
            replicas: next,
            previous,
            queue_depth: Some(depth),
            recommendation: Some(recommendation),
            activity: Activity::Active,
        }
    }
}

/// `clamp(ceil(depth / target), floor, max)`.
fn recommend(policy: &Policy, depth: f64) -> i32 {
    let wanted = (depth / policy.target_queue_depth).ceil();
    // Saturating float-to-int conversion; the clamp bounds it anyway.
    (wanted as i32).clamp(policy.floor(), policy.max)
}

/// Time from `from` to `to`, zero if `to` is earlier.
fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min: i32, max: i32, target: f64, up_s: u64, down_s: u64) -> Policy {
        Policy {
            min,
            max,
            target_queue_depth: target,
            window: Duration::from_secs(60),
            scale_up_stabilization: Duration::from_secs(up_s),
            scale_down_stabilization: Duration::from_secs(down_s),
            scale_to_zero_after: None,
        }
    }

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).expect("timestamp")
    }

    /// Feeds `series` (one reading per `step_s` seconds from t=0) and returns the replicas
    /// after each reading.
    fn run(scaler: &mut Scaler, policy: &Policy, step_s: i64, series: &[Reading]) -> Vec<i32> {
        series
            .iter()
            .enumerate()
            .map(|(i, r)| scaler.step(policy, r, at(i as i64 * step_s)).replicas)
            .collect()
    }

    fn depths(values: &[f64]) -> Vec<Reading> {
        values.iter().map(|v| Reading::QueueDepth(*v)).collect()
    }

    /// How many times the size changed direction (up then down or down then up).
    fn reversals(sizes: &[i32]) -> usize {
        let steps: Vec<i32> = sizes
            .windows(2)
            .map(|w| (w[1] - w[0]).signum())
            .filter(|s| *s != 0)
            .collect();
        steps.windows(2).filter(|w| w[0] != w[1]).count()
    }

    #[test]
    fn recommendation_is_ceil_of_depth_over_target_within_bounds() {
        let p = policy(1, 5, 4.0, 0, 0);
        assert_eq!(recommend(&p, 0.0), 1);
        assert_eq!(recommend(&p, 4.0), 1);
        assert_eq!(recommend(&p, 4.1), 2);
        assert_eq!(recommend(&p, 12.0), 3);
        assert_eq!(recommend(&p, 1000.0), 5);
        assert_eq!(recommend(&p, f64::MAX), 5);
    }

    #[test]
    fn a_step_up_scales_at_once_and_a_step_down_after_the_down_window() {
        let p = policy(1, 8, 4.0, 0, 60);
        let mut s = Scaler::new(1);
        // 10 s ticks: 12 waiting for 30 s, then 0 for 100 s.
        let mut series = vec![12.0; 3];
        series.extend([0.0; 10]);
        let sizes = run(&mut s, &p, 10, &depths(&series));
        assert_eq!(sizes[0], 3, "fast up");
        // The last high reading is at t=20; down needs every reading of the last 60 s low.
        let first_down = sizes.iter().position(|r| *r == 1).expect("scales down");
        assert_eq!(
            first_down, 9,
            "t=90 is the first tick whose 60 s window is all low"
        );
        assert!(sizes[..first_down].iter().all(|r| *r == 3), "{sizes:?}");
    }

    #[test]
    fn scale_up_stabilization_needs_the_higher_recommendation_to_hold() {
        let p = policy(1, 8, 4.0, 20, 60);
        let mut s = Scaler::new(1);
        // A 10 s burst is ignored; a sustained rise scales after 20 s of readings.
        let series = depths(&[2.0, 20.0, 2.0, 2.0, 20.0, 20.0, 20.0, 20.0]);
        let sizes = run(&mut s, &p, 10, &series);
        assert_eq!(sizes, vec![1, 1, 1, 1, 1, 1, 5, 5]);
    }

    #[test]
    fn a_burst_scales_up_and_comes_back_once_without_flapping() {
        let p = policy(1, 10, 4.0, 0, 120);
        let mut s = Scaler::new(1);
        let mut series = vec![2.0; 6];
        series.extend([30.0, 32.0]); // a 20 s burst
        series.extend([2.0; 30]);
        let sizes = run(&mut s, &p, 10, &depths(&series));
        assert_eq!(*sizes.iter().max().expect("non-empty"), 8);
        assert_eq!(*sizes.last().expect("non-empty"), 1);
        assert_eq!(reversals(&sizes), 1, "{sizes:?}");
        // Exactly two changes: up once, down once.
        let changes = sizes.windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(changes, 2, "{sizes:?}");
    }

    #[test]
    fn noise_around_a_boundary_does_not_flap() {
        let p = policy(1, 10, 4.0, 0, 60);
        let mut s = Scaler::new(1);
        // Hovers around 8 (2 vs 3 replicas) with deterministic jitter, 5 s ticks for 10 min.
        let series: Vec<f64> = (0..120)
            .map(|i| 8.0 + [-0.7, 0.4, -0.2, 0.9, -0.5, 0.1][i % 6])
            .collect();
        let sizes = run(&mut s, &p, 5, &depths(&series));
        assert_eq!(reversals(&sizes), 0, "{sizes:?}");
        assert!(sizes[1..].iter().all(|r| *r == 3), "{sizes:?}");
    }

    #[test]
    fn a_slow_decline_steps_down_without_going_back_up() {
        let p = policy(1, 10, 4.0, 0, 30);
        let mut s = Scaler::new(1);
        let series: Vec<f64> = (0..60).map(|i| 40.0 - f64::from(i) * 0.66).collect();
        let sizes = run(&mut s, &p, 10, &depths(&series));
        assert_eq!(sizes[0], 10);
        assert_eq!(reversals(&sizes), 0, "{sizes:?}");
        assert!(sizes.windows(2).all(|w| w[1] <= w[0]), "{sizes:?}");
        assert_eq!(*sizes.last().expect("non-empty"), 1);
    }

    #[test]
    fn missing_metrics_hold_the_size_and_restart_the_down_window() {
        let p = policy(1, 8, 4.0, 0, 30);
        let mut s = Scaler::new(1);
        assert_eq!(s.step(&p, &Reading::QueueDepth(16.0), at(0)).replicas, 4);
        for t in [10, 20, 30, 40, 50] {
            let d = s.step(
                &p,
                &Reading::Unavailable("connection refused".into()),
                at(t),
            );
            assert_eq!(d.replicas, 4);
            assert_eq!(
                d.activity,
                Activity::PrometheusUnavailable("connection refused".into())
            );
            assert_eq!(d.queue_depth, None);
        }
        let d = s.step(&p, &Reading::NoMetrics, at(60));
        assert_eq!((d.replicas, d.activity), (4, Activity::NoMetrics));
        // Readings come back low: no scale-down until they cover a whole 30 s window.
        let sizes: Vec<i32> = (7..=11)
            .map(|i| s.step(&p, &Reading::QueueDepth(0.0), at(i * 10)).replicas)
            .collect();
        assert_eq!(sizes, vec![4, 4, 4, 1, 1]);
    }

    #[test]
    fn a_restarted_scaler_keeps_the_size_until_a_full_down_window() {
        let p = policy(1, 8, 4.0, 0, 60);
        // As after an operator restart: only status.desiredReplicas survives.
        let mut s = Scaler::new(5);
        let sizes = run(&mut s, &p, 10, &depths(&[0.0; 8]));
        assert_eq!(sizes, vec![5, 5, 5, 5, 5, 5, 1, 1]);
        // Up is immediate even right after a restart.
        let mut s = Scaler::new(2);
        assert_eq!(s.step(&p, &Reading::QueueDepth(20.0), at(0)).replicas, 5);
    }

    #[test]
    fn bounds_that_moved_are_applied_to_the_held_size() {
        let mut s = Scaler::new(7);
        let p = policy(1, 4, 4.0, 0, 60);
        let d = s.step(&p, &Reading::Unavailable("down".into()), at(0));
        assert_eq!(d.replicas, 4);
        let p = policy(6, 9, 4.0, 0, 60);
        assert_eq!(s.step(&p, &Reading::QueueDepth(0.0), at(10)).replicas, 6);
    }

    #[test]
    fn scales_to_zero_only_after_an_idle_period_and_only_with_min_zero() {
        let mut p = policy(0, 4, 4.0, 0, 20);
        p.scale_to_zero_after = Some(Duration::from_secs(60));
        let mut s = Scaler::new(2);
        let sizes = run(&mut s, &p, 10, &depths(&[0.0; 8]));
        assert_eq!(sizes, vec![2, 2, 1, 1, 1, 1, 0, 0]);
        // At zero there is no pod and so no series: that is idle, not a failure.
        let d = s.step(&p, &Reading::NoMetrics, at(80));
        assert_eq!((d.replicas, d.activity), (0, Activity::Active));

        // min 0 without scaleToZeroAfter never goes below 1.
        let p = policy(0, 4, 4.0, 0, 20);
        let mut s = Scaler::new(2);
        let sizes = run(&mut s, &p, 10, &depths(&[0.0; 20]));
        assert_eq!(*sizes.last().expect("non-empty"), 1);
    }

    #[test]
    fn a_queue_that_is_not_empty_prevents_scaling_to_zero() {
        let mut p = policy(0, 4, 4.0, 0, 20);
        p.scale_to_zero_after = Some(Duration::from_secs(30));
        let mut s = Scaler::new(1);
        let series = depths(&[0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0]);
        let sizes = run(&mut s, &p, 10, &series);
        assert_eq!(sizes, vec![1, 1, 1, 1, 1, 1, 0]);
    }

    #[test]
    fn the_cause_names_depth_and_target() {
        let p = policy(1, 8, 4.0, 0, 60);
        let mut s = Scaler::new(1);
        let d = s.step(&p, &Reading::QueueDepth(12.0), at(0));
        assert_eq!((d.previous, d.replicas), (1, 3));
        assert_eq!(
            d.cause(&p).as_deref(),
            Some("queue depth 12 over target 4 per replica")
        );
        let d = s.step(&p, &Reading::QueueDepth(12.0), at(10));
        assert_eq!(d.cause(&p), None);
    }

    #[test]
    fn a_non_finite_reading_counts_as_no_metrics() {
        let p = policy(1, 8, 4.0, 0, 60);
        let mut s = Scaler::new(3);
        let d = s.step(&p, &Reading::QueueDepth(f64::NAN), at(0));
        assert_eq!((d.replicas, d.activity), (3, Activity::NoMetrics));
    }
}
