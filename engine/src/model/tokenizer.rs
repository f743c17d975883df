//! The model's tokenizer, through the `tokenizers` crate: loaded from `tokenizer.json`, or
//! rebuilt from a GGUF file's vocabulary and merges (GPT-2-style byte-level BPE).

use std::path::Path;

use serde_json::json;

use super::ModelError;
use super::gguf::{GgufFile, Value};
use crate::detokenizer::{Decode, DecodeError};

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self { inner })
    }

    /// Builds the Hugging Face tokenizer equivalent to a GGUF file's `gpt2` tokenizer.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let path = file.path();
        let error = |reason: String| ModelError::Tokenizer {
            path: path.to_path_buf(),
            reason,
        };
        let model = file
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .unwrap_or("");
        if model != "gpt2" {
            return Err(error(format!(
                "tokenizer model '{model}' is not supported (supported: gpt2 byte-level BPE)"
            )));
        }
        let tokens = string_array(file, "tokenizer.ggml.tokens")
            .ok_or_else(|| error("no tokenizer.ggml.tokens".into()))?;
        let merges = string_array(file, "tokenizer.ggml.merges")
            .ok_or_else(|| error("no tokenizer.ggml.merges".into()))?;
        let types: Vec<i64> = file
            .get("tokenizer.ggml.token_type")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|v| v.as_u64().map_or(1, |t| t as i64))
                    .collect()
            })
            .unwrap_or_default();
        let vocab: serde_json::Map<String, serde_json::Value> = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| (t.clone(), json!(id)))
            .collect();
        let added_tokens: Vec<serde_json::Value> = types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == TOKEN_TYPE_CONTROL || **t == TOKEN_TYPE_USER_DEFINED)
            .map(|(id, t)| {
                json!({
                    "id": id, "content": tokens[id], "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": *t == TOKEN_TYPE_CONTROL,
                })
            })
            .collect();
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        let pre_tokenizer = match file.get("tokenizer.ggml.pre").and_then(Value::as_str) {
            // SmolLM's tokenizer splits digits one by one before the GPT-2 byte-level split.
            Some("smollm") => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level]}),
            _ => byte_level.clone(),
        };
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added_tokens,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": false, "vocab": vocab, "merges": merges,
            },
        });
        let inner: tokenizers::Tokenizer = spec
            .to_string()
            .parse()
            .map_err(|e: tokenizers::Error| error(format!("building the tokenizer: {e}")))?;
        Ok(Self { inner })
    }

    /// Token ids of `text`; special tokens written in the text are recognised as such.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ModelError::Encode(e.to_string()))
    }

    /// A second handle to the same tokenizer (the engine decodes while the caller encodes).
    pub fn clone_handle(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
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

fn string_array(file: &GgufFile, key: &str) -> Option<Vec<String>> {
    file.get(key)?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(String::from))
        .collect()
}
