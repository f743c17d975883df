//! The engine's Prometheus series and labels: the engine exports them, the operator's
//! autoscaler queries them, the harness and the demo read them.
//!
//! The `modelfleet_engine_*` family is ModelFleet's own; [`QUEUE_DEPTH`] is the signal the
//! autoscaler reads. The `vllm:*` family repeats the same measurements under vLLM's names so
//! gateways and dashboards made for vLLM work unchanged. Every series carries [`MODEL_NAME`].

/// Requests waiting to be scheduled (admitted, not yet running), per engine.
pub const QUEUE_DEPTH: &str = "modelfleet_engine_queue_depth";
pub const RUNNING_REQUESTS: &str = "modelfleet_engine_running_requests";
pub const KV_CACHE_USAGE_RATIO: &str = "modelfleet_engine_kv_cache_usage_ratio";
pub const TIME_TO_FIRST_TOKEN: &str = "modelfleet_engine_time_to_first_token_seconds";
pub const INTER_TOKEN_LATENCY: &str = "modelfleet_engine_inter_token_latency_seconds";
pub const REQUEST_DURATION: &str = "modelfleet_engine_request_duration_seconds";
pub const PROMPT_TOKENS: &str = "modelfleet_engine_prompt_tokens_total";
pub const GENERATION_TOKENS: &str = "modelfleet_engine_generation_tokens_total";
/// Requests ended, by [`OUTCOME`].
pub const REQUESTS: &str = "modelfleet_engine_requests_total";
pub const PREEMPTIONS: &str = "modelfleet_engine_preemptions_total";
/// Slots held: requests admitted and not yet ended, wherever they are (being tokenised,
/// waiting, running, or streaming their last tokens to a client).
pub const SLOTS_IN_USE: &str = "modelfleet_engine_slots_in_use";
/// Requests admitted that asked for one of the OpenAI API's optional features, by
/// [`FEATURE`] (`logprobs`, `prompt_logprobs`, `parallel_sampling`, `structured_output`).
pub const REQUEST_FEATURES: &str = "modelfleet_engine_request_features_total";

pub const VLLM_REQUESTS_WAITING: &str = "vllm:num_requests_waiting";
pub const VLLM_REQUESTS_RUNNING: &str = "vllm:num_requests_running";
pub const VLLM_KV_CACHE_USAGE: &str = "vllm:kv_cache_usage_perc";
pub const VLLM_TIME_TO_FIRST_TOKEN: &str = "vllm:time_to_first_token_seconds";
pub const VLLM_INTER_TOKEN_LATENCY: &str = "vllm:inter_token_latency_seconds";
pub const VLLM_REQUEST_LATENCY: &str = "vllm:e2e_request_latency_seconds";
pub const VLLM_PROMPT_TOKENS: &str = "vllm:prompt_tokens_total";
pub const VLLM_GENERATION_TOKENS: &str = "vllm:generation_tokens_total";
pub const VLLM_REQUEST_SUCCESS: &str = "vllm:request_success_total";
pub const VLLM_PREEMPTIONS: &str = "vllm:num_preemptions_total";

/// The served model's name, on every engine series.
pub const MODEL_NAME: &str = "model_name";
/// How a request ended, on [`REQUESTS`].
pub const OUTCOME: &str = "outcome";
/// Which optional feature a request used, on [`REQUEST_FEATURES`].
pub const FEATURE: &str = "feature";
/// vLLM's name for [`OUTCOME`], on [`VLLM_REQUEST_SUCCESS`].
pub const VLLM_FINISHED_REASON: &str = "finished_reason";

/// Series labels Prometheus's relabelling of engine pods puts on every sample: the pod's
/// namespace, its name, and its ModelDeployment (from the pod label
/// [`crate::labels::DEPLOYMENT`]).
pub const NAMESPACE: &str = "namespace";
pub const POD: &str = "pod";
pub const MODEL_DEPLOYMENT: &str = "modeldeployment";
/// The series label of a canary's pods (from the pod label [`crate::labels::TRACK`]): absent
/// on the stable pods' series.
pub const TRACK: &str = "track";

/// `name{label="value",…}`: one series as the text exposition format prints it, the way
/// tests look a value up in a `/metrics` page. Values are printed as given (no escaping).
pub fn series(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_is_printed_as_the_exposition_format_does() {
        assert_eq!(series(QUEUE_DEPTH, &[]), "modelfleet_engine_queue_depth");
        assert_eq!(
            series(REQUESTS, &[(OUTCOME, "cancelled")]),
            "modelfleet_engine_requests_total{outcome=\"cancelled\"}"
        );
    }
}
