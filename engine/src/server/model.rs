//! The model a server serves: its engine loop, its tokenizer, its chat template, and the
//! facts clients may ask about.

use crate::engine::{EngineHandle, RequestLimits};
use crate::model::Tokenizer;

use super::chat_template::ChatTemplate;
use super::error::ApiError;
use super::grammar::{GrammarCompiler, Vocabulary};
use crate::sampling::CompiledGrammar;

/// What `ModelInfo` and `/v1/models` report, and what validation checks requests against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    pub served_name: String,
    pub architecture: String,
    pub vocab_size: usize,
    /// Longest prompt plus output a request may have.
    pub max_model_len: usize,
    pub block_size: usize,
    pub num_kv_blocks: usize,
    pub max_num_seqs: usize,
    pub backend: String,
    pub eos_token_ids: Vec<u32>,
    /// The revision `fetch` put the weights at, when it did.
    pub revision: Option<String>,
    /// Bytes the placed weights take.
    pub weight_bytes: u64,
    pub kv_cache_dtype: String,
    /// The kernels the backend runs (the CPU backend's SIMD path).
    pub kernels: String,
}

impl ModelInfo {
    /// Tokens the whole KV cache holds.
    pub fn kv_cache_tokens(&self) -> usize {
        self.num_kv_blocks * self.block_size
    }

    /// What every request is validated against.
    pub fn limits(&self) -> RequestLimits {
        RequestLimits {
            vocab_size: self.vocab_size,
            max_model_len: self.max_model_len,
            kv_cache_tokens: self.kv_cache_tokens(),
            block_size: self.block_size,
        }
    }
}

/// A loaded model behind a running engine loop.
pub struct ServingModel {
    pub engine: EngineHandle,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    pub info: ModelInfo,
    pub grammars: GrammarCompiler,
}

impl ServingModel {
    /// The ids of a prompt sent as text, with the BOS/EOS the model's tokenizer adds.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, ApiError> {
        self.tokenizer.encode_prompt(text).map_err(|e| {
            ApiError::invalid(format!("the prompt cannot be tokenised: {e}"), "prompt")
        })
    }

    /// Compiles a structured-output grammar; a grammar the library cannot compile is an
    /// invalid `param`.
    pub fn compile_grammar(
        &self,
        grammar: llguidance::api::TopLevelGrammar,
        source: String,
        param: &'static str,
    ) -> Result<CompiledGrammar, ApiError> {
        let vocabulary = Vocabulary {
            tokenizer: &self.tokenizer,
            vocab_size: self.info.vocab_size,
            eos_token_ids: &self.info.eos_token_ids,
        };
        self.grammars
            .compile(vocabulary, grammar, source)
            .map_err(|e| ApiError::invalid(format!("`{param}` cannot be compiled: {e}"), param))
    }

    /// The ids of a rendered chat template, which writes the special tokens it wants itself.
    pub fn tokenize_rendered(&self, text: &str) -> Result<Vec<u32>, ApiError> {
        self.tokenizer.encode(text).map_err(|e| {
            ApiError::invalid(format!("the prompt cannot be tokenised: {e}"), "messages")
        })
    }
}
