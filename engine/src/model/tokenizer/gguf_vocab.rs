//! A GGUF file's vocabulary (`tokenizer.ggml.*`), read as llama.cpp reads it, and the
//! `tokenizer.json` that encodes text the same way.
//!
//! Two kinds are supported: byte-level BPE (`gpt2`, with a named pre-tokenizer) and
//! SentencePiece BPE (`llama`, with scores and byte fallback).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::pre_tokenizer::{self, PreTokenizer};
use super::sentencepiece::merges_from_scores;
use crate::model::gguf::{GgufFile, Value as Meta};

/// SentencePiece's word boundary: a space is written as this character.
const SPACE: &str = "\u{2581}";

/// Tokens that end generation by their text whatever the file says, as llama.cpp decides
/// (end of turn, of message or of text, in the spellings of the families that use them).
/// llama.cpp's exceptions for gpt-oss and Gemma 4 (`<|end|>`, `</s>` not ending there) are not
/// needed by any vocabulary this engine supports.
const END_OF_GENERATION_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>",
    "[e~[",
];

/// The metadata keys of tokens that end generation besides EOS: end of turn, end of message.
const END_OF_GENERATION_KEYS: &[&str] =
    &["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"];

/// The fill-in-the-middle tokens that end generation (padding, repository, file separator):
/// the one the key names or, when the file names none, the first spelled as llama.cpp looks
/// for it.
const FIM_END_OF_GENERATION: &[(&str, &[&str])] = &[
    (
        "tokenizer.ggml.fim_pad_token_id",
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        "tokenizer.ggml.fim_rep_token_id",
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    ("tokenizer.ggml.fim_sep_token_id", &["<|file_sep|>"]),
];

/// GGUF token types (llama.cpp's `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Other,
}

impl TokenType {
    fn from_gguf(value: u64) -> Self {
        match value {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            _ => Self::Other,
        }
    }
}

#[derive(Debug)]
enum Model {
    ByteLevelBpe {
        pre: PreTokenizer,
        merges: Vec<(String, String)>,
    },
    SentencePiece {
        scores: Vec<f32>,
        add_space_prefix: bool,
    },
}

/// Everything about a GGUF vocabulary that decides how text becomes ids.
#[derive(Debug)]
pub(crate) struct GgufVocab {
    model: Model,
    tokens: Vec<String>,
    types: Vec<TokenType>,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    /// Tokens named by `END_OF_GENERATION_KEYS` and `FIM_END_OF_GENERATION`.
    end_of_generation_keys: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
}

impl GgufVocab {
    /// Reads the vocabulary; the error says what is missing or unsupported.
    pub(crate) fn read(file: &GgufFile) -> Result<Self, String> {
        let model_name = file
            .get("tokenizer.ggml.model")
            .and_then(Meta::as_str)
            .ok_or("no tokenizer.ggml.model")?;
        let mut tokens =
            string_array(file, "tokenizer.ggml.tokens")?.ok_or("no tokenizer.ggml.tokens")?;
        // llama.cpp gives empty tokens a name of their own, so they cannot collide.
        for (id, token) in tokens.iter_mut().enumerate() {
            if token.is_empty() {
                *token = format!("[EMPTY_{id}]");
            }
        }
        let types = match file.get("tokenizer.ggml.token_type") {
            None => vec![TokenType::Normal; tokens.len()],
            Some(value) => value
                .as_array()
                .ok_or("tokenizer.ggml.token_type is not an array")?
                .iter()
                .map(|v| v.as_u64().map_or(TokenType::Other, TokenType::from_gguf))
                .collect(),
        };
        if types.len() < tokens.len() {
            return Err(format!(
                "tokenizer.ggml.token_type has {} entries for {} tokens",
                types.len(),
                tokens.len()
            ));
        }
        let flag = |key: &str| match file.get(key) {
            Some(Meta::Bool(b)) => Some(*b),
            _ => None,
        };
        let (model, default_add_bos) = match model_name {
            "gpt2" => {
                let pre_name = file
                    .get("tokenizer.ggml.pre")
                    .and_then(Meta::as_str)
                    .ok_or_else(|| {
                        format!(
                            "no tokenizer.ggml.pre: the file does not say how its BPE vocabulary splits words (supported: {})",
                            pre_tokenizer::SUPPORTED
                        )
                    })?;
                let pre = PreTokenizer::from_name(pre_name).ok_or_else(|| {
                    format!(
                        "pre-tokenizer '{pre_name}' is not supported (supported: {})",
                        pre_tokenizer::SUPPORTED
                    )
                })?;
                let merges = string_array(file, "tokenizer.ggml.merges")?
                    .ok_or("no tokenizer.ggml.merges")?
                    .iter()
                    .map(|m| split_merge(m))
                    .collect::<Result<_, _>>()?;
                (
                    Model::ByteLevelBpe { pre, merges },
                    pre.adds_bos_by_default(),
                )
            }
            "llama" => {
                let scores: Vec<f32> = file
                    .get("tokenizer.ggml.scores")
                    .and_then(Meta::as_array)
                    .ok_or("no tokenizer.ggml.scores")?
                    .iter()
                    .map(|v| v.as_f64().map(|s| s as f32))
                    .collect::<Option<_>>()
                    .ok_or("tokenizer.ggml.scores holds a value that is not a number")?;
                if scores.len() < tokens.len() {
                    return Err(format!(
                        "tokenizer.ggml.scores has {} entries for {} tokens",
                        scores.len(),
                        tokens.len()
                    ));
                }
                let add_space_prefix = flag("tokenizer.ggml.add_space_prefix").unwrap_or(true);
                (
                    Model::SentencePiece {
                        scores,
                        add_space_prefix,
                    },
                    true,
                )
            }
            other => {
                return Err(format!(
                    "tokenizer model '{other}' is not supported (supported: gpt2 byte-level BPE, llama SentencePiece)"
                ));
            }
        };
        let id = |key: &str| -> Result<Option<u32>, String> {
            match file.get(key).map(Meta::as_u64) {
                None => Ok(None),
                Some(Some(id)) if (id as usize) < tokens.len() => Ok(Some(id as u32)),
                Some(_) => Err(format!("{key} is not a token of the vocabulary")),
            }
        };
        let spelled = |texts: &[&str]| {
            tokens
                .iter()
                .position(|t| texts.contains(&t.as_str()))
                .map(|at| at as u32)
        };
        let mut end_of_generation_keys = Vec::new();
        for key in END_OF_GENERATION_KEYS {
            end_of_generation_keys.extend(id(key)?);
        }
        for (key, texts) in FIM_END_OF_GENERATION {
            end_of_generation_keys.extend(id(key)?.or_else(|| spelled(texts)));
        }
        let vocab = GgufVocab {
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            unk: id("tokenizer.ggml.unknown_token_id")?,
            end_of_generation_keys,
            add_bos: flag("tokenizer.ggml.add_bos_token").unwrap_or(default_add_bos),
            add_eos: flag("tokenizer.ggml.add_eos_token").unwrap_or(false),
            model,
            tokens,
            types,
        };
        if vocab.add_bos && vocab.bos.is_none() {
            return Err("the vocabulary adds BOS but names no tokenizer.ggml.bos_token_id".into());
        }
        if vocab.add_eos && vocab.eos.is_none() {
            return Err("the vocabulary adds EOS but names no tokenizer.ggml.eos_token_id".into());
        }
        Ok(vocab)
    }

    /// The tokens generation stops at, as llama.cpp decides: EOS first, then those the file
    /// names, then those spelled as an end of turn or of text.
    pub(crate) fn end_of_generation(&self) -> Vec<u32> {
        let by_text = self
            .tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| END_OF_GENERATION_TEXTS.contains(&t.as_str()))
            .map(|(id, _)| id as u32);
        let mut ids: Vec<u32> = Vec::new();
        for id in self
            .eos
            .into_iter()
            .chain(self.end_of_generation_keys.iter().copied())
            .chain(by_text)
        {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    /// The `tokenizer.json` equivalent to this vocabulary.
    pub(crate) fn spec(&self) -> Value {
        let vocab: serde_json::Map<String, Value> = self
            .tokens
            .iter()
            .enumerate()
            .map(|(id, t)| (t.clone(), json!(id)))
            .collect();
        let (normalizer, pre_tokenizer, model, decoder) = match &self.model {
            Model::ByteLevelBpe { pre, merges } => (
                pre.normalizer(),
                pre.spec(),
                json!({
                    "type": "BPE", "dropout": null, "unk_token": null,
                    "continuing_subword_prefix": null, "end_of_word_suffix": null,
                    "fuse_unk": false, "byte_fallback": false,
                    "ignore_merges": pre.ignore_merges(), "vocab": vocab, "merges": merges,
                }),
                json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
            ),
            Model::SentencePiece {
                scores,
                add_space_prefix,
            } => {
                // llama.cpp writes each space as ▁ and, unless the file says not to, puts one
                // before the text and after every special token: a prepend on each piece of
                // text between added tokens does exactly that.
                let mut normalizers = vec![];
                let mut decoders = vec![
                    json!({"type": "Replace", "pattern": {"String": SPACE}, "content": " "}),
                    json!({"type": "ByteFallback"}),
                    json!({"type": "Fuse"}),
                ];
                if *add_space_prefix {
                    normalizers.push(json!({"type": "Prepend", "prepend": SPACE}));
                    decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
                }
                normalizers
                    .push(json!({"type": "Replace", "pattern": {"String": " "}, "content": SPACE}));
                let unk = self.unk.map(|id| self.tokens[id as usize].clone());
                (
                    json!({"type": "Sequence", "normalizers": normalizers}),
                    Value::Null,
                    json!({
                        "type": "BPE", "dropout": null, "unk_token": unk,
                        "continuing_subword_prefix": null, "end_of_word_suffix": null,
                        "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                        "vocab": vocab, "merges": merges_from_scores(&self.tokens, scores),
                    }),
                    json!({"type": "Sequence", "decoders": decoders}),
                )
            }
        };
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": self.added_tokens(),
            "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": self.post_processor(),
            "decoder": decoder,
            "model": model,
        })
    }

    /// Tokens matched whole in the text before anything else, as llama.cpp does: control and
    /// unknown tokens as special ones, user-defined tokens as plain added ones.
    fn added_tokens(&self) -> Vec<Value> {
        self.types
            .iter()
            .zip(&self.tokens)
            .enumerate()
            .filter_map(|(id, (kind, content))| {
                let special = match kind {
                    TokenType::Control | TokenType::Unknown => true,
                    TokenType::UserDefined => false,
                    _ => return None,
                };
                Some(json!({
                    "id": id, "content": content, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": special,
                }))
            })
            .collect()
    }

    /// BOS and EOS around the text when special tokens are asked for, as the file's
    /// `add_bos_token`/`add_eos_token` (or llama.cpp's default for the vocabulary) say.
    fn post_processor(&self) -> Value {
        let bos = self.bos.filter(|_| self.add_bos);
        let eos = self.eos.filter(|_| self.add_eos);
        if bos.is_none() && eos.is_none() {
            return Value::Null;
        }
        let mut special_tokens: HashMap<String, Value> = HashMap::new();
        let mut piece = |id: u32| {
            let text = self.tokens[id as usize].clone();
            special_tokens.insert(
                text.clone(),
                json!({"id": text, "ids": [id], "tokens": [text]}),
            );
            json!({"SpecialToken": {"id": text, "type_id": 0}})
        };
        let sequence = |name: &str| json!({"Sequence": {"id": name, "type_id": 0}});
        let (bos_piece, eos_piece) = (bos.map(&mut piece), eos.map(&mut piece));
        let template = |name: &str| -> Vec<Value> {
            bos_piece
                .iter()
                .cloned()
                .chain([sequence(name)])
                .chain(eos_piece.iter().cloned())
                .collect()
        };
        json!({
            "type": "TemplateProcessing",
            "single": template("A"),
            "pair": template("A").into_iter().chain(template("B")).collect::<Vec<_>>(),
            "special_tokens": special_tokens,
        })
    }
}

/// A merge as GGUF stores it: the two pieces separated by the first space after the first
/// character (a piece may itself start with a space).
fn split_merge(merge: &str) -> Result<(String, String), String> {
    let first = merge.chars().next().map_or(0, char::len_utf8);
    merge[first..]
        .find(' ')
        .map(|at| {
            let (left, right) = merge.split_at(first + at);
            (left.to_string(), right[1..].to_string())
        })
        .ok_or_else(|| format!("merge '{merge}' is not two pieces"))
}

fn string_array(file: &GgufFile, key: &str) -> Result<Option<Vec<String>>, String> {
    let Some(value) = file.get(key) else {
        return Ok(None);
    };
    value
        .as_array()
        .and_then(|a| a.iter().map(|v| v.as_str().map(String::from)).collect())
        .map(Some)
        .ok_or_else(|| format!("{key} is not an array of strings"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_split_at_the_first_space_after_the_first_character() {
        assert_eq!(
            split_merge("a b").expect("two pieces"),
            ("a".into(), "b".into())
        );
        assert_eq!(
            split_merge("  b").expect("two pieces"),
            (" ".into(), "b".into())
        );
        assert_eq!(
            split_merge("▁t he").expect("two pieces"),
            ("▁t".into(), "he".into())
        );
        assert!(split_merge("ab").is_err());
    }
}
