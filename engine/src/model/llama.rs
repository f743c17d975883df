//! The Llama family of decoder-only transformers — Llama 2 and 3, Mistral, Qwen2 — written
//! once over the kernel layer, so every device runs this definition. Read it top to bottom:
//!
//! ```text
//! h = embed_tokens[tokens]
//! for each decoder layer:
//!     x = rms_norm(h)
//!     h = h + o_proj(attention(rope(q(x)), rope(k(x)), v(x)))    grouped-query, paged KV cache
//!     x = rms_norm(h)
//!     h = h + down_proj(silu(gate_proj(x)) * up_proj(x))         SwiGLU
//! logits = lm_head(rms_norm(h))                                  only the rows that need them
//! ```
//!
//! Q, K and V are one fused projection, and so are gate and up: one pass over the input for
//! each. The architecture's variants are small: Qwen2 adds a bias to Q, K and V; small
//! models tie `lm_head` to `embed_tokens`; Llama 3 scales RoPE's frequencies (in
//! [`ModelConfig::rope_inv_freq`]). The tensor names of Hugging Face checkpoints and of
//! llama.cpp's GGUF files are at the end of the file, with GGUF's one quirk for this family.

use super::{Architecture, ModelConfig, ModelError, TensorNaming, TensorSource};
use crate::backend::BackendError;
use crate::backend::KvCacheShape;
use crate::backend::kernels::{AttentionShape, Kernels, KvCacheDtype, KvCacheLayout};
use crate::backend::step::StepMetadata;
use crate::weights::HostTensor;

/// A Llama-family model placed on a device.
pub struct Llama<K: Kernels> {
    config: ModelConfig,
    attention: AttentionShape,
    embed_tokens: K::Linear,
    layers: Vec<DecoderLayer<K>>,
    norm: K::Vector,
    /// `None` when the output projection is tied to `embed_tokens`.
    lm_head: Option<K::Linear>,
    rope: K::Rope,
}

struct DecoderLayer<K: Kernels> {
    index: usize,
    input_layernorm: K::Vector,
    self_attn: Attention<K>,
    post_attention_layernorm: K::Vector,
    mlp: Mlp<K>,
}

struct Attention<K: Kernels> {
    /// Q, K and V stacked along the output: `[q_width + 2 * kv_width, hidden]`.
    qkv_proj: K::Linear,
    /// Qwen2's biases of Q, K and V, stacked the same way.
    qkv_bias: Option<K::Vector>,
    o_proj: K::Linear,
}

struct Mlp<K: Kernels> {
    /// Gate and up stacked along the output: `[2 * intermediate, hidden]`.
    gate_up_proj: K::Linear,
    down_proj: K::Linear,
}

/// Activations a step reuses in every layer.
struct Workspace<K: Kernels> {
    normed: K::Activations,
    qkv: K::Activations,
    attn: K::Activations,
    gate_up: K::Activations,
    act: K::Activations,
}

/// What every layer of one step reads besides its own weights.
struct Step<'a, K: Kernels> {
    step: &'a K::Step,
    attention: &'a AttentionShape,
    rope: &'a K::Rope,
    eps: f32,
}

impl<K: Kernels> Llama<K> {
    /// Places the model's tensors on `kernels`' device.
    pub fn load(
        config: &ModelConfig,
        tensors: &dyn TensorSource,
        kernels: &K,
    ) -> Result<Self, ModelError> {
        let loader = Loader {
            config,
            tensors,
            kernels,
        };
        let layers = (0..config.num_layers)
            .map(|index| loader.decoder_layer(index))
            .collect::<Result<Vec<_>, _>>()?;
        let lm_head_name = loader.name(Weight::LmHead, 0);
        let lm_head = if tensors.contains(&lm_head_name) {
            Some(loader.linear(&[loader.matrix(Weight::LmHead, 0)?])?)
        } else if config.tie_word_embeddings {
            None
        } else {
            return Err(ModelError::MissingTensor {
                path: tensors.path().to_path_buf(),
                tensor: lm_head_name,
            });
        };
        let rope = kernels
            .place_rope(&config.rope_inv_freq())
            .map_err(|source| loader.placement("rope", source))?;
        Ok(Self {
            config: config.clone(),
            attention: attention_shape(config),
            embed_tokens: loader.linear(&[loader.matrix(Weight::Embed, 0)?])?,
            layers,
            norm: loader.vector(Weight::FinalNorm, 0)?,
            lm_head,
            rope,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The paged KV cache this model needs for `shape` in `dtype`.
    pub fn kv_cache_layout(&self, shape: KvCacheShape, dtype: KvCacheDtype) -> KvCacheLayout {
        KvCacheLayout {
            shape,
            num_layers: self.config.num_layers,
            num_kv_heads: self.config.num_kv_heads,
            head_dim: self.config.head_dim,
            dtype,
        }
    }

    /// Device bytes of the projection weights (norms and biases are a rounding error).
    pub fn weight_bytes(&self, kernels: &K) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                [
                    &l.self_attn.qkv_proj,
                    &l.self_attn.o_proj,
                    &l.mlp.gate_up_proj,
                    &l.mlp.down_proj,
                ]
                .into_iter()
                .map(|w| kernels.linear_bytes(w))
                .sum::<usize>()
            })
            .sum();
        let head = self.lm_head.as_ref().map_or(0, |w| kernels.linear_bytes(w));
        layers + head + kernels.linear_bytes(&self.embed_tokens)
    }

    /// Parameters of the projections [`Self::weight_bytes`] counts.
    pub fn parameters(&self) -> usize {
        let c = &self.config;
        let q = c.num_heads * c.head_dim;
        let kv = c.num_kv_heads * c.head_dim;
        let layer = c.hidden_size * (2 * q + 2 * kv) + 3 * c.hidden_size * c.intermediate_size;
        let head = if self.lm_head.is_some() {
            c.vocab_size * c.hidden_size
        } else {
            0
        };
        c.num_layers * layer + head + c.vocab_size * c.hidden_size
    }

    /// Runs every token of the step through the model, writing their keys and values into
    /// `cache`, and returns the logits of the rows `meta.logits_rows` names (row-major,
    /// `vocab_size` values each).
    pub fn forward(
        &self,
        kernels: &K,
        meta: &StepMetadata,
        step: &K::Step,
        cache: &mut K::KvCache,
    ) -> Result<Vec<f32>, BackendError> {
        let logits = self.forward_logits(kernels, meta, step, cache)?;
        kernels.read(&logits)
    }

    /// [`Self::forward`], leaving the logits on the device: `[logits_rows, vocab_size]`.
    pub fn forward_logits(
        &self,
        kernels: &K,
        meta: &StepMetadata,
        step: &K::Step,
        cache: &mut K::KvCache,
    ) -> Result<K::Activations, BackendError> {
        let c = &self.config;
        let tokens = meta.num_tokens();
        let mut h = kernels.activations(tokens, c.hidden_size)?;
        kernels.embedding(&self.embed_tokens, step, &mut h)?;

        let mut ws = Workspace {
            normed: kernels.activations(tokens, c.hidden_size)?,
            qkv: kernels.activations(tokens, self.attention.qkv_width())?,
            attn: kernels.activations(tokens, self.attention.q_width())?,
            gate_up: kernels.activations(tokens, 2 * c.intermediate_size)?,
            act: kernels.activations(tokens, c.intermediate_size)?,
        };
        let ctx = Step {
            step,
            attention: &self.attention,
            rope: &self.rope,
            eps: c.rms_norm_eps,
        };
        for layer in &self.layers {
            layer.forward(kernels, &mut h, &mut ws, &ctx, cache)?;
        }

        // Only the rows that need logits go through the final norm and the head.
        let rows = meta.logits_rows.len();
        let mut last = kernels.activations(rows, c.hidden_size)?;
        kernels.gather_logits_rows(&h, step, &mut last)?;
        let mut last_normed = kernels.activations(rows, c.hidden_size)?;
        kernels.rms_norm(&last, &self.norm, c.rms_norm_eps, &mut last_normed)?;
        let lm_head = self.lm_head.as_ref().unwrap_or(&self.embed_tokens);
        let mut logits = kernels.activations(rows, c.vocab_size)?;
        kernels.linear(&last_normed, lm_head, &mut logits)?;
        Ok(logits)
    }
}

impl<K: Kernels> DecoderLayer<K> {
    fn forward(
        &self,
        k: &K,
        h: &mut K::Activations,
        ws: &mut Workspace<K>,
        ctx: &Step<'_, K>,
        cache: &mut K::KvCache,
    ) -> Result<(), BackendError> {
        // h = h + o_proj(self_attn(input_layernorm(h)))
        k.rms_norm(h, &self.input_layernorm, ctx.eps, &mut ws.normed)?;
        self.self_attn.forward(k, self.index, ws, ctx, cache)?;
        k.add_linear(h, &ws.attn, &self.self_attn.o_proj)?;

        // h = h + down_proj(mlp(post_attention_layernorm(h)))
        k.rms_norm(h, &self.post_attention_layernorm, ctx.eps, &mut ws.normed)?;
        self.mlp.forward(k, ws)?;
        k.add_linear(h, &ws.act, &self.mlp.down_proj)
    }
}

impl<K: Kernels> Attention<K> {
    /// `ws.attn` = attention over the cache of `ws.normed`'s queries, after this step's keys
    /// and values are written to it.
    fn forward(
        &self,
        k: &K,
        layer: usize,
        ws: &mut Workspace<K>,
        ctx: &Step<'_, K>,
        cache: &mut K::KvCache,
    ) -> Result<(), BackendError> {
        k.linear(&ws.normed, &self.qkv_proj, &mut ws.qkv)?;
        if let Some(bias) = &self.qkv_bias {
            k.add_bias(&mut ws.qkv, bias)?;
        }
        k.rope_and_cache_kv(&mut ws.qkv, ctx.attention, ctx.rope, layer, ctx.step, cache)?;
        k.paged_attention(&ws.qkv, ctx.attention, layer, ctx.step, cache, &mut ws.attn)
    }
}

impl<K: Kernels> Mlp<K> {
    /// `ws.act` = silu(gate_proj(x)) * up_proj(x) for `x = ws.normed`.
    fn forward(&self, k: &K, ws: &mut Workspace<K>) -> Result<(), BackendError> {
        k.linear(&ws.normed, &self.gate_up_proj, &mut ws.gate_up)?;
        k.silu_mul(&ws.gate_up, &mut ws.act)
    }
}

fn attention_shape(c: &ModelConfig) -> AttentionShape {
    AttentionShape {
        num_heads: c.num_heads,
        num_kv_heads: c.num_kv_heads,
        head_dim: c.head_dim,
        scale: 1.0 / (c.head_dim as f32).sqrt(),
    }
}

/// Reads the tensors of one model from its file and places them on the device.
struct Loader<'a, K: Kernels> {
    config: &'a ModelConfig,
    tensors: &'a dyn TensorSource,
    kernels: &'a K,
}

impl<K: Kernels> Loader<'_, K> {
    fn decoder_layer(&self, index: usize) -> Result<DecoderLayer<K>, ModelError> {
        let c = self.config;
        let qkv_bias = if c.qkv_bias {
            let parts =
                [Weight::QBias, Weight::KBias, Weight::VBias].map(|w| self.rotary_vector(w, index));
            let [q, k, v] = parts;
            let stacked: Vec<f32> = [q?, k?, v?].concat();
            let name = self.name(Weight::QBias, index);
            Some(self.place_vector(&HostTensor::from_f32(name, 1, stacked.len(), &stacked))?)
        } else {
            None
        };
        Ok(DecoderLayer {
            index,
            input_layernorm: self.vector(Weight::AttnNorm, index)?,
            self_attn: Attention {
                qkv_proj: self.linear(&[
                    self.matrix(Weight::Q, index)?,
                    self.matrix(Weight::K, index)?,
                    self.matrix(Weight::V, index)?,
                ])?,
                qkv_bias,
                o_proj: self.linear(&[self.matrix(Weight::O, index)?])?,
            },
            post_attention_layernorm: self.vector(Weight::MlpNorm, index)?,
            mlp: Mlp {
                gate_up_proj: self.linear(&[
                    self.matrix(Weight::Gate, index)?,
                    self.matrix(Weight::Up, index)?,
                ])?,
                down_proj: self.linear(&[self.matrix(Weight::Down, index)?])?,
            },
        })
    }

    fn name(&self, weight: Weight, layer: usize) -> String {
        tensor_name(self.tensors.naming(), weight, layer)
    }

    /// The matrix of `weight`, shape-checked and in Hugging Face's row order.
    fn matrix(&self, weight: Weight, layer: usize) -> Result<HostTensor<'_>, ModelError> {
        let (rows, cols) = weight.shape(self.config);
        let tensor = self.tensors.matrix(&self.name(weight, layer), rows, cols)?;
        Ok(match self.interleaved_heads(weight) {
            Some(heads) => {
                let head_dim = rows / heads;
                tensor.reorder_rows(|row| gguf_rotary_source_row(row, head_dim))
            }
            None => tensor,
        })
    }

    fn vector(&self, weight: Weight, layer: usize) -> Result<K::Vector, ModelError> {
        let tensor = self
            .tensors
            .vector(&self.name(weight, layer), weight.shape(self.config).1)?;
        self.place_vector(&tensor)
    }

    /// A bias as f32 values, in Hugging Face's order.
    fn rotary_vector(&self, weight: Weight, layer: usize) -> Result<Vec<f32>, ModelError> {
        let len = weight.shape(self.config).1;
        let values = self
            .tensors
            .vector(&self.name(weight, layer), len)?
            .to_f32();
        Ok(match self.interleaved_heads(weight) {
            Some(heads) => {
                let head_dim = len / heads;
                (0..len)
                    .map(|i| values[gguf_rotary_source_row(i, head_dim)])
                    .collect()
            }
            None => values,
        })
    }

    /// How many heads `weight`'s rows are interleaved across, when this file stores them
    /// in llama.cpp's rotary order (see [`gguf_rotary_source_row`]).
    fn interleaved_heads(&self, weight: Weight) -> Option<usize> {
        let gguf_llama = self.tensors.naming() == TensorNaming::Gguf
            && self.config.architecture != Architecture::Qwen2;
        match weight {
            Weight::Q | Weight::QBias if gguf_llama => Some(self.config.num_heads),
            Weight::K | Weight::KBias if gguf_llama => Some(self.config.num_kv_heads),
            _ => None,
        }
    }

    fn linear(&self, parts: &[HostTensor<'_>]) -> Result<K::Linear, ModelError> {
        self.kernels
            .place_linear(parts)
            .map_err(|source| self.placement(parts[0].name(), source))
    }

    fn place_vector(&self, tensor: &HostTensor<'_>) -> Result<K::Vector, ModelError> {
        self.kernels
            .place_vector(tensor)
            .map_err(|source| self.placement(tensor.name(), source))
    }

    fn placement(&self, tensor: &str, source: BackendError) -> ModelError {
        ModelError::Placement {
            path: self.tensors.path().to_path_buf(),
            tensor: tensor.to_string(),
            source,
        }
    }
}

/// The tensors of a Llama-family model, named independently of the file format.
#[derive(Debug, Clone, Copy)]
enum Weight {
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

impl Weight {
    /// `[rows, cols]` of the tensor (vectors are `[1, len]`).
    fn shape(self, c: &ModelConfig) -> (usize, usize) {
        let (h, q, kv, i) = (
            c.hidden_size,
            c.num_heads * c.head_dim,
            c.num_kv_heads * c.head_dim,
            c.intermediate_size,
        );
        match self {
            Self::Embed | Self::LmHead => (c.vocab_size, h),
            Self::FinalNorm | Self::AttnNorm | Self::MlpNorm => (1, h),
            Self::Q => (q, h),
            Self::K | Self::V => (kv, h),
            Self::QBias => (1, q),
            Self::KBias | Self::VBias => (1, kv),
            Self::O => (h, q),
            Self::Gate | Self::Up => (i, h),
            Self::Down => (h, i),
        }
    }
}

/// Hugging Face's and llama.cpp's names for each tensor, side by side.
fn tensor_name(naming: TensorNaming, weight: Weight, layer: usize) -> String {
    let (hf, gguf) = match weight {
        Weight::Embed => return pick(naming, "model.embed_tokens.weight", "token_embd.weight"),
        Weight::FinalNorm => return pick(naming, "model.norm.weight", "output_norm.weight"),
        Weight::LmHead => return pick(naming, "lm_head.weight", "output.weight"),
        Weight::AttnNorm => ("input_layernorm.weight", "attn_norm.weight"),
        Weight::Q => ("self_attn.q_proj.weight", "attn_q.weight"),
        Weight::K => ("self_attn.k_proj.weight", "attn_k.weight"),
        Weight::V => ("self_attn.v_proj.weight", "attn_v.weight"),
        Weight::QBias => ("self_attn.q_proj.bias", "attn_q.bias"),
        Weight::KBias => ("self_attn.k_proj.bias", "attn_k.bias"),
        Weight::VBias => ("self_attn.v_proj.bias", "attn_v.bias"),
        Weight::O => ("self_attn.o_proj.weight", "attn_output.weight"),
        Weight::MlpNorm => ("post_attention_layernorm.weight", "ffn_norm.weight"),
        Weight::Gate => ("mlp.gate_proj.weight", "ffn_gate.weight"),
        Weight::Up => ("mlp.up_proj.weight", "ffn_up.weight"),
        Weight::Down => ("mlp.down_proj.weight", "ffn_down.weight"),
    };
    match naming {
        TensorNaming::HuggingFace => format!("model.layers.{layer}.{hf}"),
        TensorNaming::Gguf => format!("blk.{layer}.{gguf}"),
    }
}

fn pick(naming: TensorNaming, hf: &str, gguf: &str) -> String {
    match naming {
        TensorNaming::HuggingFace => hf.into(),
        TensorNaming::Gguf => gguf.into(),
    }
}

/// llama.cpp's converter interleaves the rotary halves of Llama's Q and K rows (and
/// biases) so its RoPE can rotate adjacent pairs: within each head, GGUF row `2i + p` holds
/// Hugging Face row `p * half + i`. This is the inverse: the GGUF row that Hugging Face row
/// `row` comes from. (Qwen2's converter leaves the rows alone.)
fn gguf_rotary_source_row(row: usize, head_dim: usize) -> usize {
    let half = head_dim / 2;
    let (head, r) = (row / head_dim, row % head_dim);
    let (p, i) = (r / half, r % half);
    head * head_dim + 2 * i + p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undoing_the_rotary_interleave_returns_each_row_to_its_place() {
        // Two heads of 4 rows: Hugging Face's halves [a0 a1 | b0 b1] are stored by llama.cpp's
        // converter as pairs [a0 b0 a1 b1]. Each GGUF row here holds its Hugging Face row.
        let gguf = [0, 2, 1, 3, 4, 6, 5, 7];
        let restored: Vec<usize> = (0..8)
            .map(|row| gguf[gguf_rotary_source_row(row, 4)])
            .collect();
        assert_eq!(restored, [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn both_namings_name_every_tensor() {
        for weight in [Weight::Embed, Weight::Q, Weight::Down, Weight::LmHead] {
            let hf = tensor_name(TensorNaming::HuggingFace, weight, 3);
            let gguf = tensor_name(TensorNaming::Gguf, weight, 3);
            assert!(hf.ends_with(".weight") && gguf.ends_with(".weight"));
        }
        assert_eq!(
            tensor_name(TensorNaming::Gguf, Weight::Gate, 2),
            "blk.2.ffn_gate.weight"
        );
        assert_eq!(
            tensor_name(TensorNaming::HuggingFace, Weight::O, 0),
            "model.layers.0.self_attn.o_proj.weight"
        );
    }
}
