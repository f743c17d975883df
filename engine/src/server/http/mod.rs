//! The HTTP API: OpenAI-compatible generation, the model list, probes and `/metrics`.

mod chat;
mod completions;
mod error;
mod openai;
mod sse;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::error::ApiError;
use super::state::{Phase, ServingState};
use openai::{ModelCard, ModelList};

pub fn router(state: Arc<ServingState>) -> Router {
    Router::new()
        .route("/v1/completions", post(completions::handle))
        .route("/v1/chat/completions", post(chat::handle))
        .route("/v1/models", get(models))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(state)
}

/// Liveness: the process answers. Loading and draining are still alive.
async fn health() -> &'static str {
    "ok\n"
}

/// Readiness: the model is loaded and warmed up, and the server is not draining.
async fn ready(State(state): State<Arc<ServingState>>) -> Response {
    match state.phase() {
        Phase::Serving => (StatusCode::OK, "ready\n").into_response(),
        Phase::Loading => (StatusCode::SERVICE_UNAVAILABLE, "loading\n").into_response(),
        Phase::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response(),
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

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh response id with OpenAI's prefixes (`cmpl-`, `chatcmpl-`).
fn response_id(prefix: &str) -> String {
    format!("{prefix}-{:032x}", rand::random::<u128>())
}
