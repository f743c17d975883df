//! The HTTP API: OpenAI-compatible generation, the model list, probes and `/metrics`.

mod chat;
mod completions;
mod error;
mod fields;
mod logprobs;
mod openai;
mod sse;
mod structured;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

use super::auth::{ApiKey, require_api_key};
use super::error::ApiError;
use super::generation::Generation;
use super::model::ServingModel;
use super::state::{Phase, ServingState};
use super::validate::GenerateParams;
use fields::{Endpoint, refuse_unsupported};
use openai::{ModelCard, ModelList, SamplingFields, parse_body};

/// The API's routes. With an API key, the OpenAI endpoints require it; the probes and
/// `/metrics` stay open.
pub fn router(state: Arc<ServingState>, api_key: Option<ApiKey>) -> Router {
    let api = Router::new()
        .route("/v1/completions", post(completions::handle))
        .route("/v1/chat/completions", post(chat::handle))
        .route("/v1/models", get(models));
    let api = match api_key {
        Some(key) => api.layer(middleware::from_fn_with_state(key, require_api_key)),
        None => api,
    };
    Router::new()
        .merge(api)
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(state)
}

/// Liveness: the process answers and its engine lives. Loading and draining are alive.
async fn health(State(state): State<Arc<ServingState>>) -> Response {
    match state.phase() {
        Phase::Failed => (StatusCode::SERVICE_UNAVAILABLE, "engine failed\n").into_response(),
        _ => (StatusCode::OK, "ok\n").into_response(),
    }
}

/// Readiness: the model is loaded and warmed up, and the server is not draining.
async fn ready(State(state): State<Arc<ServingState>>) -> Response {
    match state.phase() {
        Phase::Serving => (StatusCode::OK, "ready\n").into_response(),
        Phase::Loading => (StatusCode::SERVICE_UNAVAILABLE, "loading\n").into_response(),
        Phase::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response(),
        Phase::Failed => (StatusCode::SERVICE_UNAVAILABLE, "engine failed\n").into_response(),
    }
}

async fn metrics(State(state): State<Arc<ServingState>>) -> Response {
    match state.render_metrics() {
        Ok((content_type, body)) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(error) => ApiError::Internal(format!("rendering metrics: {error}")).into_response(),
    }
}

async fn models(State(state): State<Arc<ServingState>>) -> Response {
    let Some(model) = state.loaded_model() else {
        return ApiError::Unavailable("the model is still loading".into()).into_response();
    };
    Json(ModelList {
        object: "list",
        data: vec![ModelCard {
            id: model.info.served_name.clone(),
            object: "model",
            created: unix_now(),
            owned_by: "modelfleet",
            max_model_len: model.info.max_model_len,
            revision: model.info.revision.clone(),
        }],
    })
    .into_response()
}

/// How the client wants its answer.
struct Delivery {
    /// Server-sent events instead of one JSON body.
    streaming: bool,
    /// A last event with the token counts (`stream_options.include_usage`).
    include_usage: bool,
}

/// What both generation endpoints do first: refuse fields the engine cannot honour, parse
/// the body (the endpoint's own fields `R` and the shared sampling fields) and admit the
/// request. A refusal is counted and returned.
async fn admit<R, F>(
    state: &ServingState,
    endpoint: Endpoint,
    body: Result<Json<serde_json::Value>, JsonRejection>,
    into_params: F,
) -> Result<(Generation, Delivery), ApiError>
where
    R: DeserializeOwned + Send + 'static,
    F: FnOnce(R, SamplingFields, &ServingModel) -> Result<GenerateParams, ApiError>
        + Send
        + 'static,
{
    let parsed = body
        .map_err(|rejection| ApiError::from_rejection(&rejection))
        .and_then(|Json(body)| {
            refuse_unsupported(&body, endpoint)?;
            Ok((
                parse_body::<R>(&body)?,
                parse_body::<SamplingFields>(&body)?,
            ))
        });
    let (request, sampling) = parsed.map_err(|error| state.refuse(error))?;
    let delivery = Delivery {
        streaming: sampling.stream,
        include_usage: sampling
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage),
    };
    let generation = state
        .generate(move |model| into_params(request, sampling, model))
        .await?;
    Ok((generation, delivery))
}

/// The fields every response and chunk of one generation repeats.
struct ResponseHeader {
    id: String,
    created: u64,
    model: String,
}

impl ResponseHeader {
    /// A fresh id with OpenAI's prefix for the endpoint (`cmpl`, `chatcmpl`).
    fn new(prefix: &str, state: &ServingState) -> Self {
        ResponseHeader {
            id: format!("{prefix}-{:032x}", rand::random::<u128>()),
            created: unix_now(),
            model: state.served_name().to_string(),
        }
    }
}

/// Renders tokens as text for log-probabilities: each token decoded alone.
#[derive(Clone)]
struct TokenTexts(Option<Arc<ServingModel>>);

impl TokenTexts {
    fn new(state: &ServingState) -> Self {
        TokenTexts(state.shared_model())
    }

    fn text(&self, token: u32) -> String {
        use crate::detokenizer::Decode as _;
        self.0
            .as_ref()
            .and_then(|model| model.tokenizer.decode(&[token]).ok())
            .unwrap_or_default()
    }

    /// The prompt's text as the tokenizer decodes it (special tokens included).
    fn decode(&self, tokens: &[u32]) -> String {
        use crate::detokenizer::Decode as _;
        self.0
            .as_ref()
            .and_then(|model| model.tokenizer.decode(tokens).ok())
            .unwrap_or_default()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
