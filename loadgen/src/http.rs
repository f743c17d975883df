//! The HTTP target: an OpenAI-compatible streaming completion, read as server-sent events.

use std::time::Instant;

use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};

use super::config::RequestSettings;
use super::record::{Completion, Failure, Outcome, TokenTimer};
use super::sse::{SseDecoder, StreamChunk, parse_chunk, truncate};
use super::target::HttpApi;

/// The JSON body of a streaming request. `ignore_eos` is the vLLM extension the engine
/// accepts; `stream_options.include_usage` asks for a last chunk with the token counts.
pub(crate) fn request_body(api: HttpApi, prompt: String, settings: &RequestSettings) -> Value {
    let mut body = json!({
        "model": settings.model,
        "max_tokens": settings.max_tokens,
        "stream": true,
        "stream_options": { "include_usage": true },
        "ignore_eos": settings.ignore_eos,
    });
    match api {
        HttpApi::Completions => body["prompt"] = Value::String(prompt),
        HttpApi::ChatCompletions => {
            body["messages"] = json!([{ "role": "user", "content": prompt }]);
        }
    }
    if let Some(t) = settings.temperature {
        body["temperature"] = json!(t);
    }
    body
}

/// Sends one request and reads its event stream to `[DONE]`.
pub(crate) async fn stream(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    timer: &mut TokenTimer,
) -> Result<Completion, Failure> {
    let response = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| {
            if e.is_connect() {
                Failure::unreachable(error_chain(&e))
            } else {
                Failure::new(Outcome::Error, error_chain(&e))
            }
        })?;
    let status = response.status();
    if !status.is_success() {
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(|v| format!(", Retry-After: {v}"))
            .unwrap_or_default();
        let text = response.text().await.unwrap_or_default();
        return Err(status_failure(
            status,
            format!("HTTP {status}{retry_after}: {}", truncate(text.trim(), 300)),
        ));
    }
    let mut decoder = SseDecoder::new();
    let mut bytes = response.bytes_stream();
    let mut end = StreamEnd::default();
    'read: while let Some(chunk) = bytes.next().await {
        let chunk = chunk.map_err(|e| Failure::new(Outcome::Error, error_chain(&e)))?;
        for data in decoder.push(&chunk) {
            if end.event(&data, timer)? {
                break 'read;
            }
        }
    }
    if !end.done
        && let Some(data) = decoder.finish()
    {
        end.event(&data, timer)?;
    }
    end.into_completion(timer)
}

/// What the events of one stream said so far.
#[derive(Debug, Default)]
struct StreamEnd {
    done: bool,
    finish_reason: Option<String>,
    completion_tokens: Option<u64>,
    prompt_tokens: Option<u64>,
}

impl StreamEnd {
    /// Takes one event; true once the stream is complete.
    fn event(&mut self, data: &str, timer: &mut TokenTimer) -> Result<bool, Failure> {
        match parse_chunk(data).map_err(|e| Failure::new(Outcome::Error, e))? {
            StreamChunk::Done => {
                self.done = true;
                Ok(true)
            }
            StreamChunk::Error(message) => Err(Failure::new(
                Outcome::Error,
                format!("error in the stream: {message}"),
            )),
            StreamChunk::Delta {
                text,
                finish_reason,
                completion_tokens,
                prompt_tokens,
            } => {
                // A text delta is counted as one token; the usage chunk corrects the total.
                if !text.is_empty() {
                    timer.tokens(Instant::now(), 1);
                }
                self.finish_reason = finish_reason.or(self.finish_reason.take());
                self.completion_tokens = completion_tokens.or(self.completion_tokens);
                self.prompt_tokens = prompt_tokens.or(self.prompt_tokens);
                Ok(false)
            }
        }
    }

    fn into_completion(self, timer: &TokenTimer) -> Result<Completion, Failure> {
        if !self.done {
            return Err(Failure::new(
                Outcome::Error,
                format!(
                    "the stream ended before `data: [DONE]` after {} text deltas",
                    timer.tokens_seen()
                ),
            ));
        }
        Ok(Completion {
            output_tokens: self.completion_tokens,
            prompt_tokens: self.prompt_tokens,
        })
    }
}

/// The one place HTTP statuses become outcomes.
pub(crate) fn status_failure(status: StatusCode, message: String) -> Failure {
    let outcome = match status {
        StatusCode::TOO_MANY_REQUESTS => Outcome::Rejected,
        StatusCode::SERVICE_UNAVAILABLE => Outcome::Unavailable,
        _ => Outcome::Error,
    };
    Failure::new(outcome, message)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn bodies_for_completions_and_chat() {
        let settings = RequestSettings {
            model: "smol".into(),
            max_tokens: 8,
            ..RequestSettings::default()
        };
        let c = request_body(HttpApi::Completions, "hi".into(), &settings);
        assert_eq!(c["prompt"], "hi");
        assert_eq!(c["stream"], true);
        assert_eq!(c["max_tokens"], 8);
        assert_eq!(c["ignore_eos"], true);
        assert_eq!(c["model"], "smol");
        assert!(c.get("temperature").is_none());
        let chat = request_body(HttpApi::ChatCompletions, "hi".into(), &settings);
        assert_eq!(chat["messages"][0]["content"], "hi");
        assert!(chat.get("prompt").is_none());
    }

    #[test]
    fn statuses_map_to_outcomes() {
        let kind = |s| status_failure(s, String::new()).outcome;
        assert_eq!(kind(StatusCode::TOO_MANY_REQUESTS), Outcome::Rejected);
        assert_eq!(kind(StatusCode::SERVICE_UNAVAILABLE), Outcome::Unavailable);
        assert_eq!(kind(StatusCode::BAD_REQUEST), Outcome::Error);
    }

    #[test]
    fn a_stream_counts_text_deltas_and_takes_usage() {
        let mut timer = TokenTimer::new(Instant::now());
        let mut end = StreamEnd::default();
        let events = [
            r#"{"choices":[{"text":""}]}"#,
            r#"{"choices":[{"text":" a"}]}"#,
            r#"{"choices":[{"text":" b","finish_reason":"length"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
        ];
        for e in events {
            assert_eq!(end.event(e, &mut timer), Ok(false));
        }
        assert_eq!(timer.tokens_seen(), 2);
        assert_eq!(end.event("[DONE]", &mut timer), Ok(true));
        assert_eq!(
            end.into_completion(&timer),
            Ok(Completion {
                output_tokens: Some(2),
                prompt_tokens: Some(3)
            })
        );
    }

    #[test]
    fn a_stream_without_done_or_with_an_error_fails() {
        let mut timer = TokenTimer::new(Instant::now());
        let mut end = StreamEnd::default();
        assert_eq!(
            end.event(r#"{"choices":[{"text":"x"}]}"#, &mut timer),
            Ok(false)
        );
        assert_eq!(
            end.into_completion(&timer).map_err(|f| f.outcome),
            Err(Outcome::Error)
        );
        let mut end = StreamEnd::default();
        let failed = end.event(r#"{"error":{"message":"boom"}}"#, &mut timer);
        assert_eq!(failed.map_err(|f| f.outcome), Err(Outcome::Error));
    }
}
