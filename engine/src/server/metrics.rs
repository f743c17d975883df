//! The engine's Prometheus series. Their names and labels live in the contract crate
//! ([`modelfleet_contract::metrics`]), where the operator's autoscaler and the harness read
//! them too; what they measure is registered here.
//!
//! The `modelfleet_engine_*` family is ModelFleet's own; `modelfleet_engine_queue_depth` is
//! the signal the operator's autoscaler reads. The `vllm:*` family repeats the same
//! measurements under vLLM's names so gateways and dashboards made for vLLM work unchanged.
//! Every series carries `model_name`.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use modelfleet_contract::metrics::{
    FEATURE, GENERATION_TOKENS, INTER_TOKEN_LATENCY, KV_CACHE_USAGE_RATIO, MODEL_NAME, OUTCOME,
    PREEMPTIONS, PROMPT_TOKENS, QUEUE_DEPTH, REQUEST_DURATION, REQUEST_FEATURES, REQUESTS,
    RUNNING_REQUESTS, SLOTS_IN_USE, TIME_TO_FIRST_TOKEN, VLLM_FINISHED_REASON,
    VLLM_GENERATION_TOKENS, VLLM_INTER_TOKEN_LATENCY, VLLM_KV_CACHE_USAGE, VLLM_PREEMPTIONS,
    VLLM_PROMPT_TOKENS, VLLM_REQUEST_LATENCY, VLLM_REQUEST_SUCCESS, VLLM_REQUESTS_RUNNING,
    VLLM_REQUESTS_WAITING, VLLM_TIME_TO_FIRST_TOKEN,
};

use crate::engine::FinishReason;
use crate::sampling::SamplingParams;
use crate::scheduler::SchedulerStats;

const TTFT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0,
];
const INTER_TOKEN_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const REQUEST_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0,
];

/// How a request ended, as the `outcome` label of `modelfleet_engine_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An end-of-sequence token, a stop token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The client went away or cancelled.
    Cancelled,
    /// Refused because the engine was at capacity.
    Rejected,
    /// Refused as malformed.
    Invalid,
    /// Refused while loading or draining.
    Unavailable,
    /// The engine failed while serving it.
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Stop,
        Outcome::Length,
        Outcome::Cancelled,
        Outcome::Rejected,
        Outcome::Invalid,
        Outcome::Unavailable,
        Outcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Stop => "stop",
            Outcome::Length => "length",
            Outcome::Cancelled => "cancelled",
            Outcome::Rejected => "rejected",
            Outcome::Invalid => "invalid",
            Outcome::Unavailable => "unavailable",
            Outcome::Failed => "failed",
        }
    }

    pub fn finished(reason: &FinishReason) -> Outcome {
        match reason {
            FinishReason::Length => Outcome::Length,
            FinishReason::Aborted => Outcome::Cancelled,
            FinishReason::EndOfSequence
            | FinishReason::StopToken(_)
            | FinishReason::StopString(_) => Outcome::Stop,
        }
    }
}

/// The optional features a request may ask for, as the `feature` label of
/// `modelfleet_engine_request_features_total`.
const FEATURES: [&str; 4] = [
    "logprobs",
    "prompt_logprobs",
    "parallel_sampling",
    "structured_output",
];

/// A measurement recorded under both names.
struct Twin<T> {
    own: T,
    vllm: T,
}

pub struct Metrics {
    registry: Registry,
    queue_depth: Twin<IntGauge>,
    running: Twin<IntGauge>,
    kv_cache_usage: Twin<Gauge>,
    time_to_first_token: Twin<Histogram>,
    inter_token_latency: Twin<Histogram>,
    request_duration: Twin<Histogram>,
    prompt_tokens: Twin<IntCounter>,
    generation_tokens: Twin<IntCounter>,
    preemptions: Twin<IntCounter>,
    slots_in_use: IntGauge,
    requests: IntCounterVec,
    features: IntCounterVec,
    vllm_request_success: IntCounterVec,
}

impl Metrics {
    pub fn new(model_name: &str) -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(
            None,
            Some([(MODEL_NAME.to_string(), model_name.to_string())].into()),
        )?;
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            register(&registry, IntGauge::with_opts(Opts::new(name, help))?)
        };
        let ratio = |name: &str, help: &str| -> Result<Gauge, prometheus::Error> {
            register(&registry, Gauge::with_opts(Opts::new(name, help))?)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            register(&registry, IntCounter::with_opts(Opts::new(name, help))?)
        };
        let histogram =
            |name: &str, help: &str, buckets: &[f64]| -> Result<Histogram, prometheus::Error> {
                let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
                register(&registry, Histogram::with_opts(opts)?)
            };
        let waiting_help = "Requests waiting to be scheduled (the autoscaling signal)";
        let running_help = "Requests in the running batch";
        let kv_help = "Fraction of KV cache blocks in use (0 to 1)";
        let ttft_help = "Seconds from a request's arrival to its first token";
        let itl_help = "Seconds between consecutive tokens of a request";
        let duration_help = "Seconds from a request's arrival to its last token";
        let prompt_help = "Prompt tokens of requests admitted";
        let generation_help = "Tokens generated";
        let preemption_help = "Sequences preempted (recomputed later) for lack of KV blocks";
        let requests = register(
            &registry,
            IntCounterVec::new(
                Opts::new(REQUESTS, "Requests by how they ended"),
                &[OUTCOME],
            )?,
        )?;
        for outcome in Outcome::ALL {
            // Every outcome is exported from the start, so rates work before the first one.
            requests.with_label_values(&[outcome.as_str()]);
        }
        let features = register(
            &registry,
            IntCounterVec::new(
                Opts::new(
                    REQUEST_FEATURES,
                    "Requests admitted that asked for an optional OpenAI API feature",
                ),
                &[FEATURE],
            )?,
        )?;
        for feature in FEATURES {
            features.with_label_values(&[feature]);
        }
        let vllm_request_success = register(
            &registry,
            IntCounterVec::new(
                Opts::new(VLLM_REQUEST_SUCCESS, "Requests finished, by finish reason"),
                &[VLLM_FINISHED_REASON],
            )?,
        )?;
        Ok(Metrics {
            queue_depth: Twin {
                own: gauge(QUEUE_DEPTH, waiting_help)?,
                vllm: gauge(VLLM_REQUESTS_WAITING, waiting_help)?,
            },
            running: Twin {
                own: gauge(RUNNING_REQUESTS, running_help)?,
                vllm: gauge(VLLM_REQUESTS_RUNNING, running_help)?,
            },
            kv_cache_usage: Twin {
                own: ratio(KV_CACHE_USAGE_RATIO, kv_help)?,
                vllm: ratio(VLLM_KV_CACHE_USAGE, kv_help)?,
            },
            time_to_first_token: Twin {
                own: histogram(TIME_TO_FIRST_TOKEN, ttft_help, TTFT_BUCKETS)?,
                vllm: histogram(VLLM_TIME_TO_FIRST_TOKEN, ttft_help, TTFT_BUCKETS)?,
            },
            inter_token_latency: Twin {
                own: histogram(INTER_TOKEN_LATENCY, itl_help, INTER_TOKEN_BUCKETS)?,
                vllm: histogram(VLLM_INTER_TOKEN_LATENCY, itl_help, INTER_TOKEN_BUCKETS)?,
            },
            request_duration: Twin {
                own: histogram(REQUEST_DURATION, duration_help, REQUEST_BUCKETS)?,
                vllm: histogram(VLLM_REQUEST_LATENCY, duration_help, REQUEST_BUCKETS)?,
            },
            prompt_tokens: Twin {
                own: counter(PROMPT_TOKENS, prompt_help)?,
                vllm: counter(VLLM_PROMPT_TOKENS, prompt_help)?,
            },
            generation_tokens: Twin {
                own: counter(GENERATION_TOKENS, generation_help)?,
                vllm: counter(VLLM_GENERATION_TOKENS, generation_help)?,
            },
            preemptions: Twin {
                own: counter(PREEMPTIONS, preemption_help)?,
                vllm: counter(VLLM_PREEMPTIONS, preemption_help)?,
            },
            slots_in_use: gauge(
                SLOTS_IN_USE,
                "Requests holding a slot (at most max_num_seqs + max_queued_requests)",
            )?,
            requests,
            features,
            vllm_request_success,
            registry,
        })
    }

    /// Copies the scheduler's gauges; called before every scrape.
    pub fn observe_scheduler(&self, stats: &SchedulerStats) {
        let waiting = i64::try_from(stats.waiting).unwrap_or(i64::MAX);
        let running = i64::try_from(stats.running).unwrap_or(i64::MAX);
        for (twin, value) in [(&self.queue_depth, waiting), (&self.running, running)] {
            twin.own.set(value);
            twin.vllm.set(value);
        }
        self.kv_cache_usage.own.set(stats.kv_cache_usage);
        self.kv_cache_usage.vllm.set(stats.kv_cache_usage);
        // The scheduler counts preemptions since start; the counters follow it.
        let seen = self.preemptions.own.get();
        if stats.preemptions_total > seen {
            self.preemptions.own.inc_by(stats.preemptions_total - seen);
            self.preemptions.vllm.inc_by(stats.preemptions_total - seen);
        }
    }

    pub fn observe_slots_in_use(&self, slots: usize) {
        self.slots_in_use
            .set(i64::try_from(slots).unwrap_or(i64::MAX));
    }

    pub fn observe_admitted(&self, prompt_tokens: usize) {
        let tokens = prompt_tokens as u64;
        self.prompt_tokens.own.inc_by(tokens);
        self.prompt_tokens.vllm.inc_by(tokens);
    }

    /// Counts the optional features an admitted request asked for.
    pub fn observe_features(&self, sampling: &SamplingParams) {
        let [logprobs, prompt_logprobs, parallel, structured] = FEATURES;
        for (feature, used) in [
            (logprobs, sampling.logprobs.is_some()),
            (prompt_logprobs, sampling.prompt_logprobs.is_some()),
            (parallel, sampling.n > 1),
            (structured, sampling.grammar.is_some()),
        ] {
            if used {
                self.features.with_label_values(&[feature]).inc();
            }
        }
    }

    pub fn observe_first_token(&self, seconds: f64) {
        self.time_to_first_token.own.observe(seconds);
        self.time_to_first_token.vllm.observe(seconds);
        self.observe_generated_token();
    }

    pub fn observe_next_token(&self, seconds_since_previous: f64) {
        self.inter_token_latency.own.observe(seconds_since_previous);
        self.inter_token_latency
            .vllm
            .observe(seconds_since_previous);
        self.observe_generated_token();
    }

    pub fn observe_generated_token(&self) {
        self.generation_tokens.own.inc();
        self.generation_tokens.vllm.inc();
    }

    /// Counts a request's end; `duration` is set for requests that were served.
    pub fn observe_end(&self, outcome: Outcome, duration_seconds: Option<f64>) {
        self.requests.with_label_values(&[outcome.as_str()]).inc();
        if matches!(outcome, Outcome::Stop | Outcome::Length) {
            self.vllm_request_success
                .with_label_values(&[outcome.as_str()])
                .inc();
        }
        if let Some(seconds) = duration_seconds {
            self.request_duration.own.observe(seconds);
            self.request_duration.vllm.observe(seconds);
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn encode(&self) -> Result<(String, String), prometheus::Error> {
        let encoder = TextEncoder::new();
        let mut body = Vec::new();
        encoder.encode(&self.registry.gather(), &mut body)?;
        let text = String::from_utf8(body)
            .map_err(|e| prometheus::Error::Msg(format!("metrics are not UTF-8: {e}")))?;
        Ok((encoder.format_type().to_string(), text))
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: T,
) -> Result<T, prometheus::Error> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_of<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find(|line| line.starts_with(series))
            .and_then(|line| line.rsplit(' ').next())
    }

    #[test]
    fn scheduler_gauges_appear_under_both_names_with_the_model_name() {
        let metrics = Metrics::new("smol").expect("metrics");
        metrics.observe_scheduler(&SchedulerStats {
            waiting: 3,
            running: 2,
            kv_cache_usage: 0.25,
            preemptions_total: 4,
        });
        let (_, text) = metrics.encode().expect("encode");
        for series in [
            "modelfleet_engine_queue_depth{model_name=\"smol\"}",
            "vllm:num_requests_waiting{model_name=\"smol\"}",
        ] {
            assert_eq!(value_of(&text, series), Some("3"), "{series}");
        }
        assert_eq!(
            value_of(&text, "vllm:kv_cache_usage_perc{model_name=\"smol\"}"),
            Some("0.25")
        );
        assert_eq!(
            value_of(
                &text,
                "modelfleet_engine_preemptions_total{model_name=\"smol\"}"
            ),
            Some("4")
        );
    }

    #[test]
    fn preemption_counter_follows_the_scheduler_without_double_counting() {
        let metrics = Metrics::new("m").expect("metrics");
        for total in [2, 2, 5] {
            metrics.observe_scheduler(&SchedulerStats {
                preemptions_total: total,
                ..SchedulerStats::default()
            });
        }
        assert_eq!(metrics.preemptions.own.get(), 5);
        assert_eq!(metrics.preemptions.vllm.get(), 5);
    }

    #[test]
    fn every_outcome_is_exported_before_it_happens() {
        let metrics = Metrics::new("m").expect("metrics");
        metrics.observe_end(Outcome::Length, Some(1.0));
        let (_, text) = metrics.encode().expect("encode");
        for outcome in Outcome::ALL {
            let label = format!("outcome=\"{}\"", outcome.as_str());
            let value = text
                .lines()
                .find(|line| line.starts_with(REQUESTS) && line.contains(&label))
                .and_then(|line| line.rsplit(' ').next());
            let expected = if outcome == Outcome::Length { "1" } else { "0" };
            assert_eq!(value, Some(expected), "{label}");
        }
    }
}
