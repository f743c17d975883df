use crate::backend::BackendError;
use crate::detokenizer::DecodeError;
use crate::scheduler::SchedulerError;

use super::request::RequestId;
use super::validation::InvalidRequest;

/// Everything the engine can refuse or fail at. An invalid request comes back to the one
/// caller; the others end the step.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
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
