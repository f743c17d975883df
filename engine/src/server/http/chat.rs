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
    ChatCompletionResponse, ChatDelta, ToolCallDelta, finish_reason,
};
use super::sse::{self, ChunkShape, json_event};
use super::{ResponseHeader, TokenTexts, admit};
use crate::engine::Usage;
use crate::sampling::PositionLogprobs;
use crate::server::generation::{Delta, total_usage};
use crate::server::state::ServingState;
use crate::server::tools::{self, Parsed, ToolChoice, ToolDef, ToolMode};

const ROLE: &str = "assistant";

pub async fn handle(
    State(state): State<Arc<ServingState>>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Response {
    let wants_logprobs = matches!(&body, Ok(Json(b)) if b["logprobs"] == true);
    let tool_mode = tool_mode(&body, &state);
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
                tool_mode,
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
                .map(|(index, choice)| {
                    let parsed = tool_mode.parse(&choice.text);
                    ChatChoice {
                        index: u32::try_from(index).unwrap_or(u32::MAX),
                        logprobs: wants_logprobs
                            .then(|| ChatLogprobs::new(&choice.logprobs, &text_of)),
                        finish_reason: reason(
                            &parsed,
                            finish_reason(choice.finish_reason.as_ref()),
                        ),
                        message: AssistantMessage {
                            role: ROLE,
                            content: parsed.content,
                            tool_calls: parsed.tool_calls,
                        },
                    }
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

/// What the request's `tools` and `tool_choice` ask of the output (as `into_params` decides
/// it; a request it refuses never gets here).
fn tool_mode(
    body: &Result<Json<serde_json::Value>, JsonRejection>,
    state: &ServingState,
) -> ToolMode {
    let Ok(Json(body)) = body else {
        return ToolMode::Off;
    };
    let offered: Vec<ToolDef> = serde_json::from_value(body["tools"].clone()).unwrap_or_default();
    let choice: Option<ToolChoice> =
        serde_json::from_value(body["tool_choice"].clone()).unwrap_or_default();
    let syntax = state
        .loaded_model()
        .and_then(|model| model.chat_template.as_ref())
        .and_then(|template| template.tool_syntax());
    tools::mode(&offered, choice.as_ref(), syntax).unwrap_or(ToolMode::Off)
}

/// OpenAI's `tool_calls` when the model stopped to call tools.
fn reason(parsed: &Parsed, reason: Option<&'static str>) -> Option<&'static str> {
    match reason {
        Some("stop") if !parsed.tool_calls.is_empty() => Some("tool_calls"),
        other => other,
    }
}

/// One streamed choice: whether its role went out, its log-probabilities not sent yet, and,
/// when its output may hold tool calls, its text so far (read whole at the end).
#[derive(Default)]
struct StreamedChoice {
    opened: bool,
    logprobs: Vec<PositionLogprobs>,
    text: String,
}

struct Chunks {
    header: ResponseHeader,
    include_usage: bool,
    wants_logprobs: bool,
    texts: TokenTexts,
    tool_mode: ToolMode,
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
            ..StreamedChoice::default()
        });
        Some(self.chunk(
            vec![ChatChunkChoice {
                index: 0,
                delta: ChatDelta {
                    role: Some(ROLE),
                    content: Some(String::new()),
                    tool_calls: Vec::new(),
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
        let mut reason = finish_reason(delta.finish_reason.as_ref());
        let opening = !choice.opened;
        let mut content = (opening || !delta.text.is_empty()).then(|| delta.text.clone());
        let mut tool_calls = Vec::new();
        if self.tool_mode.reads_calls() {
            // Calls are read from the whole output: it goes out at its end, as text or calls.
            choice.text.push_str(&delta.text);
            // Nothing goes out before the last delta.
            reason?;
            let parsed = self.tool_mode.parse(&choice.text);
            reason = self::reason(&parsed, reason);
            content = parsed.content;
            tool_calls = parsed
                .tool_calls
                .into_iter()
                .enumerate()
                .map(|(i, call)| ToolCallDelta {
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    call,
                })
                .collect();
        }
        if content.is_none() && reason.is_none() && !opening {
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
                    content,
                    tool_calls,
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
