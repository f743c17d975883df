//! `POST /v1/completions`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};

use super::fields::Endpoint;
use super::openai::{
    CompletionChoice, CompletionRequest, CompletionResponse, UsageBody, finish_reason,
};
use super::sse::{self, ChunkShape, json_event};
use super::{ResponseHeader, admit};
use crate::engine::Usage;
use crate::server::generation::Delta;
use crate::server::state::ServingState;

const OBJECT: &str = "text_completion";

pub async fn handle(
    State(state): State<Arc<ServingState>>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Response {
    let (generation, delivery) = match admit(
        &state,
        Endpoint::Completions,
        body,
        CompletionRequest::into_params,
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let header = ResponseHeader::new("cmpl", &state);
    if delivery.streaming {
        return sse::stream(
            generation,
            Chunks {
                header,
                include_usage: delivery.include_usage,
            },
            state.write_timeout(),
        )
        .into_response();
    }
    match generation.collect().await {
        Ok(completed) => Json(header.response(
            completed.text,
            finish_reason(completed.finish_reason.as_ref()),
            Some(completed.usage.into()),
        ))
        .into_response(),
        Err(error) => error.into_response(),
    }
}

impl ResponseHeader {
    fn response(
        &self,
        text: String,
        finish_reason: Option<&'static str>,
        usage: Option<UsageBody>,
    ) -> CompletionResponse {
        CompletionResponse {
            id: self.id.clone(),
            object: OBJECT,
            created: self.created,
            model: self.model.clone(),
            choices: vec![CompletionChoice {
                index: 0,
                text,
                logprobs: None,
                finish_reason,
            }],
            usage,
        }
    }
}

struct Chunks {
    header: ResponseHeader,
    include_usage: bool,
}

impl ChunkShape for Chunks {
    fn opening(&mut self) -> Option<Event> {
        None
    }

    fn delta(&mut self, delta: &Delta) -> Option<Event> {
        let reason = finish_reason(delta.finish_reason.as_ref());
        if delta.text.is_empty() && reason.is_none() {
            return None;
        }
        Some(json_event(&self.header.response(
            delta.text.clone(),
            reason,
            None,
        )))
    }

    fn closing(&mut self, usage: Usage) -> Option<Event> {
        self.include_usage.then(|| {
            let mut last = self
                .header
                .response(String::new(), None, Some(usage.into()));
            last.choices.clear();
            json_event(&last)
        })
    }
}
