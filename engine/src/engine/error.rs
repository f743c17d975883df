use crate::backend::BackendError;
use crate::detokenizer::DecodeError;
use crate::sampling::SamplingError;
use crate::scheduler::SchedulerError;

use super::request::{MAX_STOP_STRINGS, RequestId};

/// Everything the engine can refuse or fail at. Request errors (invalid parameters, a
/// prompt that cannot fit) come back to the one caller; the others end the step.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid sampling parameters: {0}")]
    Sampling(#[from] SamplingError),
    #[error("max_tokens must be at least 1")]
    ZeroMaxTokens,
    #[error("at most {MAX_STOP_STRINGS} stop strings are allowed, got {0}")]
    TooManyStopStrings(usize),
    #[error("stop strings must not be empty")]
    EmptyStopString,
    #[error("prompt token {token} is outside the vocabulary of {vocab_size} tokens")]
    TokenOutOfVocabulary { token: u32, vocab_size: usize },
    #[error("request {0} already exists")]
    DuplicateRequest(RequestId),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("the backend returned {got} logits rows for {expected} sampling sequences")]
    LogitsMismatch { expected: usize, got: usize },
    #[error("request {0} is scheduled but unknown to the engine")]
    UnknownRequest(RequestId),
    #[error("the step failed: {0}")]
    StepFailed(String),
    #[error("the engine has stopped")]
    Stopped,
}
