//! Finding a model: a GGUF file, a directory holding one, or a Hugging Face directory with
//! `config.json`, safetensors and `tokenizer.json`; reading its shape and tokenizer, and
//! mapping its tensors for a device to place.

use std::path::{Path, PathBuf};

use super::ModelError;
use super::arch::GEMMA3_LOCAL_ROPE_THETA;
use super::config::{Architecture, Experts, HfConfig, ModelConfig, RopeScaling};
use super::gguf::{GgufFile, Value};
use super::safetensors_source::SafetensorsSource;
use super::tensors::TensorSource;
use super::tokenizer::Tokenizer;

/// A model found on disk: its shape, its tokenizer, and its tensors still in the file
/// (memory-mapped) until a device places them.
pub struct LoadedModel {
    pub config: ModelConfig,
    pub tensors: Box<dyn TensorSource>,
    pub tokenizer: Tokenizer,
    /// The Jinja chat template, when the model ships one.
    pub chat_template: Option<String>,
    /// Where the model was loaded from.
    pub source: PathBuf,
}

impl LoadedModel {
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        if path.is_file() {
            return Self::load_gguf(path);
        }
        if path.join("config.json").is_file() {
            return Self::load_hf_dir(path);
        }
        let ggufs = gguf_files(path)?;
        match ggufs.as_slice() {
            [single] => Self::load_gguf(single),
            [] => Err(ModelError::NotAModel {
                path: path.to_path_buf(),
                reason: "expected a .gguf file, or a directory with config.json or one .gguf file"
                    .into(),
            }),
            _ => Err(ModelError::NotAModel {
                path: path.to_path_buf(),
                reason: format!("{} .gguf files; pass the one to load", ggufs.len()),
            }),
        }
    }

    fn load_hf_dir(dir: &Path) -> Result<Self, ModelError> {
        let config_path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&config_path).map_err(|e| ModelError::io(&config_path, e))?;
        let hf: HfConfig = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: config_path.clone(),
            reason: e.to_string(),
        })?;
        let mut config =
            hf.into_config()
                .map_err(|reason| match reason.strip_prefix("architecture:") {
                    Some(arch) => ModelError::UnsupportedArchitecture {
                        path: config_path.clone(),
                        architecture: arch.to_string(),
                    },
                    None => ModelError::Config {
                        path: config_path.clone(),
                        reason,
                    },
                })?;
        if let Some(ids) = generation_config_eos(dir) {
            config.eos_token_ids = ids;
        }
        config.check(&config_path)?;
        let tensors = Box::new(SafetensorsSource::open(dir)?);
        let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
        let chat_template = read_chat_template(dir);
        Ok(Self {
            config,
            tensors,
            tokenizer,
            chat_template,
            source: dir.to_path_buf(),
        })
    }

    fn load_gguf(path: &Path) -> Result<Self, ModelError> {
        let file = GgufFile::open(path)?;
        let mut config = gguf_config(&file)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        config.eos_token_ids = tokenizer.end_of_generation_ids().to_vec();
        config.check(path)?;
        let chat_template = file
            .get("tokenizer.chat_template")
            .and_then(Value::as_str)
            .map(String::from);
        Ok(Self {
            config,
            tensors: Box::new(file),
            tokenizer,
            chat_template,
            source: path.to_path_buf(),
        })
    }
}

fn gguf_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    files.sort();
    Ok(files)
}

fn generation_config_eos(dir: &Path) -> Option<Vec<u32>> {
    let text = std::fs::read_to_string(dir.join("generation_config.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    match value.get("eos_token_id")? {
        serde_json::Value::Number(n) => Some(vec![n.as_u64()? as u32]),
        serde_json::Value::Array(ids) => Some(
            ids.iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as u32)
                .collect(),
        ),
        _ => None,
    }
}

fn read_chat_template(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.get("chat_template")?.as_str().map(String::from)
}

fn gguf_config(file: &GgufFile) -> Result<ModelConfig, ModelError> {
    let path = file.path();
    let arch = file
        .get("general.architecture")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let key = |name: &str| format!("{arch}.{name}");
    let has_experts = file.get(&key("expert_count")).is_some();
    let architecture = Architecture::from_gguf(&arch, has_experts).ok_or_else(|| {
        ModelError::UnsupportedArchitecture {
            path: path.to_path_buf(),
            architecture: arch.clone(),
        }
    })?;
    let spec = architecture.spec();
    let missing = |key: &str| ModelError::Config {
        path: path.to_path_buf(),
        reason: format!("metadata key '{key}' is missing"),
    };
    let optional_int = |name: &str| {
        file.get(&key(name))
            .and_then(Value::as_u64)
            .map(|v| v as usize)
    };
    let int = |name: &str| -> Result<usize, ModelError> {
        optional_int(name).ok_or_else(|| missing(&key(name)))
    };
    let optional_float = |name: &str| {
        file.get(&key(name))
            .and_then(Value::as_f64)
            .map(|v| v as f32)
    };
    let float = |name: &str, default: f64| optional_float(name).unwrap_or(default as f32);
    let hidden_size = int("embedding_length")?;
    let num_heads = int("attention.head_count")?;
    let num_layers = int("block_count")?;
    let num_kv_heads = int("attention.head_count_kv").unwrap_or(num_heads);
    let head_dim = optional_int("attention.key_length")
        .or_else(|| hidden_size.checked_div(num_heads))
        .unwrap_or(0);
    let vocab_size = match int("vocab_size") {
        Ok(v) => v,
        Err(_) => file
            .tensors
            .get("token_embd.weight")
            .and_then(|t| t.dims.get(1).copied())
            .ok_or_else(|| missing("token_embd.weight"))?,
    };
    // Phi-3 files write 0 for "no window".
    let sliding_window = optional_int("attention.sliding_window").filter(|&w| w > 0);
    let local_layers = (0..num_layers)
        .map(|layer| {
            sliding_window.is_some() && spec.local_layers.is_none_or(|is_local| is_local(layer))
        })
        .collect();
    let experts = match (
        optional_int("expert_count"),
        optional_int("expert_used_count"),
    ) {
        (Some(count), Some(per_token)) => Some(Experts { count, per_token }),
        (None, None) => None,
        _ => return Err(missing(&key("expert_used_count"))),
    };
    let token_id = |key: &str| file.get(key).and_then(Value::as_u64).map(|v| v as u32);
    Ok(ModelConfig {
        architecture,
        hidden_size,
        intermediate_size: int("feed_forward_length")?,
        num_layers,
        num_heads,
        num_kv_heads,
        head_dim,
        vocab_size,
        rms_norm_eps: float("attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta: float("rope.freq_base", 10000.0),
        rope_scaling: match file.get(&key("rope.scaling.type")).and_then(Value::as_str) {
            Some("linear") => RopeScaling::Linear {
                factor: float("rope.scaling.factor", 1.0),
            },
            _ => RopeScaling::None,
        },
        max_position_embeddings: int("context_length").unwrap_or(4096),
        tie_word_embeddings: !file.tensors.contains_key("output.weight"),
        qkv_bias: file.tensors.contains_key("blk.0.attn_q.bias"),
        bos_token_id: token_id("tokenizer.ggml.bos_token_id"),
        eos_token_ids: token_id("tokenizer.ggml.eos_token_id")
            .into_iter()
            .collect(),
        rotary_dim: optional_int("rope.dimension_count").unwrap_or(head_dim),
        sliding_window,
        local_layers,
        local_rope_theta: (architecture == Architecture::Gemma3).then_some(GEMMA3_LOCAL_ROPE_THETA),
        activation: spec.activation,
        query_pre_attn_scalar: gemma_query_scalar(architecture, num_layers, hidden_size, num_heads),
        attn_logit_softcap: optional_float("attn_logit_softcapping"),
        final_logit_softcap: optional_float("final_logit_softcapping"),
        experts,
    })
}

/// GGUF files do not carry Gemma's `query_pre_attn_scalar`; llama.cpp takes it as
/// `head_dim` but for the 27B models (46 layers in Gemma 2, 62 in Gemma 3), whose scalar is
/// `hidden_size / num_heads`, and so does this.
fn gemma_query_scalar(
    architecture: Architecture,
    num_layers: usize,
    hidden_size: usize,
    num_heads: usize,
) -> Option<f32> {
    let is_27b = matches!(
        (architecture, num_layers),
        (Architecture::Gemma2, 46) | (Architecture::Gemma3, 62)
    );
    is_27b.then(|| (hidden_size / num_heads.max(1)) as f32)
}
