//! Tokenizers built from GGUF vocabularies, against llama.cpp's own test vectors for those
//! files and against the tokenizers `transformers` builds from the same files
//! (fixtures: `scripts/golden/tokenizer_fixtures.sh`).

// Only the demo model's location is used here; the golden tests use the rest.
#[allow(dead_code)]
#[path = "golden/support.rs"]
mod support;

use std::path::{Path, PathBuf};

use modelfleet_engine::detokenizer::Decode;
use modelfleet_engine::model::gguf::GgufFile;
use modelfleet_engine::model::{ModelError, Tokenizer};
use serde::Deserialize;
use std::collections::HashMap;

const SEPARATOR: &str = "\n__ggml_vocab_test__\n";

/// The vocabularies llama.cpp ships test vectors for, and the demo model's (SmolLM2).
const VOCABS: &[&str] = &[
    "llama-bpe",
    "llama-spm",
    "gpt-2",
    "qwen2",
    "deepseek-llm",
    "phi-3",
    "smollm2-demo",
];

/// Where `transformers` builds a different tokenizer from a GGUF file than llama.cpp (whose
/// vectors come from the model's own `tokenizer.json`): how many of the reference texts show it
/// (plain texts, texts with special tokens, the same as prompts), and why. On those texts the
/// engine follows llama.cpp; the test proves both that it does and that transformers differs on
/// exactly these.
struct Divergence {
    vocab: &'static str,
    texts: usize,
    special: usize,
    prompts: usize,
    why: &'static str,
}

const TRANSFORMERS_DIVERGES: &[Divergence] = &[
    Divergence {
        vocab: "llama-bpe",
        texts: 1,
        special: 0,
        prompts: 5,
        why: "it runs the merges on words that are tokens themselves (Llama 3's tokenizer.json \
              sets ignore_merges), and adds no BOS to a prompt (the file has no add_bos_token; \
              llama.cpp adds BOS to a Llama 3 vocabulary, as its tokenizer.json does)",
    },
    Divergence {
        vocab: "llama-spm",
        texts: 15,
        special: 4,
        prompts: 4,
        why: "its SentencePiece tokenizer uses Metaspace, which puts no \u{2581} before text that \
              starts with a space nor after a special token",
    },
    Divergence {
        vocab: "deepseek-llm",
        texts: 1,
        special: 4,
        prompts: 5,
        why: "it splits with GPT-2's regex, not DeepSeek's, and gives BOS/EOS new ids past the \
              vocabulary (it skips control tokens spelled outside the byte alphabet)",
    },
    Divergence {
        vocab: "smollm2-demo",
        texts: 1,
        special: 0,
        prompts: 0,
        why: "it does not split digits apart before GPT-2's split, so a numeral that is not an \
              ASCII digit (\"½\") joins the space before it",
    },
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizers")
}

fn vocab_file(name: &str) -> PathBuf {
    if name == "smollm2-demo" {
        return demo_model_dir().join("model.gguf");
    }
    fixtures().join(format!("ggml-vocab-{name}.gguf"))
}

fn tokenizer(path: &Path) -> Tokenizer {
    let file = GgufFile::open(path).expect("vocabulary opens");
    Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// llama.cpp's texts and the ids it expects (`add_special = false`, `parse_special = false`).
fn llama_cpp_vectors(name: &str) -> Vec<(String, Vec<u32>)> {
    let read = |suffix: &str| {
        std::fs::read_to_string(fixtures().join(format!("ggml-vocab-{name}.gguf.{suffix}")))
            .expect("vector file")
    };
    let inputs = read("inp");
    let mut texts: Vec<&str> = inputs.split(SEPARATOR).collect();
    if texts.last() == Some(&"") {
        texts.pop();
    }
    let outputs = read("out");
    let ids: Vec<Vec<u32>> = outputs
        .split('\n')
        .take(texts.len())
        .map(|line| {
            line.split_whitespace()
                .map(|id| id.parse().expect("an id"))
                .collect()
        })
        .collect();
    assert_eq!(ids.len(), texts.len(), "{name}: one line of ids per text");
    texts.into_iter().map(String::from).zip(ids).collect()
}

#[derive(Deserialize)]
struct Reference<V> {
    vocabularies: HashMap<String, V>,
}

fn reference<V: serde::de::DeserializeOwned>(file: &str, name: &str) -> V {
    let text = std::fs::read_to_string(fixtures().join(file)).expect("reference");
    let mut reference: Reference<V> = serde_json::from_str(&text).expect("reference parses");
    reference
        .vocabularies
        .remove(name)
        .unwrap_or_else(|| panic!("no {name} in {file}"))
}

/// What transformers gives (`scripts/golden/tokenizer_fixtures.py`).
#[derive(Deserialize)]
struct Transformers {
    texts: Vec<TransformersCase>,
    special: Vec<TransformersCase>,
}

#[derive(Deserialize)]
struct TransformersCase {
    text: String,
    ids: Vec<u32>,
    #[serde(default)]
    ids_with_special_tokens: Vec<u32>,
}

/// What llama.cpp's `llama_tokenize` gives (`scripts/golden/llama_cpp_tokenize.cpp`).
#[derive(Deserialize)]
struct LlamaCpp {
    /// The tokens llama.cpp ends generation at (`llama_vocab_is_eog`).
    end_of_generation: Vec<u32>,
    texts: Vec<LlamaCppCase>,
    special: Vec<LlamaCppCase>,
}

#[derive(Deserialize)]
struct LlamaCppCase {
    text: String,
    /// Special tokens in the text parsed, none added.
    ids: Vec<u32>,
    /// As a prompt: special tokens parsed, BOS/EOS added as the vocabulary says.
    ids_prompt: Vec<u32>,
}

/// Every llama.cpp vector of `name`, reporting all the texts that differ at once.
fn assert_llama_cpp_vectors(name: &str) {
    let tokenizer = tokenizer(&vocab_file(name));
    let vectors = llama_cpp_vectors(name);
    assert!(vectors.len() >= 40, "{name}: {} vectors", vectors.len());
    let wrong: Vec<String> = vectors
        .iter()
        .filter_map(|(text, expected)| {
            let ids = tokenizer.encode(text).expect("encodes");
            (&ids != expected).then(|| format!("{text:?}: {ids:?}, llama.cpp {expected:?}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{name}: {} of {} texts differ from llama.cpp:\n{}",
        wrong.len(),
        vectors.len(),
        wrong.join("\n")
    );
}

#[test]
fn llama3_bpe_vocabulary_matches_llama_cpp() {
    assert_llama_cpp_vectors("llama-bpe");
}

#[test]
fn sentencepiece_llama_vocabulary_matches_llama_cpp() {
    assert_llama_cpp_vectors("llama-spm");
}

#[test]
fn gpt2_vocabulary_matches_llama_cpp() {
    assert_llama_cpp_vectors("gpt-2");
}

#[test]
fn qwen2_vocabulary_matches_llama_cpp() {
    assert_llama_cpp_vectors("qwen2");
}

#[test]
fn deepseek_llm_vocabulary_matches_llama_cpp() {
    assert_llama_cpp_vectors("deepseek-llm");
}

#[test]
fn phi3_sentencepiece_vocabulary_matches_llama_cpp() {
    assert_llama_cpp_vectors("phi-3");
}

/// Texts with special tokens, and prompts (BOS/EOS added), as llama.cpp tokenizes them; for
/// the demo model, which has no vectors of its own, llama.cpp's test texts too.
#[test]
fn special_tokens_and_prompts_match_llama_cpp() {
    for &name in VOCABS {
        let tokenizer = tokenizer(&vocab_file(name));
        let reference: LlamaCpp = reference("llama-cpp.json", name);
        assert!(reference.special.len() >= 4, "{name}: special texts");
        for case in reference.special.iter().chain(&reference.texts) {
            let text = &case.text;
            assert_eq!(
                tokenizer.encode(text).expect("encodes"),
                case.ids,
                "{name}: {text:?}"
            );
            assert_eq!(
                tokenizer.encode_prompt(text).expect("encodes"),
                case.ids_prompt,
                "{name}: {text:?} as a prompt"
            );
        }
    }
}

#[test]
fn generation_ends_at_the_tokens_llama_cpp_ends_it_at() {
    for &name in VOCABS {
        let tokenizer = tokenizer(&vocab_file(name));
        let reference: LlamaCpp = reference("llama-cpp.json", name);
        let ours = tokenizer.end_of_generation_ids();
        let mut sorted = ours.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, reference.end_of_generation, "{name}");
        let file = GgufFile::open(&vocab_file(name)).expect("opens");
        let eos = file
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.as_u64())
            .map(|id| id as u32);
        assert_eq!(ours.first().copied(), eos, "{name}: EOS first");
    }
}

/// The engine equals transformers wherever transformers equals llama.cpp, and transformers
/// differs on exactly the texts `TRANSFORMERS_DIVERGES` explains.
#[test]
fn vocabularies_match_transformers_where_it_follows_the_models_tokenizer() {
    for &name in VOCABS {
        let tokenizer = tokenizer(&vocab_file(name));
        let hf: Transformers = reference("transformers.json", name);
        let cpp: LlamaCpp = reference("llama-cpp.json", name);
        let mut diverging = [0; 3];
        let mut compare = |kind: usize, ours: Vec<u32>, hf: &[u32], cpp: &[u32], text: &str| {
            if hf == cpp {
                assert_eq!(ours, hf, "{name}: {text:?} against transformers");
            } else {
                diverging[kind] += 1;
            }
        };
        for (kind, hf_cases, cpp_cases) in
            [(0, &hf.texts, &cpp.texts), (1, &hf.special, &cpp.special)]
        {
            assert_eq!(hf_cases.len(), cpp_cases.len(), "{name}: same texts");
            for (h, c) in hf_cases.iter().zip(cpp_cases) {
                assert_eq!(h.text, c.text, "{name}: same texts in the same order");
                let ours = tokenizer.encode(&h.text).expect("encodes");
                compare(kind, ours, &h.ids, &c.ids, &h.text);
                if kind == 1 {
                    let ours = tokenizer.encode_prompt(&h.text).expect("encodes");
                    compare(2, ours, &h.ids_with_special_tokens, &c.ids_prompt, &h.text);
                }
            }
        }
        let (expected, why) = TRANSFORMERS_DIVERGES
            .iter()
            .find(|d| d.vocab == name)
            .map_or(([0; 3], "none known"), |d| {
                ([d.texts, d.special, d.prompts], d.why)
            });
        assert_eq!(
            diverging, expected,
            "{name}: texts, special texts and prompts where transformers differs from llama.cpp \
             (known: {why})"
        );
    }
}

#[test]
fn bos_is_added_by_sentencepiece_and_llama3_but_not_gpt2() {
    let first = |name: &str| {
        tokenizer(&vocab_file(name))
            .encode_prompt("Hi")
            .expect("encodes")[0]
    };
    assert_eq!(first("llama-spm"), 1);
    assert_eq!(first("llama-bpe"), 128000);
    let gpt2 = tokenizer(&vocab_file("gpt-2"));
    assert_eq!(
        gpt2.encode_prompt("Hi").expect("encodes"),
        gpt2.encode("Hi").expect("encodes")
    );
}

#[test]
fn sentencepiece_text_round_trips_through_decoding() {
    let tokenizer = tokenizer(&vocab_file("llama-spm"));
    for (text, _) in llama_cpp_vectors("llama-spm") {
        let ids = tokenizer.encode(&text).expect("encodes");
        // Decoding drops the one space the tokenizer put in front, as Llama 2's decoder does.
        assert_eq!(tokenizer.decode(&ids).expect("decodes"), text, "{ids:?}");
    }
}

/// The bytes GGUF stores a string entry as: the key, the string type, the value.
fn string_entry(key: &str, value: &str) -> Vec<u8> {
    let mut bytes = (key.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(key.as_bytes());
    bytes.extend_from_slice(&8u32.to_le_bytes());
    bytes.extend_from_slice(&(value.len() as u64).to_le_bytes());
    bytes.extend_from_slice(value.as_bytes());
    bytes
}

/// A copy of a vocabulary with one metadata entry replaced by another of the same length.
fn patched_vocab(name: &str, from: &[u8], to: &[u8]) -> tempfile::NamedTempFile {
    assert_eq!(from.len(), to.len(), "same length keeps the file's layout");
    let mut bytes = std::fs::read(vocab_file(name)).expect("vocabulary");
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("entry present");
    bytes[at..at + to.len()].copy_from_slice(to);
    let file = tempfile::Builder::new()
        .suffix(".gguf")
        .tempfile()
        .expect("temp file");
    std::fs::write(file.path(), bytes).expect("written");
    file
}

fn refusal(path: &Path) -> String {
    let file = GgufFile::open(path).expect("opens");
    match Tokenizer::from_gguf(&file) {
        Err(e @ ModelError::Tokenizer { .. }) => e.to_string(),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a tokenizer was built"),
    }
}

#[test]
fn an_unknown_pre_tokenizer_is_refused_by_name() {
    let pre = |value: &str| string_entry("tokenizer.ggml.pre", value);
    // Positive control: the patched copy builds while the name is one that is supported.
    let supported = patched_vocab("llama-bpe", &pre("llama-bpe"), &pre("llama-bpe"));
    assert!(Tokenizer::from_gguf(&GgufFile::open(supported.path()).expect("opens")).is_ok());
    let unknown = patched_vocab("llama-bpe", &pre("llama-bpe"), &pre("starcoder"));
    let message = refusal(unknown.path());
    assert!(
        message.contains("pre-tokenizer 'starcoder' is not supported")
            && message.contains("llama-bpe"),
        "{message}"
    );
}

#[test]
fn a_bpe_vocabulary_without_a_pre_tokenizer_is_refused() {
    let missing = patched_vocab(
        "gpt-2",
        &string_entry("tokenizer.ggml.pre", "gpt-2"),
        &string_entry("tokenizer.ggml.prX", "gpt-2"),
    );
    let message = refusal(missing.path());
    assert!(message.contains("no tokenizer.ggml.pre"), "{message}");
}

#[test]
fn an_unknown_tokenizer_model_is_refused_by_name() {
    let model = |value: &str| string_entry("tokenizer.ggml.model", value);
    let unknown = patched_vocab("llama-spm", &model("llama"), &model("rwkv_"));
    let message = refusal(unknown.path());
    assert!(
        message.contains("tokenizer model 'rwkv_' is not supported"),
        "{message}"
    );
}

fn demo_model_dir() -> PathBuf {
    let dir = support::demo_model_dir();
    assert!(
        dir.join("model.gguf").is_file(),
        "no demo model in {}: run `make tools`",
        dir.display()
    );
    dir
}
