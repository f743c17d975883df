//! One request being served: the engine's output stream, the slot it holds, and the
//! latency and token accounting both APIs share.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use crate::engine::{FinishReason, OutputStream, Usage};

use super::error::ApiError;
use super::metrics::{Metrics, Outcome};

/// What one engine step produced for a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub token_id: u32,
    /// Text that became final with this token (may be empty).
    pub text: String,
    /// Set on the last delta.
    pub finish_reason: Option<FinishReason>,
    pub usage: Usage,
}

/// A request in flight. Dropping it before the last delta cancels the request: the engine
/// frees its KV blocks at once and it is counted as cancelled.
pub struct Generation {
    outputs: OutputStream,
    metrics: Arc<Metrics>,
    arrived: Instant,
    last_token_at: Option<Instant>,
    ended: bool,
    /// Held until the request ends; admission counts these.
    _slot: OwnedSemaphorePermit,
}

impl Generation {
    pub(super) fn new(
        outputs: OutputStream,
        metrics: Arc<Metrics>,
        arrived: Instant,
        slot: OwnedSemaphorePermit,
    ) -> Self {
        Generation {
            outputs,
            metrics,
            arrived,
            last_token_at: None,
            ended: false,
            _slot: slot,
        }
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
                match self.last_token_at {
                    None => self
                        .metrics
                        .observe_first_token((now - self.arrived).as_secs_f64()),
                    Some(previous) => self
                        .metrics
                        .observe_next_token((now - previous).as_secs_f64()),
                }
                self.last_token_at = Some(now);
                if let Some(reason) = &output.finish_reason {
                    self.end(Outcome::finished(reason), now);
                }
                Some(Ok(Delta {
                    token_id: output.token_id,
                    text: output.text,
                    finish_reason: output.finish_reason,
                    usage: output.usage,
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

    /// Every remaining delta, for non-streaming responses.
    pub async fn collect(mut self) -> Result<Completed, ApiError> {
        let mut completed = Completed::default();
        while let Some(delta) = self.next().await {
            let delta = delta?;
            completed.token_ids.push(delta.token_id);
            completed.text.push_str(&delta.text);
            completed.usage = delta.usage;
            if delta.finish_reason.is_some() {
                completed.finish_reason = delta.finish_reason;
            }
        }
        Ok(completed)
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

/// A whole generation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completed {
    pub token_ids: Vec<u32>,
    pub text: String,
    pub finish_reason: Option<FinishReason>,
    pub usage: Usage,
}
