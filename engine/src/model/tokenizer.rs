//! The model's tokenizer, through the `tokenizers` crate: loaded from `tokenizer.json`, or
//! rebuilt from a GGUF file's vocabulary as the equivalent `tokenizer.json` (byte-level BPE
//! with its named pre-tokenizer, or SentencePiece BPE with byte fallback).

mod gguf_vocab;
mod pre_tokenizer;
mod sentencepiece;

use std::path::Path;

use tokenizers::{
    DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper,
    TokenizerImpl,
};

use super::ModelError;
use super::gguf::GgufFile;
use crate::detokenizer::{Decode, DecodeError};
use gguf_vocab::GgufVocab;

type Spec = TokenizerImpl<
    ModelWrapper,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The tokens a GGUF vocabulary ends generation at (empty for `tokenizer.json`, whose
    /// model names them in `generation_config.json`).
    end_of_generation: Vec<u32>,
}

impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            inner,
            end_of_generation: Vec::new(),
        })
    }

    /// Builds the tokenizer a GGUF file's vocabulary describes; a kind or pre-tokenizer this
    /// engine does not know is refused by name rather than approximated.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let error = |reason: String| ModelError::Tokenizer {
            path: file.path().to_path_buf(),
            reason,
        };
        let vocab = GgufVocab::read(file).map_err(error)?;
        let inner: Spec = serde_json::from_value(vocab.spec())
            .map_err(|e| error(format!("building the tokenizer: {e}")))?;
        Ok(Self {
            inner: inner.into(),
            end_of_generation: vocab.end_of_generation(),
        })
    }

    /// Token ids of `text` as it stands: special tokens written in the text are recognised as
    /// such, none is added. For text that already carries them (a rendered chat template).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.encode_with(text, false)
    }

    /// Token ids of a prompt: as [`encode`](Self::encode), plus the BOS/EOS the model's
    /// tokenizer adds to a sequence (`add_bos_token`, or the post-processor of `tokenizer.json`).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.encode_with(text, true)
    }

    fn encode_with(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ModelError> {
        self.inner
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ModelError::Encode(e.to_string()))
    }

    /// A second handle to the same tokenizer (the engine decodes while the caller encodes).
    pub fn clone_handle(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            end_of_generation: self.end_of_generation.clone(),
        }
    }

    /// The tokens a GGUF vocabulary ends generation at, EOS first, as llama.cpp decides them
    /// (an instruct model ends its turn with `<|eot_id|>` or `<end_of_turn>`, not EOS).
    pub fn end_of_generation_ids(&self) -> &[u32] {
        &self.end_of_generation
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The tokenizer as `tokenizer.json` spells it (for libraries that read that format:
    /// structured output's token trie).
    pub fn to_json(&self) -> Result<String, ModelError> {
        self.inner
            .to_string(false)
            .map_err(|e| ModelError::Encode(e.to_string()))
    }

    /// The token's text as the vocabulary spells it (chat templates use this for
    /// `bos_token` and `eos_token`).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}

impl Decode for Tokenizer {
    fn decode(&self, ids: &[u32]) -> Result<String, DecodeError> {
        self.inner
            .decode(ids, false)
            .map_err(|e| DecodeError(e.to_string()))
    }
}
