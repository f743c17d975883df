//! Why a request was not served, in one place, and how each API reports it: a gRPC status
//! code or an HTTP status with OpenAI's error body.

use crate::engine::{EngineError, InvalidRequest};

/// Seconds a refused client is told to wait before it tries again.
pub const RETRY_AFTER_SECONDS: u64 = 1;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The request itself is wrong; `param` names the field when there is one.
    #[error("{message}")]
    InvalidArgument {
        message: String,
        param: Option<&'static str>,
    },
    #[error("the model `{requested}` does not exist; this engine serves `{served}`")]
    ModelNotFound { requested: String, served: String },
    /// Every slot (running batch plus waiting queue) is taken.
    #[error(
        "the engine is at capacity ({capacity} requests running or queued); retry after {RETRY_AFTER_SECONDS}s"
    )]
    Overloaded { capacity: usize },
    /// The engine requires an API key and the request did not carry it.
    #[error(
        "this engine requires an API key: send it as `Authorization: Bearer <key>` (gRPC: the \
         `authorization` metadata)"
    )]
    Unauthenticated,
    /// Loading, draining or stopped: another replica should take the request.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: &'static str) -> Self {
        ApiError::InvalidArgument {
            message: message.into(),
            param: Some(param),
        }
    }

    /// Sorts an engine error into the caller's fault, the server's state, or a failure.
    pub fn from_engine(error: &EngineError) -> Self {
        match error {
            EngineError::Invalid(invalid) => invalid.clone().into(),
            EngineError::Stopped => ApiError::Unavailable(error.to_string()),
            _ => ApiError::Internal(error.to_string()),
        }
    }

    pub fn to_grpc_status(&self) -> tonic::Status {
        let message = self.to_string();
        match self {
            ApiError::InvalidArgument { .. } => tonic::Status::invalid_argument(message),
            ApiError::ModelNotFound { .. } => tonic::Status::not_found(message),
            ApiError::Overloaded { .. } => {
                let mut status = tonic::Status::resource_exhausted(message);
                status.metadata_mut().insert(
                    "retry-after",
                    tonic::metadata::MetadataValue::from(RETRY_AFTER_SECONDS),
                );
                status
            }
            ApiError::Unauthenticated => tonic::Status::unauthenticated(message),
            ApiError::Unavailable(_) => tonic::Status::unavailable(message),
            ApiError::Internal(_) => tonic::Status::internal(message),
        }
    }
}

impl From<InvalidRequest> for ApiError {
    fn from(error: InvalidRequest) -> Self {
        ApiError::invalid(error.to_string(), error.param())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_carries_a_retry_hint() {
        let status = ApiError::Overloaded { capacity: 4 }.to_grpc_status();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status
                .metadata()
                .get("retry-after")
                .map(|v| v.to_str().ok()),
            Some(Some("1"))
        );
        assert!(status.message().contains("retry after 1s"));
    }

    #[test]
    fn engine_request_errors_are_the_callers_fault() {
        let error = ApiError::from_engine(&EngineError::Invalid(InvalidRequest::Sampling(
            crate::sampling::SamplingError::TopP(2.0),
        )));
        assert_eq!(
            error,
            ApiError::InvalidArgument {
                message: "top_p must be in (0, 1], got 2".into(),
                param: Some("top_p"),
            }
        );
        assert_eq!(
            ApiError::from_engine(&EngineError::Stopped)
                .to_grpc_status()
                .code(),
            tonic::Code::Unavailable
        );
        assert_eq!(
            ApiError::from_engine(&EngineError::StepFailed("boom".into()))
                .to_grpc_status()
                .code(),
            tonic::Code::Internal
        );
    }
}
