//! llama.cpp's named pre-tokenizers (`tokenizer.ggml.pre`) for byte-level BPE vocabularies:
//! how each splits text into words before the merges run, as the model's own `tokenizer.json`
//! does. A name not listed here is refused: splitting differently from the one the merges were
//! learned on silently gives other token ids.

use serde_json::{Value, json};

/// Llama 3's split (its `tokenizer.json`): numbers in groups of up to three digits.
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's split: like Llama 3's but one digit at a time.
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// DeepSeek LLM's splits, applied one after the other (llama.cpp's `deepseek-llm`), with
/// every non-ASCII character escaped: some are compatibility characters (the Kelvin sign,
/// Greek letters with oxia) that an editor normalising to NFC would silently change.
const DEEPSEEK_LLM: &[&str] = &[
    "[\r\n]",
    "\\s?[A-Za-z\u{b5}\u{c0}-\u{d6}\u{d8}-\u{f6}\u{f8}-\u{1ba}\u{1bc}-\u{1bf}\u{1c4}-\u{293}\u{295}-\u{2af}\u{370}-\u{373}\u{376}\u{377}\u{37b}-\u{37d}\u{37f}\u{386}\u{388}-\u{38a}\u{38c}\u{38e}-\u{3a1}\u{3a3}-\u{3f5}\u{3f7}-\u{481}\u{48a}-\u{52f}\u{531}-\u{556}\u{10a0}-\u{10c5}\u{13a0}-\u{13f5}\u{13f8}-\u{13fd}\u{1c90}-\u{1cba}\u{1cbd}-\u{1cbf}\u{1d00}-\u{1d2b}\u{1d6b}-\u{1d77}\u{1d79}-\u{1d9a}\u{1e00}-\u{1f15}\u{1f18}-\u{1f1d}\u{1f20}-\u{1f45}\u{1f48}-\u{1f4d}\u{1f50}-\u{1f57}\u{1f59}\u{1f5b}\u{1f5d}\u{1f5f}-\u{1f7d}\u{1f80}-\u{1fb4}\u{1fb6}-\u{1fbc}\u{1fbe}\u{1fc2}-\u{1fc4}\u{1fc6}-\u{1fcc}\u{1fd0}-\u{1fd3}\u{1fd6}-\u{1fdb}\u{1fe0}-\u{1fec}\u{1ff2}-\u{1ff4}\u{1ff6}-\u{1ffc}\u{2102}\u{2107}\u{210a}-\u{2113}\u{2115}\u{2119}-\u{211d}\u{2124}\u{2126}\u{2128}\u{212a}-\u{212d}\u{212f}-\u{2134}\u{2139}\u{213c}-\u{213f}\u{2145}-\u{2149}\u{214e}\u{2183}\u{2184}\u{2c00}-\u{2c7b}\u{2c7e}-\u{2ce4}\u{2ceb}-\u{2cee}\u{2cf2}\u{2cf3}\u{a640}-\u{a66d}\u{a680}-\u{a69b}\u{a722}-\u{a76f}\u{a771}-\u{a787}\u{a78b}-\u{a78e}\u{ab70}-\u{abbf}\u{fb00}-\u{fb06}\u{fb13}-\u{fb17}\u{ff21}-\u{ff3a}\u{ff41}-\u{ff5a}\u{10400}-\u{1044f}\u{104b0}-\u{104d3}\u{104d8}-\u{104fb}\u{10c80}-\u{10cb2}\u{10cc0}-\u{10cf2}\u{118a0}-\u{118df}\u{1e900}-\u{1e943}]+",
    "\\s?[!-/:-~\u{ff01}-\u{ff0f}\u{ff1a}-\u{ff5e}\u{2018}-\u{201f}\u{3000}-\u{3002}]+",
    "\\s+$",
    "[\u{4e00}-\u{9fa5}\u{800}-\u{4e00}\u{ac00}-\u{d7ff}]+",
    "\\p{N}+",
];

/// A byte-level BPE vocabulary's word split, and the few choices that go with it in llama.cpp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PreTokenizer {
    /// `gpt-2`: GPT-2's split, which `ByteLevel` applies itself when its `use_regex` is on.
    Gpt2,
    /// `llama-bpe` (also written `llama3`, `llama-v3`): Llama 3.
    Llama3,
    /// `qwen2`: Qwen2 and Qwen2.5.
    Qwen2,
    /// `deepseek-llm`: DeepSeek LLM.
    DeepseekLlm,
    /// `smollm`: SmolLM, every digit apart, then GPT-2's split.
    Smollm,
}

/// The names accepted, for error messages.
pub(crate) const SUPPORTED: &str =
    "gpt-2, llama-bpe (llama3, llama-v3), qwen2, deepseek-llm, smollm";

impl PreTokenizer {
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "gpt-2" => Self::Gpt2,
            "llama-bpe" | "llama3" | "llama-v3" => Self::Llama3,
            "qwen2" => Self::Qwen2,
            "deepseek-llm" => Self::DeepseekLlm,
            "smollm" => Self::Smollm,
            _ => return None,
        })
    }

    /// Whether a word that is itself a token is taken whole, without running the merges
    /// (`ignore_merges` in Llama 3's `tokenizer.json`; some of its words cannot be rebuilt
    /// from its merges).
    pub(crate) fn ignore_merges(self) -> bool {
        self == Self::Llama3
    }

    /// Whether BOS is added when the file has no `tokenizer.ggml.add_bos_token` (llama.cpp's
    /// default for the vocabulary).
    pub(crate) fn adds_bos_by_default(self) -> bool {
        self == Self::Llama3
    }

    /// The `normalizer` of the equivalent `tokenizer.json`: Qwen2's composes to NFC first.
    pub(crate) fn normalizer(self) -> Value {
        match self {
            Self::Qwen2 => json!({"type": "NFC"}),
            _ => Value::Null,
        }
    }

    /// The `pre_tokenizer` of the equivalent `tokenizer.json`.
    pub(crate) fn spec(self) -> Value {
        let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
        let splits_then_bytes = |patterns: &[&str]| {
            let mut steps: Vec<Value> = patterns.iter().map(|p| isolate(p)).collect();
            steps.push(byte_level(false));
            json!({"type": "Sequence", "pretokenizers": steps})
        };
        match self {
            Self::Gpt2 => byte_level(true),
            Self::Llama3 => splits_then_bytes(&[LLAMA3]),
            Self::Qwen2 => splits_then_bytes(&[QWEN2]),
            Self::DeepseekLlm => splits_then_bytes(DEEPSEEK_LLM),
            Self::Smollm => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        }
    }
}

/// A split that keeps every match of `pattern` as a word of its own, and the text between.
fn isolate(pattern: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(pre: PreTokenizer, text: &str) -> Vec<String> {
        use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer as _};
        let pre: tokenizers::PreTokenizerWrapper =
            serde_json::from_value(pre.spec()).expect("valid pre-tokenizer");
        let mut s = PreTokenizedString::from(text);
        pre.pre_tokenize(&mut s).expect("splits");
        s.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(_, offsets, _)| text[offsets.0..offsets.1].to_string())
            .collect()
    }

    #[test]
    fn llama3_groups_digits_by_three_and_qwen2_one_by_one() {
        assert_eq!(
            words(PreTokenizer::Llama3, "x 12345"),
            ["x", " ", "123", "45"]
        );
        assert_eq!(
            words(PreTokenizer::Qwen2, "x 12345"),
            ["x", " ", "1", "2", "3", "4", "5"]
        );
        assert_eq!(words(PreTokenizer::Gpt2, "x 12345"), ["x", " 12345"]);
    }

    #[test]
    fn every_supported_name_is_known_and_others_are_not() {
        for name in [
            "gpt-2",
            "llama-bpe",
            "llama3",
            "llama-v3",
            "qwen2",
            "deepseek-llm",
            "smollm",
        ] {
            assert!(PreTokenizer::from_name(name).is_some(), "{name}");
            assert!(SUPPORTED.contains(name), "{name} listed");
        }
        for name in ["", "default", "tekken", "starcoder", "Llama-BPE"] {
            assert_eq!(PreTokenizer::from_name(name), None, "{name}");
        }
    }
}
