//! OpenAI's error shape for every refusal of the HTTP API.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::server::error::{ApiError, RETRY_AFTER_SECONDS};

#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

impl ApiError {
    fn http_status(&self) -> StatusCode {
        match self {
            ApiError::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
            ApiError::ModelNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body OpenAI clients parse; also sent as the last event of a failed stream.
    pub fn body(&self) -> ErrorBody {
        let (kind, code) = match self {
            ApiError::InvalidArgument { .. } => ("invalid_request_error", None),
            ApiError::ModelNotFound { .. } => ("invalid_request_error", Some("model_not_found")),
            ApiError::Overloaded { .. } => ("rate_limit_error", Some("engine_at_capacity")),
            ApiError::Unauthenticated => ("invalid_request_error", Some("invalid_api_key")),
            ApiError::Unavailable(_) => ("service_unavailable", None),
            ApiError::Internal(_) => ("internal_error", None),
        };
        let param = match self {
            ApiError::InvalidArgument { param, .. } => *param,
            ApiError::ModelNotFound { .. } => Some("model"),
            _ => None,
        };
        ErrorBody {
            error: ErrorDetail {
                message: self.to_string(),
                kind,
                param,
                code,
            },
        }
    }

    /// A malformed body: not JSON, or a field of the wrong type. serde's message names the
    /// field.
    pub fn from_rejection(rejection: &JsonRejection) -> Self {
        ApiError::InvalidArgument {
            message: rejection.body_text(),
            param: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.http_status(), Json(self.body())).into_response();
        match self {
            ApiError::Overloaded { .. } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            }
            ApiError::Unauthenticated => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
