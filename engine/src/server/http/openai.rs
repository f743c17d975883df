//! The OpenAI API's request and response bodies, and their translation into engine
//! parameters. Fields the engine cannot honour are refused by name rather than ignored.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::logprobs::{ChatLogprobs, CompletionLogprobs};
use super::structured::{StructuredFields, compact};
use crate::engine::{FinishReason, Usage};
use crate::sampling::SamplingParams;
use crate::server::chat_template::ChatMessage;
use crate::server::error::ApiError;
use crate::server::model::ServingModel;
use crate::server::tools::{self, ToolCall, ToolChoice, ToolDef, ToolMode};
use crate::server::validate::GenerateParams;

/// OpenAI's default for `/v1/completions` when `max_tokens` is absent.
const COMPLETIONS_DEFAULT_MAX_TOKENS: usize = 16;

/// Sampling and stopping fields both endpoints take (vLLM's extensions included). Parsed
/// from the same body as each endpoint's own fields, rather than flattened into them, so a
/// wrongly typed field is reported by name.
#[derive(Debug, Default, Deserialize)]
pub struct SamplingFields {
    pub model: Option<String>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// vLLM's convention: -1 (or 0) keeps every token.
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub seed: Option<u64>,
    pub n: Option<u32>,
    pub stop: Option<StopInput>,
    #[serde(default)]
    pub stop_token_ids: Vec<u32>,
    #[serde(default)]
    pub ignore_eos: bool,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    pub structured: StructuredFields,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: PromptInput,
    pub max_tokens: Option<usize>,
    #[serde(default)]
    pub echo: bool,
    pub best_of: Option<u32>,
    pub suffix: Option<String>,
    /// Report log-probabilities, with this many alternatives per token.
    pub logprobs: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    TokenIds(Vec<u32>),
    Texts(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    pub messages: Vec<ChatMessageInput>,
    pub max_tokens: Option<usize>,
    /// The newer name of `max_tokens`.
    pub max_completion_tokens: Option<usize>,
    #[serde(default)]
    pub logprobs: bool,
    /// Alternatives per token, with `logprobs`.
    pub top_logprobs: Option<usize>,
    #[serde(default)]
    pub tools: Vec<ToolDef>,
    pub tool_choice: Option<ToolChoice>,
    /// Calls the model writes are all returned; a forced call is one.
    #[allow(dead_code)]
    pub parallel_tool_calls: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct ChatMessageInput {
    pub role: String,
    #[serde(default)]
    pub content: Option<ContentInput>,
    /// An assistant's earlier calls.
    pub tool_calls: Option<Vec<serde_json::Value>>,
    /// A `tool` message's answer to this call.
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ContentInput {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

impl CompletionRequest {
    pub fn into_params(
        self,
        mut sampling: SamplingFields,
        model: &ServingModel,
    ) -> Result<GenerateParams, ApiError> {
        let n = sampling.n.unwrap_or(1);
        if self.best_of.is_some_and(|best_of| best_of != n) {
            return Err(unsupported(
                "best_of",
                "best_of must equal n: every choice generated is returned",
            ));
        }
        if self.suffix.is_some() {
            return Err(unsupported(
                "suffix",
                "`suffix` is not supported by this engine; remove it from the request",
            ));
        }
        let prompt_token_ids = match self.prompt {
            PromptInput::Text(text) => model.tokenize(&text)?,
            PromptInput::TokenIds(ids) => ids,
            PromptInput::Texts(texts) => match <[String; 1]>::try_from(texts) {
                Ok([text]) => model.tokenize(&text)?,
                Err(texts) => {
                    return Err(unsupported(
                        "prompt",
                        format!("one prompt per request is supported, got {}", texts.len()),
                    ));
                }
            },
        };
        let structured = std::mem::take(&mut sampling.structured);
        let mut params = sampling.into_params(
            prompt_token_ids,
            Some(self.max_tokens.unwrap_or(COMPLETIONS_DEFAULT_MAX_TOKENS)),
        )?;
        params.sampling.grammar = structured.compile(model)?;
        params.sampling.logprobs = self.logprobs;
        // Echoing the prompt with log-probabilities scores the prompt too: what evaluation
        // harnesses use for log-likelihoods.
        params.sampling.prompt_logprobs = self.logprobs.filter(|_| self.echo);
        Ok(params)
    }
}

impl ChatCompletionRequest {
    pub fn into_params(
        self,
        mut sampling: SamplingFields,
        model: &ServingModel,
    ) -> Result<GenerateParams, ApiError> {
        if self.top_logprobs.is_some() && !self.logprobs {
            return Err(unsupported(
                "top_logprobs",
                "top_logprobs needs logprobs set to true",
            ));
        }
        if self.messages.is_empty() {
            return Err(unsupported("messages", "messages must not be empty"));
        }
        let template = model.chat_template.as_ref().ok_or_else(|| {
            unsupported(
                "messages",
                "this model has no chat template; use /v1/completions",
            )
        })?;
        let messages = self
            .messages
            .into_iter()
            .map(ChatMessageInput::into_message)
            .collect::<Result<Vec<_>, _>>()?;
        let mode = tools::mode(
            &self.tools,
            self.tool_choice.as_ref(),
            template.tool_syntax(),
        )?;
        let offered = serde_json::to_value(&self.tools)
            .map_err(|e| ApiError::Internal(format!("tools: {e}")))?;
        let prompt = match mode {
            ToolMode::Off => template.render(&messages)?,
            _ => template.render_with_tools(&messages, Some(&offered))?,
        };
        let prompt_token_ids = model.tokenize_rendered(&prompt)?;
        let structured = std::mem::take(&mut sampling.structured);
        let mut params = sampling.into_params(
            prompt_token_ids,
            self.max_completion_tokens.or(self.max_tokens),
        )?;
        params.sampling.logprobs = self.logprobs.then_some(self.top_logprobs.unwrap_or(0));
        params.sampling.grammar = structured.compile(model)?;
        if let ToolMode::Forced { schema } = mode {
            if params.sampling.grammar.is_some() {
                return Err(unsupported(
                    "tool_choice",
                    "a forced tool call and an output structure cannot be asked for together",
                ));
            }
            // The call is written as JSON, whatever the family's own syntax: it is forced.
            let source = format!("tool_choice: {schema}");
            let grammar = llguidance::api::TopLevelGrammar::from_json_schema(compact(schema));
            params.sampling.grammar =
                Some(model.compile_grammar(grammar, source, "tool_choice")?);
        }
        Ok(params)
    }
}

impl ChatMessageInput {
    fn into_message(self) -> Result<ChatMessage, ApiError> {
        let content = match self.content {
            None => String::new(),
            Some(ContentInput::Text(text)) => text,
            Some(ContentInput::Parts(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match (part.kind.as_str(), part.text) {
                        ("text", Some(part_text)) => text.push_str(&part_text),
                        (kind, _) => {
                            return Err(unsupported(
                                "messages",
                                format!("content parts of type `{kind}` are not supported"),
                            ));
                        }
                    }
                }
                text
            }
        };
        let tool_calls = self
            .tool_calls
            .map(|calls| tools::calls_for_template(&calls))
            .transpose()?;
        Ok(ChatMessage {
            role: self.role,
            content,
            tool_calls,
            tool_call_id: self.tool_call_id,
            name: self.name,
        })
    }
}

impl SamplingFields {
    fn into_params(
        self,
        prompt_token_ids: Vec<u32>,
        max_tokens: Option<usize>,
    ) -> Result<GenerateParams, ApiError> {
        // OpenAI samples at temperature 1 unless told otherwise.
        let defaults = SamplingParams {
            temperature: 1.0,
            ..SamplingParams::default()
        };
        let top_k = match self.top_k {
            None => defaults.top_k,
            Some(k) if k <= 0 => 0,
            Some(k) => usize::try_from(k).unwrap_or(usize::MAX),
        };
        Ok(GenerateParams {
            model: self.model,
            prompt_token_ids,
            sampling: SamplingParams {
                temperature: self.temperature.unwrap_or(defaults.temperature),
                top_k,
                top_p: self.top_p.unwrap_or(defaults.top_p),
                min_p: self.min_p.unwrap_or(defaults.min_p),
                repetition_penalty: self
                    .repetition_penalty
                    .unwrap_or(defaults.repetition_penalty),
                frequency_penalty: self.frequency_penalty.unwrap_or(defaults.frequency_penalty),
                presence_penalty: self.presence_penalty.unwrap_or(defaults.presence_penalty),
                seed: self.seed,
                logprobs: None,
                prompt_logprobs: None,
                // Out of range (0, or beyond the engine's most) is refused by validation.
                n: self
                    .n
                    .map_or(1, |n| usize::try_from(n).unwrap_or(usize::MAX)),
                grammar: None,
            },
            max_tokens,
            stop: match self.stop {
                None => Vec::new(),
                Some(StopInput::One(stop)) => vec![stop],
                Some(StopInput::Many(stops)) => stops,
            },
            stop_token_ids: self.stop_token_ids,
            ignore_eos: self.ignore_eos,
        })
    }
}

/// One view of a request body; a field of the wrong type is named in the error.
pub fn parse_body<T: DeserializeOwned>(body: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(body).map_err(|error| {
        let path = error.path().to_string();
        let message = if path == "." {
            format!("the request body is invalid: {}", error.inner())
        } else {
            format!("`{path}` is invalid: {}", error.inner())
        };
        ApiError::InvalidArgument {
            message,
            param: None,
        }
    })
}

fn unsupported(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(message, param)
}

#[derive(Debug, Serialize)]
pub struct UsageBody {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl From<Usage> for UsageBody {
    fn from(usage: Usage) -> Self {
        UsageBody {
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            total_tokens: usage.prompt_tokens + usage.completion_tokens,
        }
    }
}

pub fn finish_reason(reason: Option<&FinishReason>) -> Option<&'static str> {
    reason.map(FinishReason::as_openai_str)
}

#[derive(Debug, Serialize)]
pub struct CompletionChoice {
    pub index: u32,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct CompletionResponse {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageBody>,
}

#[derive(Debug, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    /// `null` when the answer is only tool calls.
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

#[derive(Debug, Serialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct ChatCompletionResponse {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: UsageBody,
}

#[derive(Debug, Serialize)]
pub struct ChatDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallDelta>,
}

/// A call in a streamed chunk: OpenAI's shape, with its position among the choice's calls.
#[derive(Debug, Serialize)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(flatten)]
    pub call: ToolCall,
}

#[derive(Debug, Serialize)]
pub struct ChatChunkChoice {
    pub index: u32,
    pub delta: ChatDelta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChunkChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageBody>,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[derive(Debug, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    pub max_model_len: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}
