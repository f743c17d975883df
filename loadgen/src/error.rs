//! The one error type of the load generator: what stops a run before it starts. Failures of
//! single requests are not errors of the run; they are recorded as outcomes.

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("invalid load settings: {0}")]
    Config(String),
    #[error("invalid target `{target}`: {reason}")]
    Target { target: String, reason: String },
    #[error("no target to send requests to")]
    NoTargets,
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(String),
}
