//! `POST /v1/chat/completions`: messages rendered with the model's chat template.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};

use super::fields::Endpoint;
use super::openai::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest,
    ChatCompletionResponse, ChatDelta, finish_reason,
};
use super::sse::{self, ChunkShape, json_event};
use super::{ResponseHeader, admit};
use crate::engine::Usage;
use crate::server::generation::Delta;
use crate::server::state::ServingState;

const ROLE: &str = "assistant";

pub async fn handle(
    State(state): State<Arc<ServingState>>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Response {
    let (generation, delivery) = match admit(
        &state,
        Endpoint::ChatCompletions,
        body,
        ChatCompletionRequest::into_params,
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let header = ResponseHeader::new("chatcmpl", &state);
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
        Ok(completed) => Json(ChatCompletionResponse {
            id: header.id,
            object: "chat.completion",
            created: header.created,
            model: header.model,
            choices: vec![ChatChoice {
                index: 0,
                message: AssistantMessage {
                    role: ROLE,
                    content: completed.text,
                },
                logprobs: None,
                finish_reason: finish_reason(completed.finish_reason.as_ref()),
            }],
            usage: completed.usage.into(),
        })
        .into_response(),
        Err(error) => error.into_response(),
    }
}

struct Chunks {
    header: ResponseHeader,
    include_usage: bool,
}

impl Chunks {
    fn chunk(&self, choices: Vec<ChatChunkChoice>, usage: Option<Usage>) -> Event {
        json_event(&ChatCompletionChunk {
            id: self.header.id.clone(),
            object: "chat.completion.chunk",
            created: self.header.created,
            model: self.header.model.clone(),
            choices,
            usage: usage.map(Into::into),
        })
    }
}

impl ChunkShape for Chunks {
    fn opening(&mut self) -> Option<Event> {
        Some(self.chunk(
            vec![ChatChunkChoice {
                index: 0,
                delta: ChatDelta {
                    role: Some(ROLE),
                    content: Some(String::new()),
                },
                logprobs: None,
                finish_reason: None,
            }],
            None,
        ))
    }

    fn delta(&mut self, delta: &Delta) -> Option<Event> {
        let reason = finish_reason(delta.finish_reason.as_ref());
        if delta.text.is_empty() && reason.is_none() {
            return None;
        }
        Some(self.chunk(
            vec![ChatChunkChoice {
                index: 0,
                delta: ChatDelta {
                    role: None,
                    content: (!delta.text.is_empty()).then(|| delta.text.clone()),
                },
                logprobs: None,
                finish_reason: reason,
            }],
            None,
        ))
    }

    fn closing(&mut self, usage: Usage) -> Option<Event> {
        self.include_usage
            .then(|| self.chunk(Vec::new(), Some(usage)))
    }
}
