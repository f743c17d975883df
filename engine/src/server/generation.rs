//! One request being served: the engine's output stream, the slot it holds, and the
//! latency and token accounting both APIs share.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use crate::engine::{FinishReason, OutputStream, Usage};
use crate::sampling::PositionLogprobs;

use super::error::ApiError;
use super::metrics::{Metrics, Outcome};

/// What one engine step produced for one choice of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// Which choice, from 0.
    pub index: u32,
    pub token_id: u32,
    /// Text that became final with this token (may be empty).
    pub text: String,
    /// The token's log-probabilities, when the request asked for them.
    pub logprobs: Option<PositionLogprobs>,
    /// On the first delta, when the request asked for its prompt's log-probabilities.
    pub prompt_logprobs: Option<Vec<Option<PositionLogprobs>>>,
    /// Set on the choice's last delta.
    pub finish_reason: Option<FinishReason>,
    /// The choice's token counts so far.
    pub usage: Usage,
    /// The request's last delta: every choice has finished.
    pub last: bool,
}

/// A request in flight. Dropping it before the last delta cancels the request: the engine
/// frees its KV blocks at once and it is counted as cancelled.
pub struct Generation {
    outputs: OutputStream,
    metrics: Arc<Metrics>,
    arrived: Instant,
    last_token_at: Option<Instant>,
    ended: bool,
    prompt_token_ids: Vec<u32>,
    /// Held until the request ends; admission counts these.
    _slot: OwnedSemaphorePermit,
}

impl Generation {
    pub(super) fn new(
        outputs: OutputStream,
        metrics: Arc<Metrics>,
        arrived: Instant,
        slot: OwnedSemaphorePermit,
        prompt_token_ids: Vec<u32>,
    ) -> Self {
        Generation {
            outputs,
            metrics,
            arrived,
            last_token_at: None,
            ended: false,
            prompt_token_ids,
            _slot: slot,
        }
    }

    /// The prompt as the engine runs it (tokenised, templated).
    pub fn prompt_token_ids(&self) -> &[u32] {
        &self.prompt_token_ids
    }

    /// The next delta; `None` after the last one.
    pub async fn next(&mut self) -> Option<Result<Delta, ApiError>> {
        if self.ended {
            return None;
        }
        let item = self.outputs.next().await;
        let now = Instant::now();
        match item {
            Some(Ok(output)) => {
                // Latencies follow the first choice; the others' tokens are counted only
                // (they come in the same steps).
                match (output.index, self.last_token_at) {
                    (0, None) => self
                        .metrics
                        .observe_first_token((now - self.arrived).as_secs_f64()),
                    (0, Some(previous)) => self
                        .metrics
                        .observe_next_token((now - previous).as_secs_f64()),
                    _ => self.metrics.observe_generated_token(),
                }
                if output.index == 0 {
                    self.last_token_at = Some(now);
                }
                if output.last
                    && let Some(reason) = &output.finish_reason
                {
                    self.end(Outcome::finished(reason), now);
                }
                Some(Ok(Delta {
                    index: output.index,
                    token_id: output.token_id,
                    text: output.text,
                    logprobs: output.logprobs,
                    prompt_logprobs: output.prompt_logprobs,
                    finish_reason: output.finish_reason,
                    usage: output.usage,
                    last: output.last,
                }))
            }
            Some(Err(error)) => {
                let error = ApiError::from_engine(&error);
                let outcome = match error {
                    ApiError::InvalidArgument { .. } => Outcome::Invalid,
                    ApiError::Unavailable(_) => Outcome::Unavailable,
                    _ => Outcome::Failed,
                };
                self.end(outcome, now);
                Some(Err(error))
            }
            None => {
                // The engine loop stopped (shutdown past the drain deadline).
                self.end(Outcome::Unavailable, now);
                Some(Err(ApiError::Unavailable(
                    "the engine stopped before the request finished; retry on another replica"
                        .into(),
                )))
            }
        }
    }

    /// Every remaining delta, for non-streaming responses: one [`Completed`] per choice, in
    /// index order.
    pub async fn collect(mut self) -> Result<Vec<Completed>, ApiError> {
        let mut choices: Vec<Completed> = Vec::new();
        while let Some(delta) = self.next().await {
            let delta = delta?;
            let index = delta.index as usize;
            if choices.len() <= index {
                choices.resize_with(index + 1, Completed::default);
            }
            let completed = &mut choices[index];
            completed.token_ids.push(delta.token_id);
            completed.text.push_str(&delta.text);
            completed.logprobs.extend(delta.logprobs);
            if delta.prompt_logprobs.is_some() {
                completed.prompt_logprobs = delta.prompt_logprobs;
            }
            completed.usage = delta.usage;
            if delta.finish_reason.is_some() {
                completed.finish_reason = delta.finish_reason;
            }
        }
        Ok(choices)
    }

    fn end(&mut self, outcome: Outcome, now: Instant) {
        self.ended = true;
        let served = matches!(outcome, Outcome::Stop | Outcome::Length);
        self.metrics
            .observe_end(outcome, served.then(|| (now - self.arrived).as_secs_f64()));
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        if !self.ended {
            self.metrics.observe_end(Outcome::Cancelled, None);
        }
    }
}

/// One whole choice of a generation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completed {
    pub token_ids: Vec<u32>,
    pub text: String,
    /// One entry per generated token, when the request asked for log-probabilities.
    pub logprobs: Vec<PositionLogprobs>,
    pub prompt_logprobs: Option<Vec<Option<PositionLogprobs>>>,
    pub finish_reason: Option<FinishReason>,
    pub usage: Usage,
}

/// A request's token counts over all its choices: the prompt once, every choice's output.
pub fn total_usage<'a>(choices: impl IntoIterator<Item = &'a Usage>) -> Usage {
    choices
        .into_iter()
        .fold(Usage::default(), |total, choice| Usage {
            prompt_tokens: choice.prompt_tokens,
            completion_tokens: total.completion_tokens + choice.completion_tokens,
            cached_prompt_tokens: choice.cached_prompt_tokens,
        })
}
