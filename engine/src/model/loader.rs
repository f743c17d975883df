//! Finding and loading a model: a GGUF file, a directory holding one, or a Hugging Face
//! directory with `config.json`, safetensors and `tokenizer.json`.

use std::path::{Path, PathBuf};

use super::ModelError;
use super::config::{Architecture, HfConfig, ModelConfig, RopeScaling};
use super::gguf::{GgufFile, Value};
use super::safetensors_source::SafetensorsSource;
use super::tokenizer::Tokenizer;
use super::weights::{LayerWeights, Matrix, ModelWeights};

/// Everything needed to run a model: its shape, its weights, its tokenizer.
pub struct LoadedModel {
    pub config: ModelConfig,
    pub weights: ModelWeights,
    pub tokenizer: Tokenizer,
    /// The Jinja chat template, when the model ships one.
    pub chat_template: Option<String>,
    /// Where the model was loaded from.
    pub source: PathBuf,
}

/// Where a layer's tensors come from, whatever the file format.
trait TensorSource {
    fn path(&self) -> &Path;
    /// A matrix `[rows, cols]` (Hugging Face `nn.Linear` layout), checked against `shape`.
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix, ModelError>;
    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError>;
    fn has(&self, name: &str) -> bool;
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
        let source = SafetensorsSource::open(dir)?;
        let weights = load_weights(&config, &source, hf_name)?;
        let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
        let chat_template = read_chat_template(dir);
        Ok(Self {
            config,
            weights,
            tokenizer,
            chat_template,
            source: dir.to_path_buf(),
        })
    }

    fn load_gguf(path: &Path) -> Result<Self, ModelError> {
        let file = GgufFile::open(path)?;
        let config = gguf_config(&file)?;
        config.check(path)?;
        let source = GgufSource {
            file: &file,
            architecture: config.architecture,
            config: &config,
        };
        let weights = load_weights(&config, &source, gguf_name)?;
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let chat_template = file
            .get("tokenizer.chat_template")
            .and_then(Value::as_str)
            .map(String::from);
        Ok(Self {
            config,
            weights,
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

/// The logical tensors of a decoder layer, named independently of the file format.
#[derive(Clone, Copy)]
enum Tensor {
    Embed,
    FinalNorm,
    LmHead,
    AttnNorm,
    Q,
    K,
    V,
    QBias,
    KBias,
    VBias,
    O,
    MlpNorm,
    Gate,
    Up,
    Down,
}

fn hf_name(tensor: Tensor, layer: usize) -> String {
    let l = |s: &str| format!("model.layers.{layer}.{s}");
    match tensor {
        Tensor::Embed => "model.embed_tokens.weight".into(),
        Tensor::FinalNorm => "model.norm.weight".into(),
        Tensor::LmHead => "lm_head.weight".into(),
        Tensor::AttnNorm => l("input_layernorm.weight"),
        Tensor::Q => l("self_attn.q_proj.weight"),
        Tensor::K => l("self_attn.k_proj.weight"),
        Tensor::V => l("self_attn.v_proj.weight"),
        Tensor::QBias => l("self_attn.q_proj.bias"),
        Tensor::KBias => l("self_attn.k_proj.bias"),
        Tensor::VBias => l("self_attn.v_proj.bias"),
        Tensor::O => l("self_attn.o_proj.weight"),
        Tensor::MlpNorm => l("post_attention_layernorm.weight"),
        Tensor::Gate => l("mlp.gate_proj.weight"),
        Tensor::Up => l("mlp.up_proj.weight"),
        Tensor::Down => l("mlp.down_proj.weight"),
    }
}

fn gguf_name(tensor: Tensor, layer: usize) -> String {
    let l = |s: &str| format!("blk.{layer}.{s}");
    match tensor {
        Tensor::Embed => "token_embd.weight".into(),
        Tensor::FinalNorm => "output_norm.weight".into(),
        Tensor::LmHead => "output.weight".into(),
        Tensor::AttnNorm => l("attn_norm.weight"),
        Tensor::Q => l("attn_q.weight"),
        Tensor::K => l("attn_k.weight"),
        Tensor::V => l("attn_v.weight"),
        Tensor::QBias => l("attn_q.bias"),
        Tensor::KBias => l("attn_k.bias"),
        Tensor::VBias => l("attn_v.bias"),
        Tensor::O => l("attn_output.weight"),
        Tensor::MlpNorm => l("ffn_norm.weight"),
        Tensor::Gate => l("ffn_gate.weight"),
        Tensor::Up => l("ffn_up.weight"),
        Tensor::Down => l("ffn_down.weight"),
    }
}

fn load_weights(
    c: &ModelConfig,
    source: &dyn TensorSource,
    name: fn(Tensor, usize) -> String,
) -> Result<ModelWeights, ModelError> {
    let (h, q_dim, kv_dim) = (
        c.hidden_size,
        c.num_heads * c.head_dim,
        c.num_kv_heads * c.head_dim,
    );
    let bias = |t: Tensor, layer: usize, len: usize| -> Result<Option<Vec<f32>>, ModelError> {
        if c.qkv_bias {
            source.vector(&name(t, layer), len).map(Some)
        } else {
            Ok(None)
        }
    };
    let layers = (0..c.num_layers)
        .map(|i| {
            Ok(LayerWeights {
                attn_norm: source.vector(&name(Tensor::AttnNorm, i), h)?,
                q_proj: source.matrix(&name(Tensor::Q, i), q_dim, h)?,
                k_proj: source.matrix(&name(Tensor::K, i), kv_dim, h)?,
                v_proj: source.matrix(&name(Tensor::V, i), kv_dim, h)?,
                q_bias: bias(Tensor::QBias, i, q_dim)?,
                k_bias: bias(Tensor::KBias, i, kv_dim)?,
                v_bias: bias(Tensor::VBias, i, kv_dim)?,
                o_proj: source.matrix(&name(Tensor::O, i), h, q_dim)?,
                mlp_norm: source.vector(&name(Tensor::MlpNorm, i), h)?,
                gate_proj: source.matrix(&name(Tensor::Gate, i), c.intermediate_size, h)?,
                up_proj: source.matrix(&name(Tensor::Up, i), c.intermediate_size, h)?,
                down_proj: source.matrix(&name(Tensor::Down, i), h, c.intermediate_size)?,
            })
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    let lm_head_name = name(Tensor::LmHead, 0);
    // Tied embeddings: no separate output matrix in the file.
    let lm_head = if source.has(&lm_head_name) {
        Some(source.matrix(&lm_head_name, c.vocab_size, h)?)
    } else if c.tie_word_embeddings {
        None
    } else {
        return Err(ModelError::MissingTensor {
            path: source.path().to_path_buf(),
            tensor: lm_head_name,
        });
    };
    Ok(ModelWeights {
        embed_tokens: source.matrix(&name(Tensor::Embed, 0), c.vocab_size, h)?,
        layers,
        final_norm: source.vector(&name(Tensor::FinalNorm, 0), h)?,
        lm_head,
    })
}

fn check_shape(
    path: &Path,
    tensor: &str,
    actual: &[usize],
    expected: &[usize],
) -> Result<(), ModelError> {
    if actual == expected {
        Ok(())
    } else {
        Err(ModelError::WrongShape {
            path: path.to_path_buf(),
            tensor: tensor.to_string(),
            actual: actual.to_vec(),
            expected: expected.to_vec(),
        })
    }
}

impl TensorSource for SafetensorsSource {
    fn path(&self) -> &Path {
        self.dir()
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix, ModelError> {
        let (shape, data) = self.tensor_f32(name)?;
        check_shape(&self.file_of(name), name, &shape, &[rows, cols])?;
        Ok(Matrix::new(rows, cols, data))
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let (shape, data) = self.tensor_f32(name)?;
        check_shape(&self.file_of(name), name, &shape, &[len])?;
        Ok(data)
    }

    fn has(&self, name: &str) -> bool {
        self.contains(name)
    }
}

struct GgufSource<'a> {
    file: &'a GgufFile,
    architecture: Architecture,
    config: &'a ModelConfig,
}

impl TensorSource for GgufSource<'_> {
    fn path(&self) -> &Path {
        self.file.path()
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix, ModelError> {
        let (dims, mut data) = self.file.tensor_f32(name)?;
        // GGUF lists dimensions fastest-first: a [rows, cols] matrix is stored as [cols, rows].
        check_shape(self.file.path(), name, &dims, &[cols, rows])?;
        // llama.cpp's converter interleaves the rotary halves of Llama's Q and K rows so its
        // RoPE can rotate adjacent pairs; undo that to get back Hugging Face's layout.
        if self.architecture != Architecture::Qwen2 {
            if name.ends_with("attn_q.weight") {
                data = unpermute_rotary_rows(&data, self.config.num_heads, cols);
            } else if name.ends_with("attn_k.weight") {
                data = unpermute_rotary_rows(&data, self.config.num_kv_heads, cols);
            }
        }
        Ok(Matrix::new(rows, cols, data))
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ModelError> {
        let (dims, mut data) = self.file.tensor_f32(name)?;
        check_shape(self.file.path(), name, &dims, &[len])?;
        if self.architecture != Architecture::Qwen2 && name.ends_with("attn_q.bias") {
            data = unpermute_rotary_rows(&data, self.config.num_heads, 1);
        } else if self.architecture != Architecture::Qwen2 && name.ends_with("attn_k.bias") {
            data = unpermute_rotary_rows(&data, self.config.num_kv_heads, 1);
        }
        Ok(data)
    }

    fn has(&self, name: &str) -> bool {
        self.file.tensors.contains_key(name)
    }
}

/// Inverse of llama.cpp's `permute`: within each head, GGUF row `2 * i + p` holds Hugging
/// Face row `p * half + i` (`p` = which rotary half, `i` = pair index).
pub(crate) fn unpermute_rotary_rows(data: &[f32], heads: usize, row_len: usize) -> Vec<f32> {
    let rows = data.len() / row_len;
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut out = vec![0.0; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for p in 0..2 {
                let src = (h * head_dim + 2 * i + p) * row_len;
                let dst = (h * head_dim + p * half + i) * row_len;
                out[dst..dst + row_len].copy_from_slice(&data[src..src + row_len]);
            }
        }
    }
    out
}

fn gguf_config(file: &GgufFile) -> Result<ModelConfig, ModelError> {
    let path = file.path();
    let arch = file
        .get("general.architecture")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let architecture = match arch.as_str() {
        "llama" => Architecture::Llama,
        "qwen2" => Architecture::Qwen2,
        _ => {
            return Err(ModelError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                architecture: arch,
            });
        }
    };
    let missing = |key: &str| ModelError::Config {
        path: path.to_path_buf(),
        reason: format!("metadata key '{key}' is missing"),
    };
    let int = |key: &str| -> Result<usize, ModelError> {
        let key = format!("{arch}.{key}");
        file.get(&key)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| missing(&key))
    };
    let float = |key: &str, default: f64| -> f32 {
        file.get(&format!("{arch}.{key}"))
            .and_then(Value::as_f64)
            .unwrap_or(default) as f32
    };
    let hidden_size = int("embedding_length")?;
    let num_heads = int("attention.head_count")?;
    let num_kv_heads = int("attention.head_count_kv").unwrap_or(num_heads);
    let head_dim = int("rope.dimension_count").unwrap_or(hidden_size / num_heads.max(1));
    let vocab_size = match int("vocab_size") {
        Ok(v) => v,
        Err(_) => file
            .tensors
            .get("token_embd.weight")
            .and_then(|t| t.dims.get(1).copied())
            .ok_or_else(|| missing("token_embd.weight"))?,
    };
    let token_id = |key: &str| file.get(key).and_then(Value::as_u64).map(|v| v as u32);
    Ok(ModelConfig {
        architecture,
        hidden_size,
        intermediate_size: int("feed_forward_length")?,
        num_layers: int("block_count")?,
        num_heads,
        num_kv_heads,
        head_dim,
        vocab_size,
        rms_norm_eps: float("attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta: float("rope.freq_base", 10000.0),
        rope_scaling: match file
            .get(&format!("{arch}.rope.scaling.type"))
            .and_then(Value::as_str)
        {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's permute, as its converter applies it.
    fn permute(data: &[f32], heads: usize, row_len: usize) -> Vec<f32> {
        let rows = data.len() / row_len;
        let half = rows / heads / 2;
        let mut out = vec![0.0; data.len()];
        for h in 0..heads {
            for p in 0..2 {
                for i in 0..half {
                    let src = (h * 2 * half + p * half + i) * row_len;
                    let dst = (h * 2 * half + 2 * i + p) * row_len;
                    out[dst..dst + row_len].copy_from_slice(&data[src..src + row_len]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermuting_reverses_the_converters_permutation() {
        let data: Vec<f32> = (0..2 * 8 * 3).map(|v| v as f32).collect();
        let permuted = permute(&data, 2, 3);
        assert_ne!(permuted, data);
        assert_eq!(unpermute_rotary_rows(&permuted, 2, 3), data);
    }
}
