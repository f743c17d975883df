//! Checks every request up front, before it takes a slot or reaches the engine, so a bad
//! request gets an error that names the field and the limit instead of failing later.

use crate::engine::{GenerationRequest, MAX_STOP_STRINGS, StopParams};
use crate::sampling::SamplingParams;

use super::error::ApiError;
use super::model::ModelInfo;

/// A generation request as both APIs describe it, after the prompt is tokenised.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    /// The model the client asked for; `None` or empty means the served one.
    pub model: Option<String>,
    pub prompt_token_ids: Vec<u32>,
    pub sampling: SamplingParams,
    /// `None` lets the request run to the end of the context.
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub ignore_eos: bool,
}

/// The engine request for `params`, or the first thing wrong with them.
pub fn validate(info: &ModelInfo, params: GenerateParams) -> Result<GenerationRequest, ApiError> {
    check_model(info, params.model.as_deref())?;
    let prompt_len = params.prompt_token_ids.len();
    if prompt_len == 0 {
        return Err(ApiError::invalid("the prompt is empty", "prompt"));
    }
    if let Some(&token) = params
        .prompt_token_ids
        .iter()
        .find(|&&t| t as usize >= info.vocab_size)
    {
        return Err(ApiError::invalid(
            format!(
                "prompt token {token} is outside the vocabulary of {} tokens",
                info.vocab_size
            ),
            "prompt",
        ));
    }
    if prompt_len >= info.max_model_len {
        return Err(ApiError::invalid(
            format!(
                "the prompt has {prompt_len} tokens; this model's context is {} tokens \
                 (max_model_len), which must leave room for at least one new token",
                info.max_model_len
            ),
            "prompt",
        ));
    }
    let room = info.max_model_len - prompt_len;
    let max_tokens = match params.max_tokens {
        None => room,
        Some(0) => {
            return Err(ApiError::invalid(
                "max_tokens must be at least 1",
                "max_tokens",
            ));
        }
        Some(n) if n > room => {
            return Err(ApiError::invalid(
                format!(
                    "the prompt has {prompt_len} tokens and max_tokens is {n}: together more than \
                     this model's context of {} tokens (max_model_len); ask for at most {room}",
                    info.max_model_len
                ),
                "max_tokens",
            ));
        }
        Some(n) => n,
    };
    let kv_capacity = info.kv_cache_tokens();
    if prompt_len + max_tokens > kv_capacity {
        return Err(ApiError::invalid(
            format!(
                "the prompt has {prompt_len} tokens and up to {max_tokens} more may be generated, \
                 more than this engine's KV cache holds ({kv_capacity} tokens); lower max_tokens"
            ),
            "max_tokens",
        ));
    }
    if params.stop.len() > MAX_STOP_STRINGS {
        return Err(ApiError::invalid(
            format!(
                "at most {MAX_STOP_STRINGS} stop strings are allowed, got {}",
                params.stop.len()
            ),
            "stop",
        ));
    }
    if params.stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid("stop strings must not be empty", "stop"));
    }
    params
        .sampling
        .validate()
        .map_err(|e| ApiError::from_engine(&e.into()))?;
    Ok(GenerationRequest {
        prompt_token_ids: params.prompt_token_ids,
        sampling: params.sampling,
        stop: StopParams {
            max_tokens,
            stop: params.stop,
            stop_token_ids: params.stop_token_ids,
            ignore_eos: params.ignore_eos,
        },
    })
}

/// Whether the client asked for the model this engine serves.
pub fn check_model(info: &ModelInfo, requested: Option<&str>) -> Result<(), ApiError> {
    match requested {
        None | Some("") => Ok(()),
        Some(name) if name == info.served_name => Ok(()),
        Some(name) => Err(ApiError::ModelNotFound {
            requested: name.to_string(),
            served: info.served_name.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ModelInfo {
        ModelInfo {
            served_name: "smol".into(),
            architecture: "llama".into(),
            vocab_size: 100,
            max_model_len: 32,
            block_size: 4,
            num_kv_blocks: 16,
            max_num_seqs: 2,
            backend: "cpu".into(),
            eos_token_ids: vec![2],
            revision: None,
            weight_bytes: 0,
            kv_cache_dtype: "float32".into(),
            kernels: "portable".into(),
        }
    }

    fn params(prompt_len: usize, max_tokens: Option<usize>) -> GenerateParams {
        GenerateParams {
            model: None,
            prompt_token_ids: vec![5; prompt_len],
            sampling: SamplingParams::default(),
            max_tokens,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
        }
    }

    fn param_of(error: ApiError) -> Option<&'static str> {
        match error {
            ApiError::InvalidArgument { param, .. } => param,
            other => panic!("expected an invalid-argument error, got {other:?}"),
        }
    }

    #[test]
    fn unset_max_tokens_runs_to_the_end_of_the_context() {
        let request = validate(&info(), params(10, None)).expect("valid");
        assert_eq!(request.stop.max_tokens, 22);
    }

    #[test]
    fn a_prompt_that_fills_the_context_names_the_limit() {
        let error = validate(&info(), params(32, Some(1))).expect_err("too long");
        assert!(
            error.to_string().contains("context is 32 tokens"),
            "{error}"
        );
        assert_eq!(param_of(error), Some("prompt"));
    }

    #[test]
    fn prompt_plus_max_tokens_beyond_the_context_says_how_many_fit() {
        let error = validate(&info(), params(30, Some(5))).expect_err("too long");
        assert!(error.to_string().contains("ask for at most 2"), "{error}");
        assert_eq!(param_of(error), Some("max_tokens"));
    }

    #[test]
    fn a_request_the_kv_cache_cannot_hold_is_refused() {
        let mut small = info();
        small.num_kv_blocks = 4; // 16 tokens
        let error = validate(&small, params(10, Some(10))).expect_err("kv cache too small");
        assert!(error.to_string().contains("16 tokens"), "{error}");
    }

    #[test]
    fn empty_prompts_and_unknown_tokens_are_refused() {
        assert_eq!(
            param_of(validate(&info(), params(0, None)).expect_err("empty")),
            Some("prompt")
        );
        let mut p = params(3, None);
        p.prompt_token_ids[1] = 100;
        let error = validate(&info(), p).expect_err("out of vocabulary");
        assert!(error.to_string().contains("token 100"), "{error}");
    }

    #[test]
    fn sampling_errors_name_the_parameter() {
        let mut p = params(3, Some(1));
        p.sampling.temperature = -1.0;
        assert_eq!(
            param_of(validate(&info(), p).expect_err("bad temperature")),
            Some("temperature")
        );
        let mut p = params(3, Some(1));
        p.stop = vec![String::new()];
        assert_eq!(
            param_of(validate(&info(), p).expect_err("empty stop")),
            Some("stop")
        );
        assert_eq!(
            param_of(validate(&info(), params(3, Some(0))).expect_err("zero max_tokens")),
            Some("max_tokens")
        );
    }

    #[test]
    fn another_models_name_is_not_found() {
        let mut p = params(3, None);
        p.model = Some("llama".into());
        assert!(matches!(
            validate(&info(), p),
            Err(ApiError::ModelNotFound { .. })
        ));
        let mut p = params(3, None);
        p.model = Some("smol".into());
        assert!(validate(&info(), p).is_ok());
    }
}
