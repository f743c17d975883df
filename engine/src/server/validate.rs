//! Turns a request as the APIs describe it into the engine's [`ValidatedRequest`], once,
//! before it reaches the engine: the served model's name, OpenAI's defaults for what the
//! client left unset, then the engine's own checks ([`crate::engine::RequestLimits::validate`]), whose
//! refusals name the field and the limit.

use crate::engine::{GenerationRequest, StopParams, ValidatedRequest};
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
    /// `None` lets the request run as far as the context and the KV cache allow.
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub ignore_eos: bool,
}

/// The engine request for `params`, or the first thing wrong with them.
pub fn validate(info: &ModelInfo, params: GenerateParams) -> Result<ValidatedRequest, ApiError> {
    check_model(info, params.model.as_deref())?;
    if params.sampling.n > info.max_num_seqs {
        // The choices run side by side; more than the batch holds could never all run.
        return Err(ApiError::invalid(
            format!(
                "n is {}, more than the {} sequences this engine runs at once (max_num_seqs)",
                params.sampling.n, info.max_num_seqs
            ),
            "n",
        ));
    }
    let limits = info.limits();
    // Unset: whatever fits beside the prompt (at least 1, so a prompt that leaves no room is
    // refused for its length rather than for max_tokens).
    let max_tokens = params
        .max_tokens
        .unwrap_or_else(|| limits.room_after(params.prompt_token_ids.len()).max(1));
    let request = GenerationRequest {
        prompt_token_ids: params.prompt_token_ids,
        sampling: params.sampling,
        stop: StopParams {
            max_tokens,
            stop: params.stop,
            stop_token_ids: params.stop_token_ids,
            ignore_eos: params.ignore_eos,
        },
    };
    Ok(limits.validate(request)?)
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
        assert_eq!(request.request().stop.max_tokens, 22);
    }

    #[test]
    fn unset_max_tokens_is_clamped_to_what_the_kv_cache_holds() {
        let mut small = info();
        small.num_kv_blocks = 4; // 16 tokens, fewer than max_model_len
        let request = validate(&small, params(10, None)).expect("clamped, not refused");
        assert_eq!(request.request().stop.max_tokens, 6);
        let error = validate(&small, params(16, None)).expect_err("no room at all");
        assert_eq!(param_of(error), Some("prompt"));
    }

    #[test]
    fn an_explicit_max_tokens_the_kv_cache_cannot_hold_is_refused() {
        let mut small = info();
        small.num_kv_blocks = 4;
        let error = validate(&small, params(10, Some(10))).expect_err("kv cache too small");
        assert!(error.to_string().contains("16 tokens"), "{error}");
        assert_eq!(param_of(error), Some("max_tokens"));
    }

    #[test]
    fn engine_refusals_keep_their_field() {
        let error = validate(&info(), params(30, Some(5))).expect_err("too long");
        assert!(error.to_string().contains("ask for at most 2"), "{error}");
        assert_eq!(param_of(error), Some("max_tokens"));
        let mut p = params(3, Some(1));
        p.sampling.top_p = 0.0;
        assert_eq!(
            param_of(validate(&info(), p).expect_err("bad top_p")),
            Some("top_p")
        );
    }

    #[test]
    fn more_choices_than_the_batch_holds_are_refused_by_name() {
        let mut p = params(3, Some(2));
        p.sampling.n = 3;
        let error = validate(&info(), p).expect_err("max_num_seqs is 2");
        assert!(error.to_string().contains("max_num_seqs"), "{error}");
        assert_eq!(param_of(error), Some("n"));
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
