//! `POST /v1/chat/completions`: messages rendered with the model's chat template.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};

use super::fields::Endpoint;
use super::logprobs::ChatLogprobs;
use super::openai::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletionChunk, ChatCompletionRequest,
    ChatCompletionResponse, ChatDelta, finish_reason,
};
use super::sse::{self, ChunkShape, json_event};
use super::{ResponseHeader, TokenTexts, admit};
use crate::engine::Usage;
use crate::sampling::PositionLogprobs;
use crate::server::generation::{Delta, total_usage};
use crate::server::state::ServingState;

const ROLE: &str = "assistant";

pub async fn handle(
    State(state): State<Arc<ServingState>>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Response {
    let wants_logprobs = matches!(&body, Ok(Json(b)) if b["logprobs"] == true);
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
    let texts = TokenTexts::new(&state);
    if delivery.streaming {
        return sse::stream(
            generation,
            Chunks {
                header,
                include_usage: delivery.include_usage,
                wants_logprobs,
                texts,
                choices: Vec::new(),
            },
            state.write_timeout(),
        )
        .into_response();
    }
    match generation.collect().await {
        Ok(completed) => {
            let usage = total_usage(completed.iter().map(|c| &c.usage));
            let text_of = |token| texts.text(token);
            let choices = completed
                .into_iter()
                .enumerate()
                .map(|(index, choice)| ChatChoice {
                    index: u32::try_from(index).unwrap_or(u32::MAX),
                    logprobs: wants_logprobs.then(|| ChatLogprobs::new(&choice.logprobs, &text_of)),
                    finish_reason: finish_reason(choice.finish_reason.as_ref()),
                    message: AssistantMessage {
                        role: ROLE,
                        content: choice.text,
                    },
                })
                .collect();
            Json(ChatCompletionResponse {
                id: header.id,
                object: "chat.completion",
                created: header.created,
                model: header.model,
                choices,
                usage: usage.into(),
            })
            .into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// One streamed choice: whether its role went out, and its log-probabilities not sent yet.
#[derive(Default)]
struct StreamedChoice {
    opened: bool,
    logprobs: Vec<PositionLogprobs>,
}

struct Chunks {
    header: ResponseHeader,
    include_usage: bool,
    wants_logprobs: bool,
    texts: TokenTexts,
    choices: Vec<StreamedChoice>,
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
        // The first choice announces the assistant's role at once; further choices (`n`)
        // do so with their first chunk.
        self.choices.push(StreamedChoice {
            opened: true,
            logprobs: Vec::new(),
        });
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
        let index = delta.index as usize;
        if self.choices.len() <= index {
            self.choices.resize_with(index + 1, StreamedChoice::default);
        }
        let choice = &mut self.choices[index];
        choice.logprobs.extend(delta.logprobs.clone());
        let reason = finish_reason(delta.finish_reason.as_ref());
        let opening = !choice.opened;
        if delta.text.is_empty() && reason.is_none() && !opening {
            // The token's log-probabilities go out with the text it ends up in.
            return None;
        }
        choice.opened = true;
        let positions = std::mem::take(&mut choice.logprobs);
        let texts = &self.texts;
        let logprobs = self
            .wants_logprobs
            .then(|| ChatLogprobs::new(&positions, &|token| texts.text(token)));
        Some(self.chunk(
            vec![ChatChunkChoice {
                index: delta.index,
                delta: ChatDelta {
                    role: opening.then_some(ROLE),
                    content: (opening || !delta.text.is_empty()).then(|| delta.text.clone()),
                },
                logprobs,
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
