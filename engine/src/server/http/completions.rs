//! `POST /v1/completions`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::fields::Endpoint;
use super::logprobs::CompletionLogprobs;
use super::openai::{
    CompletionChoice, CompletionRequest, CompletionResponse, UsageBody, finish_reason,
};
use super::sse::{self, ChunkShape, json_event};
use super::{ResponseHeader, TokenTexts, admit};
use crate::engine::Usage;
use crate::sampling::PositionLogprobs;
use crate::server::generation::{Completed, Delta, total_usage};
use crate::server::state::ServingState;

const OBJECT: &str = "text_completion";

/// What the response repeats of the request besides the generated text: the prompt, when
/// echoed, and whether log-probabilities were asked for.
struct Echo {
    /// The prompt's text, when `echo` is set.
    text: Option<String>,
    logprobs: bool,
}

impl Echo {
    /// Read from the body before it is parsed: a prompt sent as text is echoed as sent.
    fn of(body: &Result<Json<Value>, JsonRejection>) -> Echo {
        let Ok(Json(body)) = body else {
            return Echo {
                text: None,
                logprobs: false,
            };
        };
        let text = (body["echo"] == true).then(|| match &body["prompt"] {
            Value::String(text) => text.clone(),
            Value::Array(texts) if texts.len() == 1 && texts[0].is_string() => {
                texts[0].as_str().unwrap_or_default().to_string()
            }
            _ => String::new(),
        });
        Echo {
            text,
            logprobs: body["logprobs"].is_number(),
        }
    }
}

pub async fn handle(
    State(state): State<Arc<ServingState>>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let mut echo = Echo::of(&body);
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
    let texts = TokenTexts::new(&state);
    let prompt = generation.prompt_token_ids().to_vec();
    if let Some(text) = &mut echo.text
        && text.is_empty()
    {
        // A prompt sent as token ids is echoed as the tokenizer decodes it.
        *text = texts.decode(&prompt);
    }
    let header = ResponseHeader::new("cmpl", &state);
    if delivery.streaming {
        return sse::stream(
            generation,
            Chunks {
                header,
                include_usage: delivery.include_usage,
                echo,
                prompt,
                texts,
                prompt_logprobs: None,
                choices: Vec::new(),
            },
            state.write_timeout(),
        )
        .into_response();
    }
    match generation.collect().await {
        Ok(completed) => {
            let usage = total_usage(completed.iter().map(|c| &c.usage));
            let prompt_logprobs = completed.iter().find_map(|c| c.prompt_logprobs.clone());
            let choices = completed
                .into_iter()
                .enumerate()
                .map(|(index, choice)| {
                    whole_choice(
                        index,
                        choice,
                        &echo,
                        &prompt,
                        prompt_logprobs.as_deref(),
                        &texts,
                    )
                })
                .collect();
            Json(header.response(choices, Some(usage.into()))).into_response()
        }
        Err(error) => error.into_response(),
    }
}

fn whole_choice(
    index: usize,
    completed: Completed,
    echo: &Echo,
    prompt: &[u32],
    prompt_logprobs: Option<&[Option<PositionLogprobs>]>,
    texts: &TokenTexts,
) -> CompletionChoice {
    let text_of = |token| texts.text(token);
    let logprobs = echo.logprobs.then(|| {
        let mut lp = CompletionLogprobs::starting_at(0);
        if echo.text.is_some() {
            push_prompt(&mut lp, prompt, prompt_logprobs, &text_of);
        }
        for position in &completed.logprobs {
            lp.push(position, &text_of);
        }
        lp
    });
    CompletionChoice {
        index: u32::try_from(index).unwrap_or(u32::MAX),
        text: echo.text.clone().unwrap_or_default() + &completed.text,
        logprobs,
        finish_reason: finish_reason(completed.finish_reason.as_ref()),
    }
}

fn push_prompt(
    lp: &mut CompletionLogprobs,
    prompt: &[u32],
    scored: Option<&[Option<PositionLogprobs>]>,
    text: &dyn Fn(u32) -> String,
) {
    for (position, &token) in prompt.iter().enumerate() {
        let scored = scored
            .and_then(|s| s.get(position))
            .and_then(Option::as_ref);
        lp.push_prompt(token, scored, text);
    }
}

impl ResponseHeader {
    fn response(
        &self,
        choices: Vec<CompletionChoice>,
        usage: Option<UsageBody>,
    ) -> CompletionResponse {
        CompletionResponse {
            id: self.id.clone(),
            object: OBJECT,
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        }
    }
}

/// One streamed choice: whether its echo went out, and its log-probabilities not sent yet.
struct StreamedChoice {
    echoed: bool,
    logprobs: CompletionLogprobs,
}

struct Chunks {
    header: ResponseHeader,
    include_usage: bool,
    echo: Echo,
    prompt: Vec<u32>,
    texts: TokenTexts,
    /// The prompt's log-probabilities, from the first choice's first delta, for every choice.
    prompt_logprobs: Option<Vec<Option<PositionLogprobs>>>,
    choices: Vec<StreamedChoice>,
}

impl ChunkShape for Chunks {
    fn opening(&mut self) -> Option<Event> {
        None
    }

    fn delta(&mut self, delta: &Delta) -> Option<Event> {
        if delta.prompt_logprobs.is_some() {
            self.prompt_logprobs.clone_from(&delta.prompt_logprobs);
        }
        let index = delta.index as usize;
        while self.choices.len() <= index {
            self.choices.push(StreamedChoice {
                echoed: false,
                logprobs: CompletionLogprobs::starting_at(0),
            });
        }
        let texts = &self.texts;
        let text_of = |token| texts.text(token);
        let choice = &mut self.choices[index];
        let mut text = String::new();
        if !choice.echoed {
            choice.echoed = true;
            if let Some(prompt_text) = &self.echo.text {
                text.push_str(prompt_text);
                if self.echo.logprobs {
                    push_prompt(
                        &mut choice.logprobs,
                        &self.prompt,
                        self.prompt_logprobs.as_deref(),
                        &text_of,
                    );
                }
            }
        }
        text.push_str(&delta.text);
        if let Some(position) = &delta.logprobs {
            choice.logprobs.push(position, &text_of);
        }
        let reason = finish_reason(delta.finish_reason.as_ref());
        if text.is_empty() && reason.is_none() {
            // The token's log-probabilities go out with the text it ends up in.
            return None;
        }
        let logprobs = self.echo.logprobs.then(|| choice.logprobs.take());
        Some(json_event(&self.header.response(
            vec![CompletionChoice {
                index: delta.index,
                text,
                logprobs,
                finish_reason: reason,
            }],
            None,
        )))
    }

    fn closing(&mut self, usage: Usage) -> Option<Event> {
        self.include_usage
            .then(|| json_event(&self.header.response(Vec::new(), Some(usage.into()))))
    }
}
