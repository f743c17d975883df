//! `POST /v1/completions`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};

use super::openai::{
    CompletionChoice, CompletionRequest, CompletionResponse, SamplingFields, UsageBody,
    finish_reason, parse_body,
};
use super::sse::{self, ChunkShape, json_event};
use super::{response_id, unix_now};
use crate::engine::Usage;
use crate::server::error::ApiError;
use crate::server::generation::Delta;
use crate::server::state::ServingState;

const OBJECT: &str = "text_completion";

pub async fn handle(
    State(state): State<Arc<ServingState>>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Response {
    let parsed = body
        .map_err(|rejection| ApiError::from_rejection(&rejection))
        .and_then(|Json(body)| {
            Ok((
                parse_body::<CompletionRequest>(&body)?,
                parse_body::<SamplingFields>(&body)?,
            ))
        });
    let (request, sampling) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return state.refuse(error).into_response(),
    };
    let streaming = sampling.stream;
    let include_usage = sampling
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage);
    let generation = match state.generate(|model| request.into_params(sampling, model)) {
        Ok(generation) => generation,
        Err(error) => return error.into_response(),
    };
    let header = Header {
        id: response_id("cmpl"),
        created: unix_now(),
        model: state.served_name().to_string(),
    };
    if streaming {
        return sse::stream(
            generation,
            Chunks {
                header,
                include_usage,
            },
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

struct Header {
    id: String,
    created: u64,
    model: String,
}

impl Header {
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
    header: Header,
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
