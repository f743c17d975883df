//! What goes into the engine (a request) and what comes out of it (outputs).

use crate::sampling::{PositionLogprobs, SamplingParams};

/// Engine-wide identity of a request; the scheduler uses it as the sequence id.
pub type RequestId = u64;

/// When a request stops besides its end-of-sequence tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Generation stops when the text contains one of these; the text ends before it.
    pub stop: Vec<String>,
    /// Extra token ids that end generation like the model's end-of-sequence ids.
    pub stop_token_ids: Vec<u32>,
    /// Keep going past the model's end-of-sequence ids (benchmarks).
    pub ignore_eos: bool,
}

impl Default for StopParams {
    fn default() -> Self {
        StopParams {
            max_tokens: 16,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
        }
    }
}

/// Most stop strings a request may carry.
pub const MAX_STOP_STRINGS: usize = 16;

/// One generation request, already tokenised.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    pub prompt_token_ids: Vec<u32>,
    pub sampling: SamplingParams,
    pub stop: StopParams,
}

/// Why a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-sequence token.
    EndOfSequence,
    /// One of the request's stop token ids.
    StopToken(u32),
    /// One of the request's stop strings (excluded from the text).
    StopString(String),
    /// `max_tokens` reached.
    Length,
    /// Cancelled by the client.
    Aborted,
}

impl FinishReason {
    /// The OpenAI API's name for it.
    pub fn as_openai_str(&self) -> &'static str {
        match self {
            FinishReason::EndOfSequence
            | FinishReason::StopToken(_)
            | FinishReason::StopString(_) => "stop",
            FinishReason::Length => "length",
            FinishReason::Aborted => "abort",
        }
    }
}

/// Token counts for a request so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens served from the prefix cache instead of computed.
    pub cached_prompt_tokens: usize,
}

/// What one step produced for one choice of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestOutput {
    pub request_id: RequestId,
    /// Which of the request's `n` choices this is, from 0.
    pub index: u32,
    /// The token generated this step.
    pub token_id: u32,
    /// Text that became final this step (may be empty while a character or a possible
    /// stop string is incomplete).
    pub text: String,
    pub logprobs: Option<PositionLogprobs>,
    /// On the request's first output, when it asked for them: one entry per prompt token,
    /// `None` for the first (nothing precedes it).
    pub prompt_logprobs: Option<Vec<Option<PositionLogprobs>>>,
    /// Set on the choice's last output.
    pub finish_reason: Option<FinishReason>,
    /// This choice's token counts (the prompt is counted once per request, not per choice).
    pub usage: Usage,
    /// The request's last output: every choice has finished.
    pub last: bool,
}
