//! The one place a generation request is checked. [`RequestLimits::validate`] turns a
//! [`GenerationRequest`] into a [`ValidatedRequest`], the only kind the engine loop and the
//! scheduler accept, so nothing below this module re-checks a request or words its own
//! message for the same mistake. Each refusal names the request field it is about.

use crate::kv_cache::blocks_for_tokens;
use crate::sampling::SamplingError;

use super::request::{GenerationRequest, MAX_STOP_STRINGS};

/// What a request is checked against: the model's vocabulary, the longest sequence a
/// request may have, and what the KV cache can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    pub vocab_size: usize,
    /// Longest prompt plus output a request may have.
    pub max_model_len: usize,
    /// Tokens the whole KV cache holds: a request must fit alone or it could never finish.
    pub kv_cache_tokens: usize,
    /// Tokens a KV block holds: the choices of one request share the prompt's full blocks.
    pub block_size: usize,
}

/// A request that passed [`RequestLimits::validate`]. Its fields can only be read: the
/// engine relies on every one of them being in range.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedRequest {
    request: GenerationRequest,
}

impl ValidatedRequest {
    pub fn request(&self) -> &GenerationRequest {
        &self.request
    }

    pub fn prompt_len(&self) -> usize {
        self.request.prompt_token_ids.len()
    }

    pub(crate) fn into_inner(self) -> GenerationRequest {
        self.request
    }
}

/// Why a request was refused before it reached the engine loop.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidRequest {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("prompt token {token} is outside the vocabulary of {vocab_size} tokens")]
    TokenOutOfVocabulary { token: u32, vocab_size: usize },
    #[error(
        "the prompt has {prompt} tokens; this model's context is {max_model_len} tokens \
         (max_model_len), which must leave room for at least one new token"
    )]
    PromptBeyondContext { prompt: usize, max_model_len: usize },
    #[error(
        "the prompt has {prompt} tokens; this engine's KV cache holds {kv_cache_tokens} tokens, \
         which must leave room for at least one new token"
    )]
    PromptBeyondKvCache {
        prompt: usize,
        kv_cache_tokens: usize,
    },
    #[error("max_tokens must be at least 1")]
    ZeroMaxTokens,
    #[error(
        "the prompt has {prompt} tokens and max_tokens is {max_tokens}: together more than \
         this model's context of {max_model_len} tokens (max_model_len); ask for at most {room}"
    )]
    BeyondContext {
        prompt: usize,
        max_tokens: usize,
        max_model_len: usize,
        room: usize,
    },
    #[error(
        "the prompt has {prompt} tokens and up to {max_tokens} more may be generated, more \
         than this engine's KV cache holds ({kv_cache_tokens} tokens); ask for at most {room}"
    )]
    BeyondKvCache {
        prompt: usize,
        max_tokens: usize,
        kv_cache_tokens: usize,
        room: usize,
    },
    #[error(
        "{n} choices of up to {max_tokens} tokens after a prompt of {prompt} tokens need \
         {blocks} KV blocks of {block_size} tokens (the prompt's full blocks shared), more \
         than this engine's KV cache holds ({kv_cache_tokens} tokens); ask for fewer \
         choices or fewer tokens"
    )]
    ChoicesBeyondKvCache {
        n: usize,
        prompt: usize,
        max_tokens: usize,
        blocks: usize,
        block_size: usize,
        kv_cache_tokens: usize,
    },
    #[error("at most {MAX_STOP_STRINGS} stop strings are allowed, got {0}")]
    TooManyStopStrings(usize),
    #[error("stop strings must not be empty")]
    EmptyStopString,
    #[error(transparent)]
    Sampling(#[from] SamplingError),
}

impl InvalidRequest {
    /// The request field at fault, as both APIs name it.
    pub fn param(&self) -> &'static str {
        match self {
            Self::EmptyPrompt
            | Self::TokenOutOfVocabulary { .. }
            | Self::PromptBeyondContext { .. }
            | Self::PromptBeyondKvCache { .. } => "prompt",
            Self::ZeroMaxTokens | Self::BeyondContext { .. } | Self::BeyondKvCache { .. } => {
                "max_tokens"
            }
            Self::ChoicesBeyondKvCache { .. } => "n",
            Self::TooManyStopStrings(_) | Self::EmptyStopString => "stop",
            Self::Sampling(error) => error.param(),
        }
    }
}

impl RequestLimits {
    /// The most tokens a request with a prompt of `prompt_len` tokens may still generate:
    /// what is left of both the context and the KV cache (0 if the prompt fills either).
    pub fn room_after(&self, prompt_len: usize) -> usize {
        self.max_model_len
            .min(self.kv_cache_tokens)
            .saturating_sub(prompt_len)
    }

    /// `request`, if it can run to its end on this engine; otherwise the first thing wrong.
    pub fn validate(&self, request: GenerationRequest) -> Result<ValidatedRequest, InvalidRequest> {
        let prompt = request.prompt_token_ids.len();
        if prompt == 0 {
            return Err(InvalidRequest::EmptyPrompt);
        }
        if let Some(&token) = request
            .prompt_token_ids
            .iter()
            .find(|&&t| t as usize >= self.vocab_size)
        {
            return Err(InvalidRequest::TokenOutOfVocabulary {
                token,
                vocab_size: self.vocab_size,
            });
        }
        if prompt >= self.max_model_len {
            return Err(InvalidRequest::PromptBeyondContext {
                prompt,
                max_model_len: self.max_model_len,
            });
        }
        if prompt >= self.kv_cache_tokens {
            return Err(InvalidRequest::PromptBeyondKvCache {
                prompt,
                kv_cache_tokens: self.kv_cache_tokens,
            });
        }
        let max_tokens = request.stop.max_tokens;
        if max_tokens == 0 {
            return Err(InvalidRequest::ZeroMaxTokens);
        }
        let room = self.room_after(prompt);
        if prompt.saturating_add(max_tokens) > self.max_model_len {
            return Err(InvalidRequest::BeyondContext {
                prompt,
                max_tokens,
                max_model_len: self.max_model_len,
                room,
            });
        }
        if prompt.saturating_add(max_tokens) > self.kv_cache_tokens {
            return Err(InvalidRequest::BeyondKvCache {
                prompt,
                max_tokens,
                kv_cache_tokens: self.kv_cache_tokens,
                room,
            });
        }
        request.sampling.validate()?;
        let blocks = self.blocks_for_choices(prompt, max_tokens, request.sampling.n);
        if blocks * self.block_size.max(1) > self.kv_cache_tokens {
            return Err(InvalidRequest::ChoicesBeyondKvCache {
                n: request.sampling.n,
                prompt,
                max_tokens,
                blocks,
                block_size: self.block_size,
                kv_cache_tokens: self.kv_cache_tokens,
            });
        }
        let stop = &request.stop.stop;
        if stop.len() > MAX_STOP_STRINGS {
            return Err(InvalidRequest::TooManyStopStrings(stop.len()));
        }
        if stop.iter().any(String::is_empty) {
            return Err(InvalidRequest::EmptyStopString);
        }
        Ok(ValidatedRequest { request })
    }

    /// KV blocks `n` choices of up to `max_tokens` tokens each need at their longest: the
    /// first choice's, plus for each further one everything past the prompt's full blocks
    /// (which the choices share; its partial last block is copied on the first write).
    fn blocks_for_choices(&self, prompt: usize, max_tokens: usize, n: usize) -> usize {
        let block_size = self.block_size.max(1);
        let one = blocks_for_tokens(prompt.saturating_add(max_tokens), block_size);
        let shared = prompt / block_size;
        one.saturating_add(n.saturating_sub(1).saturating_mul(one - shared.min(one)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::StopParams;
    use crate::sampling::SamplingParams;

    fn limits() -> RequestLimits {
        RequestLimits {
            vocab_size: 100,
            max_model_len: 32,
            kv_cache_tokens: 64,
            block_size: 4,
        }
    }

    fn request(prompt_len: usize, max_tokens: usize) -> GenerationRequest {
        GenerationRequest {
            prompt_token_ids: vec![5; prompt_len],
            sampling: SamplingParams::default(),
            stop: StopParams {
                max_tokens,
                ..StopParams::default()
            },
        }
    }

    fn refusal(limits: RequestLimits, request: GenerationRequest) -> InvalidRequest {
        limits.validate(request).expect_err("refused")
    }

    #[test]
    fn a_request_that_fits_passes_unchanged() {
        let valid = limits().validate(request(10, 22)).expect("fits exactly");
        assert_eq!(valid.request(), &request(10, 22));
        assert_eq!(valid.prompt_len(), 10);
    }

    #[test]
    fn a_prompt_that_fills_the_context_names_the_limit() {
        let error = refusal(limits(), request(32, 1));
        assert_eq!(error.param(), "prompt");
        assert!(
            error.to_string().contains("context is 32 tokens"),
            "{error}"
        );
    }

    #[test]
    fn prompt_plus_max_tokens_beyond_the_context_says_how_many_fit() {
        let error = refusal(limits(), request(30, 5));
        assert_eq!(error.param(), "max_tokens");
        assert!(error.to_string().contains("ask for at most 2"), "{error}");
    }

    #[test]
    fn the_kv_cache_bounds_a_request_when_it_is_smaller_than_the_context() {
        let small = RequestLimits {
            kv_cache_tokens: 16,
            ..limits()
        };
        let error = refusal(small, request(10, 10));
        assert_eq!(error.param(), "max_tokens");
        assert!(error.to_string().contains("(16 tokens)"), "{error}");
        assert!(error.to_string().contains("at most 6"), "{error}");
        assert_eq!(refusal(small, request(16, 1)).param(), "prompt");
        assert_eq!(small.room_after(10), 6);
        assert_eq!(small.room_after(20), 0);
    }

    #[test]
    fn the_kv_budget_counts_every_choice_beyond_the_shared_prompt_blocks() {
        // 10 prompt tokens (2 full blocks shared, 1 partial) + 6: 4 blocks for one choice,
        // 2 more for each further one. 64 tokens are 16 blocks: 7 choices fit, 8 do not.
        let mut r = request(10, 6);
        r.sampling.n = 7;
        assert!(limits().validate(r.clone()).is_ok());
        r.sampling.n = 8;
        let error = refusal(limits(), r);
        assert_eq!(error.param(), "n");
        assert!(error.to_string().contains("need 18 KV blocks"), "{error}");
    }

    #[test]
    fn empty_prompts_and_unknown_tokens_are_refused() {
        assert_eq!(
            refusal(limits(), request(0, 1)),
            InvalidRequest::EmptyPrompt
        );
        let mut r = request(3, 1);
        r.prompt_token_ids[1] = 100;
        let error = refusal(limits(), r);
        assert_eq!(error.param(), "prompt");
        assert!(error.to_string().contains("token 100"), "{error}");
    }

    #[test]
    fn stop_sampling_and_max_tokens_errors_name_their_field() {
        assert_eq!(refusal(limits(), request(3, 0)).param(), "max_tokens");
        let mut r = request(3, 1);
        r.stop.stop = vec![String::new()];
        assert_eq!(refusal(limits(), r).param(), "stop");
        let mut r = request(3, 1);
        r.stop.stop = vec!["x".into(); MAX_STOP_STRINGS + 1];
        assert_eq!(refusal(limits(), r).param(), "stop");
        let mut r = request(3, 1);
        r.sampling.temperature = -1.0;
        let error = refusal(limits(), r);
        assert_eq!(error.param(), "temperature");
        assert!(
            error.to_string().starts_with("temperature must be"),
            "{error}"
        );
    }
}
