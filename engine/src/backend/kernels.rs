//! The kernel layer: the few operations a decoder is made of, device-neutral.
//!
//! The model (crate::model) is written once over this trait; a device implements it and
//! nothing else of the architecture. Buffers are the device's own types: activations are
//! `[rows, width]` matrices of one value per (token, feature), weights are placed once at
//! load from [`HostTensor`]s and kept in whatever layout the device's kernels want.
//!
//! Every operation is row-independent: a row's result depends only on that row's inputs
//! (and, for attention, its own sequence's cache), never on what else is in the batch. The
//! engine relies on this: a request's output must not change with its neighbours.

use super::step::StepMetadata;
use super::{BackendError, BlockId, KvCacheShape};
use crate::weights::HostTensor;

/// Precision of the paged KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvCacheDtype {
    F32,
    F16,
    Bf16,
}

impl KvCacheDtype {
    pub const fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F16 => "float16",
            Self::Bf16 => "bfloat16",
        }
    }
}

/// The heads of one attention layer. A fused QKV activation row holds the `num_heads`
/// query heads, then the `num_kv_heads` key heads, then the value heads, `head_dim` each.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies `q · k` before the softmax (`1 / √head_dim` for Llama).
    pub scale: f32,
    /// A query at position `p` sees only the keys at `p - window + 1 ..= p` (Mistral's and
    /// Gemma's local layers); `None`: every key up to its own position.
    pub sliding_window: Option<usize>,
    /// Scores pass through `cap · tanh(score / cap)` before the softmax (Gemma 2).
    pub logit_softcap: Option<f32>,
}

impl AttentionShape {
    pub const fn q_width(&self) -> usize {
        self.num_heads * self.head_dim
    }

    pub const fn kv_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    pub const fn qkv_width(&self) -> usize {
        self.q_width() + 2 * self.kv_width()
    }

    /// Query heads per KV head (grouped-query attention).
    pub const fn group_size(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }
}

/// Everything a device needs to allocate a paged KV cache: per layer, keys and values of
/// `[num_blocks, block_size, num_kv_heads, head_dim]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheLayout {
    pub shape: KvCacheShape,
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub dtype: KvCacheDtype,
}

impl KvCacheLayout {
    /// Bytes of one block across every layer, keys and values.
    pub const fn bytes_per_block(&self) -> usize {
        2 * self.num_layers
            * self.shape.block_size
            * self.num_kv_heads
            * self.head_dim
            * self.dtype.bytes()
    }

    /// How many blocks of this layout fit in `budget_bytes`.
    pub fn blocks_in(&self, budget_bytes: usize) -> usize {
        budget_bytes / self.bytes_per_block().max(1)
    }
}

/// The nonlinearity of a gated MLP: `out = act(gate) * up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatedActivation {
    /// SwiGLU: `silu(x) = x · sigmoid(x)` (Llama, Mistral, Qwen2, Phi-3, Mixtral).
    Silu,
    /// GeGLU with GELU's tanh approximation (Gemma).
    GeluTanh,
}

/// How one row's next token is picked where its logits are, so that only the token leaves
/// the device. Rows the host's sampler must see whole (penalties, log-probabilities) are
/// not picked this way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TokenPick {
    /// The arg max: the lowest index wins ties.
    Greedy,
    /// A draw at `uniform` (in `[0, 1)`, from the request's own random stream) from the
    /// distribution left by temperature, then top-k (0: all), top-p and min-p, as
    /// [`crate::sampling::logits::candidate_distribution`] makes it.
    Sample {
        temperature: f32,
        top_k: u32,
        top_p: f32,
        min_p: f32,
        uniform: f64,
    },
}

impl TokenPick {
    /// The token the host's sampling functions pick from `logits` (the reference every
    /// device's [`Kernels::pick_tokens`] is tested on).
    pub fn pick(&self, logits: &[f32]) -> u32 {
        use crate::sampling::logits::{argmax, candidate_distribution, draw};
        match *self {
            Self::Greedy => argmax(logits),
            Self::Sample {
                temperature,
                top_k,
                top_p,
                min_p,
                uniform,
            } => {
                let candidates =
                    candidate_distribution(logits, temperature, top_k as usize, top_p, min_p);
                draw(&candidates, uniform).unwrap_or_else(|| argmax(logits))
            }
        }
    }
}

/// A device's implementation of the decoder's operations.
pub trait Kernels: Send + Sync + 'static {
    /// A `[rows, width]` activation matrix in device memory.
    type Activations: Send;
    /// The weights of one linear layer (`[out_features, in_features]`, possibly several
    /// tensors stacked along the output, such as fused Q, K and V).
    type Linear: Send + Sync;
    /// A weight vector: a norm's gain, a bias.
    type Vector: Send + Sync;
    /// RoPE's inverse frequencies.
    type Rope: Send + Sync;
    type KvCache: Send;
    /// A step's [`StepMetadata`] as the device reads it.
    type Step: Send + Sync;

    /// Short name for logs and metrics (`cpu`, `cuda`).
    fn name(&self) -> &'static str;

    /// Runs `step` — one forward pass's kernel calls — where this device issues work from
    /// (the CPU's own worker pool, so its kernels split across threads without a hand-off
    /// per call). By default, on the calling thread.
    fn execute<R: Send>(&self, step: impl FnOnce() -> R + Send) -> R {
        step()
    }

    /// Places `parts` stacked along the output (all with the same `cols`) as one linear
    /// layer, in the precision this device keeps weights in.
    fn place_linear(&self, parts: &[HostTensor<'_>]) -> Result<Self::Linear, BackendError>;
    fn place_vector(&self, vector: &HostTensor<'_>) -> Result<Self::Vector, BackendError>;
    fn place_rope(&self, inv_freq: &[f32]) -> Result<Self::Rope, BackendError>;
    /// Device bytes a placed linear layer takes.
    fn linear_bytes(&self, linear: &Self::Linear) -> usize;
    fn new_kv_cache(&self, layout: &KvCacheLayout) -> Result<Self::KvCache, BackendError>;

    fn upload_step(&self, step: &StepMetadata) -> Result<Self::Step, BackendError>;
    fn activations(&self, rows: usize, width: usize) -> Result<Self::Activations, BackendError>;
    /// A `[rows, width]` activation matrix holding `values` (row-major): how tests and
    /// tools hand a kernel its input.
    fn activations_from(
        &self,
        rows: usize,
        width: usize,
        values: &[f32],
    ) -> Result<Self::Activations, BackendError>;
    /// The values of `x`, row-major, on the host.
    fn read(&self, x: &Self::Activations) -> Result<Vec<f32>, BackendError>;

    /// `out[t] = table[token_ids[t]]` for every token of the step.
    fn embedding(
        &self,
        table: &Self::Linear,
        step: &Self::Step,
        out: &mut Self::Activations,
    ) -> Result<(), BackendError>;
    /// `out = x / rms(x) * weight`, row by row.
    fn rms_norm(
        &self,
        x: &Self::Activations,
        weight: &Self::Vector,
        eps: f32,
        out: &mut Self::Activations,
    ) -> Result<(), BackendError>;
    /// `out = x · wᵀ`.
    fn linear(
        &self,
        x: &Self::Activations,
        w: &Self::Linear,
        out: &mut Self::Activations,
    ) -> Result<(), BackendError>;
    /// `residual += x · wᵀ`: a projection folded into the residual add.
    fn add_linear(
        &self,
        residual: &mut Self::Activations,
        x: &Self::Activations,
        w: &Self::Linear,
    ) -> Result<(), BackendError>;
    /// `x += bias` on every row.
    fn add_bias(&self, x: &mut Self::Activations, bias: &Self::Vector) -> Result<(), BackendError>;
    /// Rotates the query and key heads of each fused QKV row by its token's position, then
    /// writes its key and value heads into `layer`'s cache at the token's slot. The rotary
    /// dimensions are each head's first `2 · inv_freq.len()` (all of it, but for Phi-3's
    /// partial rotary), paired first half with second half as in Hugging Face's layout.
    fn rope_and_cache_kv(
        &self,
        qkv: &mut Self::Activations,
        shape: &AttentionShape,
        rope: &Self::Rope,
        layer: usize,
        step: &Self::Step,
        cache: &mut Self::KvCache,
    ) -> Result<(), BackendError>;
    /// Causal attention of each token's query heads over its sequence's cached keys and
    /// values up to its own position (read through the block table): `out` is
    /// `[tokens, num_heads * head_dim]`.
    fn paged_attention(
        &self,
        qkv: &Self::Activations,
        shape: &AttentionShape,
        layer: usize,
        step: &Self::Step,
        cache: &Self::KvCache,
        out: &mut Self::Activations,
    ) -> Result<(), BackendError>;
    /// A gated MLP's activation: `out = act(gate) * up` where each row of `gate_up` is
    /// `[gate | up]`.
    fn gated_activation(
        &self,
        gate_up: &Self::Activations,
        activation: GatedActivation,
        out: &mut Self::Activations,
    ) -> Result<(), BackendError>;
    /// `x *= factor` (Gemma's embedding scale).
    fn scale(&self, x: &mut Self::Activations, factor: f32) -> Result<(), BackendError>;
    /// `x = cap · tanh(x / cap)` (Gemma 2's final logits).
    fn soft_cap(&self, x: &mut Self::Activations, cap: f32) -> Result<(), BackendError>;
    /// `residual += x`.
    fn add(
        &self,
        residual: &mut Self::Activations,
        x: &Self::Activations,
    ) -> Result<(), BackendError>;
    /// RMS-normalises each query head of a fused QKV row by `q_weight` and each key head
    /// by `k_weight` (`head_dim` values each), leaving the value heads alone (Gemma 3).
    fn head_rms_norm(
        &self,
        qkv: &mut Self::Activations,
        shape: &AttentionShape,
        q_weight: &Self::Vector,
        k_weight: &Self::Vector,
        eps: f32,
    ) -> Result<(), BackendError>;
    /// `out[i] = x[rows[i]]`: the tokens routed to one expert, gathered for its matmul.
    fn gather_rows(
        &self,
        x: &Self::Activations,
        rows: &[u32],
        out: &mut Self::Activations,
    ) -> Result<(), BackendError>;
    /// `out[rows[i]] += weights[i] · x[i]`: an expert's outputs back to their tokens.
    fn scatter_add_rows(
        &self,
        out: &mut Self::Activations,
        x: &Self::Activations,
        rows: &[u32],
        weights: &[f32],
    ) -> Result<(), BackendError>;
    /// `out[i] = x[logits_rows[i]]`: the rows whose logits the step returns.
    fn gather_logits_rows(
        &self,
        x: &Self::Activations,
        step: &Self::Step,
        out: &mut Self::Activations,
    ) -> Result<(), BackendError>;
    /// Copies whole blocks, every layer (copy-on-write of shared blocks).
    fn copy_blocks(
        &self,
        cache: &mut Self::KvCache,
        copies: &[(BlockId, BlockId)],
    ) -> Result<(), BackendError>;
    /// One token per row of `logits` (`[picks.len(), vocab]`), each row picked as its
    /// [`TokenPick`] says. This default reads the logits to the host and picks there; a
    /// device overrides it to pick where the logits are.
    fn pick_tokens(
        &self,
        logits: &Self::Activations,
        picks: &[TokenPick],
    ) -> Result<Vec<u32>, BackendError> {
        let values = self.read(logits)?;
        if picks.is_empty() {
            return Ok(Vec::new());
        }
        if !values.len().is_multiple_of(picks.len()) {
            return Err(BackendError::Execution(format!(
                "pick_tokens: {} logits do not split into {} rows",
                values.len(),
                picks.len()
            )));
        }
        let vocab = values.len() / picks.len();
        Ok(values
            .chunks_exact(vocab.max(1))
            .zip(picks)
            .map(|(row, pick)| pick.pick(row))
            .collect())
    }
}
