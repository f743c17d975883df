//! The optional API key (`--api-key-file`): generation and model requests must carry it as
//! a bearer token, on HTTP in `Authorization: Bearer <key>` and on gRPC in the
//! `authorization` metadata with the same value. Health, readiness and `/metrics` stay
//! open, for Kubernetes' probes and Prometheus.

use std::path::Path;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::error::ApiError;

/// The key requests must present.
#[derive(Clone)]
pub struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(…)")
    }
}

impl ApiKey {
    /// The key in `path`: the file's text without surrounding whitespace (a Secret mounted
    /// as a file often ends with a newline).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the API key file {}: {e}", path.display()))?;
        Self::new(text.trim())
            .map_err(|reason| format!("the API key file {}: {reason}", path.display()))
    }

    pub fn new(key: &str) -> Result<Self, String> {
        if key.is_empty() {
            return Err("the key is empty".into());
        }
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the key contains whitespace or control characters".into());
        }
        Ok(ApiKey(key.to_string()))
    }

    /// Whether an `Authorization` value carries this key as a bearer token. The comparison
    /// takes the same time wherever a wrong key differs.
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        let Some((scheme, token)) = authorization.and_then(|v| v.trim().split_once(' ')) else {
            return false;
        };
        scheme.eq_ignore_ascii_case("bearer")
            && bool::from(token.trim().as_bytes().ct_eq(self.0.as_bytes()))
    }
}

/// A tonic interceptor refusing calls without `key` (letting every call through when the
/// engine has none).
pub fn grpc_check(
    key: Option<ApiKey>,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |request: tonic::Request<()>| {
        let Some(key) = &key else {
            return Ok(request);
        };
        let value = request
            .metadata()
            .get(header::AUTHORIZATION.as_str())
            .and_then(|v| v.to_str().ok());
        if key.accepts(value) {
            Ok(request)
        } else {
            Err(ApiError::Unauthenticated.to_grpc_status())
        }
    }
}

/// HTTP middleware refusing requests without the key (401, OpenAI's error body).
pub async fn require_api_key(State(key): State<ApiKey>, request: Request, next: Next) -> Response {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if key.accepts(value) {
        next.run(request).await
    } else {
        ApiError::Unauthenticated.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bearer_token_with_the_key_is_accepted() {
        let key = ApiKey::new("s3cret").expect("valid key");
        assert!(key.accepts(Some("Bearer s3cret")));
        assert!(key.accepts(Some("bearer s3cret")));
        assert!(!key.accepts(Some("Bearer s3cre")));
        assert!(!key.accepts(Some("Bearer s3cret2")));
        assert!(!key.accepts(Some("Basic s3cret")));
        assert!(!key.accepts(Some("s3cret")));
        assert!(!key.accepts(None));
    }

    #[test]
    fn a_key_file_is_trimmed_and_must_hold_a_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        std::fs::write(&path, "s3cret\n").expect("write");
        assert!(
            ApiKey::from_file(&path)
                .expect("a key")
                .accepts(Some("Bearer s3cret"))
        );
        std::fs::write(&path, "\n").expect("write");
        let error = ApiKey::from_file(&path).expect_err("empty");
        assert!(error.contains("empty"), "{error}");
        let missing = ApiKey::from_file(&dir.path().join("nope")).expect_err("missing");
        assert!(missing.contains("nope"), "{missing}");
    }
}
