//! GGUF files are untrusted input (a model pulled from anywhere): a crafted or corrupted
//! one gets an error naming the file, never a panic, a stack overflow or an allocation
//! the file cannot justify. A tiny valid model is written here; crafted variants and
//! property tests that mutate its header all load or fail cleanly.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use modelfleet_engine::model::LoadedModel;
use proptest::prelude::*;

const ALIGNMENT: usize = 32;
const HIDDEN: u64 = 8;
const VOCAB: u64 = 16;

/// A metadata value as GGUF encodes it.
#[derive(Clone)]
enum Meta {
    U32(u32),
    U64(u64),
    Str(String),
    /// Element type id and the encoded elements.
    Array(u32, u64, Vec<u8>),
    /// Raw bytes after the type id, for values a valid writer would not produce.
    Raw(u32, Vec<u8>),
}

fn string_bytes(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

impl Meta {
    fn type_id(&self) -> u32 {
        match self {
            Meta::U32(_) => 4,
            Meta::U64(_) => 10,
            Meta::Str(_) => 8,
            Meta::Array(..) => 9,
            Meta::Raw(id, _) => *id,
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Meta::U32(v) => v.to_le_bytes().to_vec(),
            Meta::U64(v) => v.to_le_bytes().to_vec(),
            Meta::Str(s) => string_bytes(s),
            Meta::Array(element, len, items) => {
                let mut out = element.to_le_bytes().to_vec();
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(items);
                out
            }
            Meta::Raw(_, bytes) => bytes.clone(),
        }
    }
}

fn strings(items: &[&str]) -> Meta {
    let bytes = items.iter().flat_map(|s| string_bytes(s)).collect();
    Meta::Array(8, items.len() as u64, bytes)
}

/// One tensor of the tiny model: GGUF dimensions (fastest first), type, offset override.
#[derive(Clone)]
struct TensorSpec {
    name: String,
    dims: Vec<u64>,
    offset: Option<u64>,
}

/// A GGUF file under construction: metadata and F32 tensors.
#[derive(Clone)]
struct Gguf {
    metadata: Vec<(String, Meta)>,
    tensors: Vec<TensorSpec>,
}

impl Gguf {
    /// A one-layer Llama with a 16-token byte-level vocabulary: loads and runs.
    fn tiny() -> Self {
        let letters: Vec<String> = (b'a'..b'a' + VOCAB as u8)
            .map(|c| (c as char).to_string())
            .collect();
        let letters: Vec<&str> = letters.iter().map(String::as_str).collect();
        let metadata = vec![
            ("general.architecture", Meta::Str("llama".into())),
            ("llama.embedding_length", Meta::U32(HIDDEN as u32)),
            ("llama.attention.head_count", Meta::U32(2)),
            ("llama.attention.head_count_kv", Meta::U32(1)),
            ("llama.rope.dimension_count", Meta::U32(4)),
            ("llama.feed_forward_length", Meta::U32(8)),
            ("llama.block_count", Meta::U32(1)),
            ("llama.context_length", Meta::U32(64)),
            ("tokenizer.ggml.model", Meta::Str("gpt2".into())),
            ("tokenizer.ggml.pre", Meta::Str("gpt-2".into())),
            ("tokenizer.ggml.tokens", strings(&letters)),
            ("tokenizer.ggml.merges", strings(&[])),
            ("tokenizer.ggml.eos_token_id", Meta::U32(1)),
        ];
        let tensor = |name: &str, dims: &[u64]| TensorSpec {
            name: name.into(),
            dims: dims.to_vec(),
            offset: None,
        };
        let tensors = vec![
            tensor("token_embd.weight", &[HIDDEN, VOCAB]),
            tensor("output_norm.weight", &[HIDDEN]),
            tensor("blk.0.attn_norm.weight", &[HIDDEN]),
            tensor("blk.0.attn_q.weight", &[HIDDEN, 8]),
            tensor("blk.0.attn_k.weight", &[HIDDEN, 4]),
            tensor("blk.0.attn_v.weight", &[HIDDEN, 4]),
            tensor("blk.0.attn_output.weight", &[8, HIDDEN]),
            tensor("blk.0.ffn_norm.weight", &[HIDDEN]),
            tensor("blk.0.ffn_gate.weight", &[HIDDEN, 8]),
            tensor("blk.0.ffn_up.weight", &[HIDDEN, 8]),
            tensor("blk.0.ffn_down.weight", &[8, HIDDEN]),
        ];
        Gguf {
            metadata: metadata
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            tensors,
        }
    }

    fn set(mut self, key: &str, value: Meta) -> Self {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.metadata.push((key.to_string(), value)),
        }
        self
    }

    fn tensor(mut self, name: &str, edit: impl FnOnce(&mut TensorSpec)) -> Self {
        if let Some(t) = self.tensors.iter_mut().find(|t| t.name == name) {
            edit(t);
        }
        self
    }

    /// The file's bytes and where its header (metadata and tensor directory) ends.
    fn bytes(&self) -> (Vec<u8>, usize) {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            out.extend(string_bytes(key));
            out.extend_from_slice(&value.type_id().to_le_bytes());
            out.extend(value.encode());
        }
        let mut data = Vec::new();
        for (i, tensor) in self.tensors.iter().enumerate() {
            // Dimensions too large to be real get no data (the directory is what is tested).
            let count = tensor
                .dims
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d))
                .filter(|&n| n < 1 << 20)
                .unwrap_or(0);
            let offset = data.len() as u64;
            data.extend(
                (0..count)
                    .flat_map(|j| (((i as u64 * 31 + j) % 17) as f32 / 17.0 - 0.5).to_le_bytes()),
            );
            data.resize(data.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);
            out.extend(string_bytes(&tensor.name));
            out.extend_from_slice(&(tensor.dims.len() as u32).to_le_bytes());
            for d in &tensor.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&0u32.to_le_bytes()); // F32
            out.extend_from_slice(&tensor.offset.unwrap_or(offset).to_le_bytes());
        }
        let header_len = out.len();
        out.resize(out.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);
        out.extend(data);
        (out, header_len)
    }
}

/// Loads `bytes` as a model file; a panic fails the test with the panic's message.
fn load(bytes: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, bytes).expect("write");
    load_path(&path)
}

fn load_path(path: &Path) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| LoadedModel::load(path))) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(panic) => panic!(
            "loading panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        ),
    }
}

fn load_error(file: &Gguf) -> String {
    let error = load(&file.bytes().0).expect_err("a broken file is refused");
    assert!(error.contains("model.gguf"), "the file is named: {error}");
    error
}

#[test]
fn the_tiny_model_loads_and_generates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, Gguf::tiny().bytes().0).expect("write");
    let model = LoadedModel::load(&path).expect("the unmutated file loads");
    assert_eq!(model.config.vocab_size, VOCAB as usize);
    assert_eq!(model.config.num_kv_heads, 1);
}

#[test]
fn deeply_nested_arrays_are_refused_not_a_stack_overflow() {
    // Array of array of ... 100 000 deep: each level is a type id (9) and a length (1).
    let depth = 100_000;
    let mut nested = Vec::new();
    for _ in 0..depth {
        nested.extend_from_slice(&9u32.to_le_bytes());
        nested.extend_from_slice(&1u64.to_le_bytes());
    }
    nested.extend_from_slice(&4u32.to_le_bytes());
    nested.extend_from_slice(&0u64.to_le_bytes());
    let file = Gguf::tiny().set("general.nested", Meta::Raw(9, nested));
    let error = load_error(&file);
    assert!(error.contains("nested more than"), "{error}");
}

#[test]
fn array_lengths_the_file_cannot_hold_are_refused_before_allocating() {
    for len in [u64::MAX, 1 << 40, 100_000] {
        let file = Gguf::tiny().set("general.huge", Meta::Array(10, len, Vec::new()));
        let error = load_error(&file);
        assert!(error.contains("does not fit"), "{len}: {error}");
    }
}

#[test]
fn more_metadata_values_than_any_model_has_are_refused() {
    // Five million one-byte elements: a 5 MB file asking for 160 MB of values.
    let len = 5_000_000;
    let file = Gguf::tiny().set("general.bytes", Meta::Array(0, len, vec![7; len as usize]));
    let error = load_error(&file);
    assert!(error.contains("metadata values"), "{error}");
}

#[test]
fn an_alignment_that_is_not_a_power_of_two_is_refused() {
    for alignment in [0, 3, 48] {
        let file = Gguf::tiny().set("general.alignment", Meta::U32(alignment));
        let error = load_error(&file);
        assert!(error.contains("power of two"), "{alignment}: {error}");
    }
}

#[test]
fn tensors_beyond_the_file_or_beyond_counting_are_refused() {
    let far = Gguf::tiny().tensor("output_norm.weight", |t| t.offset = Some(u64::MAX - 3));
    assert!(load_error(&far).contains("extends past the end"));
    let huge = Gguf::tiny().tensor("output_norm.weight", |t| {
        t.dims = vec![u64::MAX / 2, 4];
    });
    assert!(load_error(&huge).contains("more elements than can be counted"));
}

#[test]
fn shapes_that_cannot_run_are_refused_with_the_cause() {
    for (key, value, expected) in [
        (
            "llama.attention.head_count",
            0,
            "num_attention_heads must be between 1",
        ),
        (
            "llama.attention.head_count_kv",
            0,
            "num_key_value_heads must be between 1",
        ),
        ("llama.attention.head_count_kv", 3, "must be a multiple of"),
        (
            "llama.attention.key_length",
            0,
            "head_dim must be between 1",
        ),
        (
            "llama.rope.dimension_count",
            0,
            "the rotary dimensions (0) must be even",
        ),
        (
            "llama.rope.dimension_count",
            3,
            "the rotary dimensions (3) must be even",
        ),
        (
            "llama.block_count",
            0,
            "num_hidden_layers must be between 1",
        ),
    ] {
        let file = Gguf::tiny().set(key, Meta::U32(value));
        let error = load_error(&file);
        assert!(error.contains(expected), "{key}={value}: {error}");
    }
    let absurd = Gguf::tiny().set("llama.embedding_length", Meta::U64(1 << 40));
    assert!(load_error(&absurd).contains("hidden_size must be between 1"));
}

/// Little-endian values that break length and count fields in interesting ways.
fn interesting() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(u64::from(u32::MAX)),
        Just(u64::MAX),
        Just(1 << 31),
        Just(1 << 62),
        any::<u64>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn flipped_header_bytes_never_panic(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let (mut bytes, header_len) = Gguf::tiny().bytes();
        for (at, value) in edits {
            bytes[at.index(header_len)] = value;
        }
        let _ = load(&bytes);
    }

    #[test]
    fn overwritten_header_fields_never_panic(at in any::<prop::sample::Index>(), value in interesting(), width in prop_oneof![Just(4usize), Just(8)]) {
        let (mut bytes, header_len) = Gguf::tiny().bytes();
        let at = at.index(header_len - width);
        bytes[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
        let _ = load(&bytes);
    }

    #[test]
    fn truncated_files_never_panic(at in any::<prop::sample::Index>()) {
        let (bytes, _) = Gguf::tiny().bytes();
        let cut = at.index(bytes.len());
        prop_assert!(load(&bytes[..cut]).is_err(), "a file cut at {} of {} loaded", cut, bytes.len());
    }
}
