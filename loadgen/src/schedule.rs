//! Open-loop arrivals: a Poisson process, i.e. independent exponentially distributed gaps
//! between requests with mean 1/λ. Pure: the same seed gives the same schedule.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Arrival times of a Poisson process at `rate` requests per second, from a seeded RNG.
#[derive(Debug, Clone)]
pub struct PoissonSchedule {
    rate: f64,
    rng: ChaCha8Rng,
    /// Time of the last arrival handed out, from the start of the run.
    now: f64,
}

impl PoissonSchedule {
    /// `rate` must be positive and finite (checked by [`super::LoadConfig::validate`]).
    pub fn new(rate: f64, seed: u64) -> Self {
        Self {
            rate,
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: 0.0,
        }
    }

    /// The next gap between arrivals, in seconds: inverse-transform sampling of the
    /// exponential distribution, −ln(U)/λ with U uniform in (0, 1].
    pub fn next_gap_secs(&mut self) -> f64 {
        // `random` gives [0, 1); 1 − that is in (0, 1], so the logarithm is finite.
        let u: f64 = 1.0 - self.rng.random::<f64>();
        -u.ln() / self.rate
    }

    /// The offset from the start of the run at which the next request arrives. Offsets are
    /// absolute so that a late timer does not shift every later arrival.
    pub fn next_arrival(&mut self) -> Duration {
        self.now += self.next_gap_secs();
        Duration::from_secs_f64(self.now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_gap_is_one_over_the_rate() {
        for rate in [0.5, 4.0, 250.0] {
            let mut schedule = PoissonSchedule::new(rate, 7);
            let n = 200_000;
            let mean = (0..n).map(|_| schedule.next_gap_secs()).sum::<f64>() / f64::from(n);
            let expected = 1.0 / rate;
            // The standard error of the mean of n exponential draws is (1/λ)/√n ≈ 0.22 % here.
            let relative = (mean - expected).abs() / expected;
            assert!(
                relative < 0.01,
                "rate {rate}: mean gap {mean}, expected {expected}"
            );
        }
    }

    #[test]
    fn gaps_are_exponential_not_just_right_on_average() {
        // For an exponential distribution P(gap > mean) = e^-1 ≈ 0.368; evenly spaced
        // arrivals would give 0 and a uniform distribution on [0, 2/λ] 0.5.
        let rate = 10.0;
        let mut schedule = PoissonSchedule::new(rate, 3);
        let n = 100_000;
        let above = (0..n)
            .filter(|_| schedule.next_gap_secs() > 1.0 / rate)
            .count();
        let fraction = above as f64 / f64::from(n);
        assert!(
            (fraction - (-1.0f64).exp()).abs() < 0.01,
            "P(gap > mean) = {fraction}"
        );
    }

    #[test]
    fn a_seed_fixes_the_schedule_and_arrivals_increase() {
        let mut a = PoissonSchedule::new(20.0, 42);
        let mut b = PoissonSchedule::new(20.0, 42);
        let mut c = PoissonSchedule::new(20.0, 43);
        let xs: Vec<Duration> = (0..100).map(|_| a.next_arrival()).collect();
        let ys: Vec<Duration> = (0..100).map(|_| b.next_arrival()).collect();
        let zs: Vec<Duration> = (0..100).map(|_| c.next_arrival()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert!(xs.windows(2).all(|w| w[0] <= w[1]));
    }
}
