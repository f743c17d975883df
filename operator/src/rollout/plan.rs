//! A canary's steps and analysis bounds as the spec asks them, parsed once; and how a step
//! splits the replicas between the stable and the canary template.

use std::time::Duration;

use crate::api::{CanarySpec, CanaryStep, MissingMetrics, ModelDeploymentSpec, RolloutStrategy};

/// The canary of one ModelDeployment, with durations parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct CanaryPlan {
    pub steps: Vec<Step>,
    pub bounds: Bounds,
}

/// One step: the canary's share and how long it is observed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    pub share: Share,
    pub pause: Duration,
}

/// The canary's replicas at a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    /// A percentage of the replicas, rounded up.
    Percent(i32),
    /// A count.
    Replicas(i32),
}

/// What an analysis must stay within (`spec.rollout.canary.analysis`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bounds {
    pub min_requests: f64,
    pub max_failed_request_ratio: f64,
    pub max_time_to_first_token_ratio: f64,
    pub max_inter_token_latency_ratio: f64,
    pub max_time_to_first_token_p95: Option<f64>,
    pub max_inter_token_latency_p95: Option<f64>,
    pub missing_metrics: MissingMetrics,
}

impl CanaryPlan {
    /// The plan of `spec`, `None` for a rolling update, or the field that does not parse.
    pub fn of(spec: &ModelDeploymentSpec) -> Result<Option<Self>, String> {
        if spec.rollout.strategy != RolloutStrategy::Canary {
            return Ok(None);
        }
        let default = CanarySpec::default();
        let canary = spec.rollout.canary.as_ref().unwrap_or(&default);
        let steps = canary
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| Step::of(i, step))
            .collect::<Result<Vec<_>, _>>()?;
        if steps.is_empty() {
            return Err("spec.rollout.canary.steps must hold at least one step".into());
        }
        let a = &canary.analysis;
        Ok(Some(Self {
            steps,
            bounds: Bounds {
                min_requests: f64::from(a.min_requests.max(1)),
                max_failed_request_ratio: a.max_failed_request_ratio.clamp(0.0, 1.0),
                max_time_to_first_token_ratio: a.max_time_to_first_token_ratio.max(1.0),
                max_inter_token_latency_ratio: a.max_inter_token_latency_ratio.max(1.0),
                max_time_to_first_token_p95: a.max_time_to_first_token_p95_seconds,
                max_inter_token_latency_p95: a.max_inter_token_latency_p95_seconds,
                missing_metrics: a.missing_metrics,
            },
        }))
    }

    /// Step `number` (from 1), if the plan has it.
    pub fn step(&self, number: i32) -> Option<&Step> {
        usize::try_from(number.checked_sub(1)?)
            .ok()
            .and_then(|i| self.steps.get(i))
    }

    pub fn step_count(&self) -> i32 {
        i32::try_from(self.steps.len()).unwrap_or(i32::MAX)
    }
}

impl Step {
    fn of(index: usize, step: &CanaryStep) -> Result<Self, String> {
        let field = format!("spec.rollout.canary.steps[{index}]");
        let share = match (step.weight, step.replicas) {
            (Some(percent), None) => Share::Percent(percent.clamp(1, 99)),
            (None, Some(count)) => Share::Replicas(count.max(1)),
            _ => {
                return Err(format!(
                    "{field} must set exactly one of weight or replicas"
                ));
            }
        };
        let pause = step
            .pause
            .parse::<kube::core::Duration>()
            .map(Duration::from)
            .map_err(|e| format!("{field}.pause {:?}: {e}", step.pause))?;
        Ok(Self { share, pause })
    }
}

/// Replicas of each template at one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    pub stable: i32,
    pub canary: i32,
}

/// How `share` splits `total` replicas: the canary gets its share (at least one replica)
/// and the stable template the rest, but never fewer than one, so the canary is always
/// measured against stable pods under the same load. A fleet of one runs one of each.
pub fn split(total: i32, share: Share) -> Split {
    let total = total.max(1);
    let canary = match share {
        // Rounded up: 10% of 3 replicas is one canary.
        Share::Percent(percent) => (i64::from(total) * i64::from(percent) + 99) / 100,
        Share::Replicas(count) => i64::from(count),
    };
    let canary = i32::try_from(canary)
        .unwrap_or(i32::MAX)
        .clamp(1, (total - 1).max(1));
    Split {
        stable: (total - canary).max(1),
        canary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RolloutSpec;
    use crate::desired::test_support::minimal;

    fn canary_spec(steps: Vec<CanaryStep>) -> ModelDeploymentSpec {
        let mut md = minimal("chat");
        md.spec.rollout = RolloutSpec {
            strategy: RolloutStrategy::Canary,
            canary: Some(CanarySpec {
                steps,
                ..CanarySpec::default()
            }),
            ..RolloutSpec::default()
        };
        md.spec
    }

    fn step(weight: Option<i32>, replicas: Option<i32>, pause: &str) -> CanaryStep {
        CanaryStep {
            weight,
            replicas,
            pause: pause.into(),
        }
    }

    #[test]
    fn a_rolling_update_has_no_plan() {
        assert_eq!(CanaryPlan::of(&minimal("chat").spec), Ok(None));
    }

    #[test]
    fn canary_without_settings_takes_the_default_steps_and_bounds() {
        let mut spec = minimal("chat").spec;
        spec.rollout.strategy = RolloutStrategy::Canary;
        let plan = CanaryPlan::of(&spec).expect("parses").expect("a canary");
        assert_eq!(
            plan.steps,
            vec![
                Step {
                    share: Share::Percent(10),
                    pause: Duration::from_secs(300)
                },
                Step {
                    share: Share::Percent(50),
                    pause: Duration::from_secs(300)
                },
            ]
        );
        assert_eq!(plan.bounds.min_requests, 20.0);
        assert_eq!(plan.bounds.max_failed_request_ratio, 0.01);
        assert_eq!(plan.bounds.max_time_to_first_token_ratio, 2.0);
        assert_eq!(plan.bounds.missing_metrics, MissingMetrics::Pause);
        assert_eq!(plan.step(1), plan.steps.first());
        assert_eq!(plan.step(0), None);
        assert_eq!(plan.step(3), None);
    }

    #[test]
    fn steps_take_a_percentage_or_a_count_and_name_a_bad_one() {
        let plan = CanaryPlan::of(&canary_spec(vec![
            step(Some(25), None, "30s"),
            step(None, Some(2), "1m30s"),
        ]))
        .expect("parses")
        .expect("a canary");
        assert_eq!(plan.steps[0].share, Share::Percent(25));
        assert_eq!(plan.steps[1].share, Share::Replicas(2));
        assert_eq!(plan.steps[1].pause, Duration::from_secs(90));

        let both = CanaryPlan::of(&canary_spec(vec![step(Some(5), Some(1), "1m")]));
        assert!(
            both.expect_err("both set")
                .contains("spec.rollout.canary.steps[0]")
        );
        let bad_pause = CanaryPlan::of(&canary_spec(vec![
            step(Some(5), None, "1m"),
            step(Some(5), None, "soon"),
        ]));
        assert!(
            bad_pause
                .expect_err("no duration")
                .contains("spec.rollout.canary.steps[1].pause")
        );
    }

    #[test]
    fn the_canary_gets_its_share_rounded_up_and_the_stable_keeps_one() {
        assert_eq!(
            split(10, Share::Percent(10)),
            Split {
                stable: 9,
                canary: 1
            }
        );
        assert_eq!(
            split(3, Share::Percent(10)),
            Split {
                stable: 2,
                canary: 1
            }
        );
        assert_eq!(
            split(4, Share::Percent(50)),
            Split {
                stable: 2,
                canary: 2
            }
        );
        assert_eq!(
            split(4, Share::Percent(99)),
            Split {
                stable: 1,
                canary: 3
            }
        );
        assert_eq!(
            split(5, Share::Replicas(2)),
            Split {
                stable: 3,
                canary: 2
            }
        );
        assert_eq!(
            split(3, Share::Replicas(9)),
            Split {
                stable: 1,
                canary: 2
            }
        );
    }

    #[test]
    fn a_fleet_of_one_runs_one_of_each() {
        assert_eq!(
            split(1, Share::Percent(50)),
            Split {
                stable: 1,
                canary: 1
            }
        );
        assert_eq!(
            split(0, Share::Replicas(3)),
            Split {
                stable: 1,
                canary: 1
            }
        );
    }
}
