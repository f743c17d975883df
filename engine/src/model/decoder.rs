//! The decoder-only transformer, written once over the kernel layer so every device runs
//! this definition, and every architecture (crate::model::arch) is a set of switches on it.
//! Read it top to bottom:
//!
//! ```text
//! h = embed_tokens[tokens]                          × √hidden (Gemma)
//! for each decoder layer:
//!     x = rms_norm(h)
//!     a = attention(rope(q(x)), rope(k(x)), v(x))   grouped-query, paged KV cache; per layer
//!                                                   a sliding window, a score soft-cap,
//!                                                   per-head norms of q and k (Gemma 3)
//!     h = h + o_proj(a)                             Gemma: h + rms_norm(o_proj(a))
//!     x = rms_norm(h)
//!     h = h + down_proj(act(gate_proj(x)) * up_proj(x))   SwiGLU or GeGLU; Gemma normalises
//!                                                   the MLP's output too; Mixtral: a sparse
//!                                                   mixture of such MLPs (crate::model::experts)
//! logits = lm_head(rms_norm(h))                     only the rows that need them; soft-capped
//!                                                   (Gemma 2)
//! ```
//!
//! Q, K and V are one fused projection, and so are gate and up: one pass over the input for
//! each. The tensor names of Hugging Face checkpoints and of llama.cpp's GGUF files are at
//! the end of the file, with GGUF's rotary quirk.

use super::arch::ArchitectureSpec;
use super::experts::route_top_k;
use super::{ModelConfig, ModelError, TensorNaming, TensorSource};
use crate::backend::BackendError;
use crate::backend::KvCacheShape;
use crate::backend::kernels::{AttentionShape, Kernels, KvCacheDtype, KvCacheLayout};
use crate::backend::step::StepMetadata;
use crate::weights::HostTensor;

/// A decoder placed on a device.
pub struct Decoder<K: Kernels> {
    config: ModelConfig,
    spec: &'static ArchitectureSpec,
    embed_tokens: K::Linear,
    layers: Vec<DecoderLayer<K>>,
    norm: K::Vector,
    /// `None` when the output projection is tied to `embed_tokens`.
    lm_head: Option<K::Linear>,
    /// RoPE of global layers, then of local layers when they rotate differently.
    ropes: Vec<K::Rope>,
}

struct DecoderLayer<K: Kernels> {
    index: usize,
    attention: AttentionShape,
    /// Index into [`Decoder::ropes`].
    rope: usize,
    input_layernorm: K::Vector,
    self_attn: Attention<K>,
    /// Gemma's norm of the attention's output, before the residual add.
    post_attention_norm: Option<K::Vector>,
    pre_mlp_norm: K::Vector,
    mlp: Mlp<K>,
    /// Gemma's norm of the MLP's output, before the residual add.
    post_mlp_norm: Option<K::Vector>,
}

struct Attention<K: Kernels> {
    /// Q, K and V stacked along the output: `[q_width + 2 * kv_width, hidden]`.
    qkv_proj: K::Linear,
    /// Qwen2's biases of Q, K and V, stacked the same way.
    qkv_bias: Option<K::Vector>,
    /// Gemma 3's RMSNorm gains of each query head and each key head.
    qk_norm: Option<(K::Vector, K::Vector)>,
    o_proj: K::Linear,
}

enum Mlp<K: Kernels> {
    Dense(GatedMlp<K>),
    Sparse(SparseMlp<K>),
}

/// A router over experts, each a gated MLP of its own.
struct SparseMlp<K: Kernels> {
    router: K::Linear,
    experts: Vec<GatedMlp<K>>,
    per_token: usize,
}

struct GatedMlp<K: Kernels> {
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
    /// A projection's output on its way through a post-norm (Gemma) or the experts' sum.
    projected: Option<K::Activations>,
}

/// What every layer of one step reads besides its own weights.
struct Step<'a, K: Kernels> {
    step: &'a K::Step,
    tokens: usize,
    ropes: &'a [K::Rope],
    config: &'a ModelConfig,
}

impl<K: Kernels> Decoder<K> {
    /// Places the model's tensors on `kernels`' device.
    pub fn load(
        config: &ModelConfig,
        tensors: &dyn TensorSource,
        kernels: &K,
    ) -> Result<Self, ModelError> {
        let loader = Loader {
            config,
            spec: config.architecture.spec(),
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
        let mut ropes = vec![
            kernels
                .place_rope(&config.rope_inv_freq())
                .map_err(|source| loader.placement("rope", source))?,
        ];
        if let Some(local) = config.local_rope_inv_freq() {
            ropes.push(
                kernels
                    .place_rope(&local)
                    .map_err(|source| loader.placement("local rope", source))?,
            );
        }
        Ok(Self {
            config: config.clone(),
            spec: loader.spec,
            embed_tokens: loader.linear(&[loader.matrix(Weight::Embed, 0)?])?,
            layers,
            norm: loader.vector(Weight::FinalNorm, 0)?,
            lm_head,
            ropes,
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
        let mlp_bytes = |mlp: &GatedMlp<K>| {
            kernels.linear_bytes(&mlp.gate_up_proj) + kernels.linear_bytes(&mlp.down_proj)
        };
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                let mlp = match &l.mlp {
                    Mlp::Dense(mlp) => mlp_bytes(mlp),
                    Mlp::Sparse(SparseMlp {
                        router, experts, ..
                    }) => {
                        kernels.linear_bytes(router) + experts.iter().map(mlp_bytes).sum::<usize>()
                    }
                };
                kernels.linear_bytes(&l.self_attn.qkv_proj)
                    + kernels.linear_bytes(&l.self_attn.o_proj)
                    + mlp
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
        let mlp = 3 * c.hidden_size * c.intermediate_size;
        let mlp = match c.experts {
            Some(experts) => experts.count * (mlp + c.hidden_size),
            None => mlp,
        };
        let layer = c.hidden_size * (2 * q + 2 * kv) + mlp;
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
        if self.spec.scales_embeddings {
            kernels.scale(&mut h, (c.hidden_size as f32).sqrt())?;
        }

        let attention = &self.layers[0].attention;
        let needs_projected = self.spec.sandwich_norms || c.experts.is_some();
        let mut ws = Workspace {
            normed: kernels.activations(tokens, c.hidden_size)?,
            qkv: kernels.activations(tokens, attention.qkv_width())?,
            attn: kernels.activations(tokens, attention.q_width())?,
            gate_up: kernels.activations(tokens, 2 * c.intermediate_size)?,
            act: kernels.activations(tokens, c.intermediate_size)?,
            projected: needs_projected
                .then(|| kernels.activations(tokens, c.hidden_size))
                .transpose()?,
        };
        let ctx = Step {
            step,
            tokens,
            ropes: &self.ropes,
            config: c,
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
        if let Some(cap) = c.final_logit_softcap {
            kernels.soft_cap(&mut logits, cap)?;
        }
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
        let eps = ctx.config.rms_norm_eps;
        // h = h + o_proj(self_attn(input_layernorm(h)))
        k.rms_norm(h, &self.input_layernorm, eps, &mut ws.normed)?;
        self.attend(k, ws, ctx, cache)?;
        let post_norm = self.post_attention_norm.as_ref();
        let (projected, normed) = (&mut ws.projected, &mut ws.normed);
        residual_add(
            k,
            h,
            &ws.attn,
            &self.self_attn.o_proj,
            post_norm,
            projected,
            normed,
            eps,
        )?;

        // h = h + down_proj(mlp(pre_mlp_norm(h)))
        k.rms_norm(h, &self.pre_mlp_norm, eps, &mut ws.normed)?;
        match &self.mlp {
            Mlp::Dense(mlp) => {
                mlp.activate(k, &ws.normed, ctx.config, &mut ws.gate_up, &mut ws.act)?;
                let post_norm = self.post_mlp_norm.as_ref();
                let (projected, normed) = (&mut ws.projected, &mut ws.normed);
                residual_add(
                    k,
                    h,
                    &ws.act,
                    &mlp.down_proj,
                    post_norm,
                    projected,
                    normed,
                    eps,
                )
            }
            Mlp::Sparse(moe) => {
                let sum = ws
                    .projected
                    .as_mut()
                    .expect("the experts' sum has a buffer");
                moe.forward(k, ctx.tokens, &ws.normed, ctx.config, sum)?;
                k.add(h, sum)
            }
        }
    }

    /// `ws.attn` = attention over the cache of `ws.normed`'s queries, after this step's keys
    /// and values are written to it.
    fn attend(
        &self,
        k: &K,
        ws: &mut Workspace<K>,
        ctx: &Step<'_, K>,
        cache: &mut K::KvCache,
    ) -> Result<(), BackendError> {
        let attn = &self.self_attn;
        k.linear(&ws.normed, &attn.qkv_proj, &mut ws.qkv)?;
        if let Some(bias) = &attn.qkv_bias {
            k.add_bias(&mut ws.qkv, bias)?;
        }
        if let Some((q_norm, k_norm)) = &attn.qk_norm {
            k.head_rms_norm(
                &mut ws.qkv,
                &self.attention,
                q_norm,
                k_norm,
                ctx.config.rms_norm_eps,
            )?;
        }
        let rope = &ctx.ropes[self.rope];
        k.rope_and_cache_kv(
            &mut ws.qkv,
            &self.attention,
            rope,
            self.index,
            ctx.step,
            cache,
        )?;
        k.paged_attention(
            &ws.qkv,
            &self.attention,
            self.index,
            ctx.step,
            cache,
            &mut ws.attn,
        )
    }
}

/// `h += x · wᵀ`, through `post_norm` first when the layer has one (into `projected`, then
/// `normed`).
#[allow(clippy::too_many_arguments)]
fn residual_add<K: Kernels>(
    k: &K,
    h: &mut K::Activations,
    x: &K::Activations,
    w: &K::Linear,
    post_norm: Option<&K::Vector>,
    projected: &mut Option<K::Activations>,
    normed: &mut K::Activations,
    eps: f32,
) -> Result<(), BackendError> {
    let Some(norm) = post_norm else {
        return k.add_linear(h, x, w);
    };
    let projected = projected.as_mut().expect("post-norms have a buffer");
    k.linear(x, w, projected)?;
    k.rms_norm(projected, norm, eps, normed)?;
    k.add(h, normed)
}

impl<K: Kernels> GatedMlp<K> {
    /// `act` = act(gate_proj(x)) * up_proj(x), through `gate_up` (`[rows, 2 * intermediate]`).
    fn activate(
        &self,
        k: &K,
        x: &K::Activations,
        config: &ModelConfig,
        gate_up: &mut K::Activations,
        act: &mut K::Activations,
    ) -> Result<(), BackendError> {
        k.linear(x, &self.gate_up_proj, gate_up)?;
        k.gated_activation(gate_up, config.activation, act)
    }
}

impl<K: Kernels> SparseMlp<K> {
    /// `out` = Σ over each token's chosen experts of weight · expert(x): the router's
    /// logits are read back to pick the experts, then each expert runs once over all of its
    /// tokens.
    fn forward(
        &self,
        k: &K,
        tokens: usize,
        x: &K::Activations,
        config: &ModelConfig,
        out: &mut K::Activations,
    ) -> Result<(), BackendError> {
        let (hidden, intermediate) = (config.hidden_size, config.intermediate_size);
        let mut router_logits = k.activations(tokens, self.experts.len())?;
        k.linear(x, &self.router, &mut router_logits)?;
        let routes = route_top_k(&k.read(&router_logits)?, self.experts.len(), self.per_token);
        *out = k.activations_from(tokens, hidden, &vec![0.0; tokens * hidden])?;
        for (expert, route) in self.experts.iter().zip(&routes) {
            let n = route.rows.len();
            if n == 0 {
                continue;
            }
            let mut gathered = k.activations(n, hidden)?;
            k.gather_rows(x, &route.rows, &mut gathered)?;
            let mut gate_up = k.activations(n, 2 * intermediate)?;
            let mut act = k.activations(n, intermediate)?;
            expert.activate(k, &gathered, config, &mut gate_up, &mut act)?;
            let mut y = k.activations(n, hidden)?;
            k.linear(&act, &expert.down_proj, &mut y)?;
            k.scatter_add_rows(out, &y, &route.rows, &route.weights)?;
        }
        Ok(())
    }
}

/// Reads the tensors of one model from its file and places them on the device.
struct Loader<'a, K: Kernels> {
    config: &'a ModelConfig,
    spec: &'static ArchitectureSpec,
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
        let qkv_proj = if self.spec.fused_projections {
            self.linear(&[self.matrix(Weight::Qkv, index)?])?
        } else {
            self.linear(&[
                self.matrix(Weight::Q, index)?,
                self.matrix(Weight::K, index)?,
                self.matrix(Weight::V, index)?,
            ])?
        };
        let qk_norm = match self.spec.qk_norm {
            true => Some((
                self.vector(Weight::QNorm, index)?,
                self.vector(Weight::KNorm, index)?,
            )),
            false => None,
        };
        let sandwich = |weight| -> Result<Option<K::Vector>, ModelError> {
            match self.spec.sandwich_norms {
                true => Ok(Some(self.vector(weight, index)?)),
                false => Ok(None),
            }
        };
        let local = c.local_layers[index];
        Ok(DecoderLayer {
            index,
            attention: AttentionShape {
                num_heads: c.num_heads,
                num_kv_heads: c.num_kv_heads,
                head_dim: c.head_dim,
                scale: c.attention_scale(),
                sliding_window: c.sliding_window.filter(|_| local),
                logit_softcap: c.attn_logit_softcap,
            },
            rope: usize::from(local && c.local_rope_theta.is_some()),
            input_layernorm: self.vector(Weight::AttnNorm, index)?,
            self_attn: Attention {
                qkv_proj,
                qkv_bias,
                qk_norm,
                o_proj: self.linear(&[self.matrix(Weight::O, index)?])?,
            },
            post_attention_norm: sandwich(Weight::PostAttnNorm)?,
            pre_mlp_norm: self.vector(Weight::MlpNorm, index)?,
            mlp: self.mlp(index)?,
            post_mlp_norm: sandwich(Weight::PostMlpNorm)?,
        })
    }

    fn mlp(&self, layer: usize) -> Result<Mlp<K>, ModelError> {
        let Some(experts) = self.config.experts else {
            let gate_up_proj = if self.spec.fused_projections {
                self.linear(&[self.matrix(Weight::GateUp, layer)?])?
            } else {
                self.linear(&[
                    self.matrix(Weight::Gate, layer)?,
                    self.matrix(Weight::Up, layer)?,
                ])?
            };
            return Ok(Mlp::Dense(GatedMlp {
                gate_up_proj,
                down_proj: self.linear(&[self.matrix(Weight::Down, layer)?])?,
            }));
        };
        let expert = |index: usize| -> Result<GatedMlp<K>, ModelError> {
            Ok(GatedMlp {
                gate_up_proj: self.linear(&[
                    self.expert_matrix(Weight::ExpertGate, layer, index)?,
                    self.expert_matrix(Weight::ExpertUp, layer, index)?,
                ])?,
                down_proj: self.linear(&[self.expert_matrix(
                    Weight::ExpertDown,
                    layer,
                    index,
                )?])?,
            })
        };
        Ok(Mlp::Sparse(SparseMlp {
            router: self.linear(&[self.matrix(Weight::Router, layer)?])?,
            experts: (0..experts.count).map(expert).collect::<Result<_, _>>()?,
            per_token: experts.per_token,
        }))
    }

    fn name(&self, weight: Weight, layer: usize) -> String {
        tensor_name(self.tensors.naming(), self.spec, weight, layer)
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

    /// One expert's matrix: a tensor of its own in Hugging Face checkpoints, a slice of
    /// the layer's stacked experts in GGUF files.
    fn expert_matrix(
        &self,
        weight: Weight,
        layer: usize,
        expert: usize,
    ) -> Result<HostTensor<'_>, ModelError> {
        let (rows, cols) = weight.shape(self.config);
        match self.tensors.naming() {
            TensorNaming::HuggingFace => {
                let name = hf_expert_name(weight, layer, expert);
                self.tensors.matrix(&name, rows, cols)
            }
            TensorNaming::Gguf => {
                let name = self.name(weight, layer);
                let count = self.config.experts.map_or(1, |e| e.count);
                let stacked = self.tensors.matrix(&name, rows * count, cols)?;
                Ok(stacked
                    .slice_rows(format!("{name}[{expert}]"), expert * rows, rows)
                    .into_owned())
            }
        }
    }

    fn vector(&self, weight: Weight, layer: usize) -> Result<K::Vector, ModelError> {
        let tensor = self
            .tensors
            .vector(&self.name(weight, layer), weight.shape(self.config).1)?;
        if weight.is_norm()
            && self.spec.norm_gain_offset
            && self.tensors.naming() == TensorNaming::HuggingFace
        {
            let gains: Vec<f32> = tensor.to_f32().iter().map(|w| 1.0 + w).collect();
            return self.place_vector(&HostTensor::from_f32(tensor.name(), 1, gains.len(), &gains));
        }
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
        let interleaved =
            self.tensors.naming() == TensorNaming::Gguf && self.spec.gguf_rotary_interleaved;
        match weight {
            Weight::Q | Weight::QBias if interleaved => Some(self.config.num_heads),
            Weight::K | Weight::KBias if interleaved => Some(self.config.num_kv_heads),
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

/// The tensors of a decoder, named independently of the file format.
#[derive(Debug, Clone, Copy)]
enum Weight {
    Embed,
    FinalNorm,
    LmHead,
    AttnNorm,
    Q,
    K,
    V,
    /// Phi-3's fused Q, K and V.
    Qkv,
    QBias,
    KBias,
    VBias,
    QNorm,
    KNorm,
    O,
    PostAttnNorm,
    MlpNorm,
    Gate,
    Up,
    /// Phi-3's fused gate and up.
    GateUp,
    Down,
    PostMlpNorm,
    Router,
    ExpertGate,
    ExpertUp,
    ExpertDown,
}

impl Weight {
    /// `[rows, cols]` of the tensor (vectors are `[1, len]`; one expert's matrices).
    fn shape(self, c: &ModelConfig) -> (usize, usize) {
        let (h, q, kv, i) = (
            c.hidden_size,
            c.num_heads * c.head_dim,
            c.num_kv_heads * c.head_dim,
            c.intermediate_size,
        );
        match self {
            Self::Embed | Self::LmHead => (c.vocab_size, h),
            Self::FinalNorm
            | Self::AttnNorm
            | Self::MlpNorm
            | Self::PostAttnNorm
            | Self::PostMlpNorm => (1, h),
            Self::Q => (q, h),
            Self::K | Self::V => (kv, h),
            Self::Qkv => (q + 2 * kv, h),
            Self::QBias => (1, q),
            Self::KBias | Self::VBias => (1, kv),
            Self::QNorm | Self::KNorm => (1, c.head_dim),
            Self::O => (h, q),
            Self::Gate | Self::Up | Self::ExpertGate | Self::ExpertUp => (i, h),
            Self::GateUp => (2 * i, h),
            Self::Down | Self::ExpertDown => (h, i),
            Self::Router => (c.experts.map_or(0, |e| e.count), h),
        }
    }

    fn is_norm(self) -> bool {
        matches!(
            self,
            Self::FinalNorm
                | Self::AttnNorm
                | Self::MlpNorm
                | Self::PostAttnNorm
                | Self::PostMlpNorm
                | Self::QNorm
                | Self::KNorm
        )
    }
}

/// Hugging Face's and llama.cpp's names for each tensor, side by side. Gemma's four norms a
/// layer: `input_layernorm`, `post_attention_layernorm` (of the attention's output),
/// `pre_feedforward_layernorm`, `post_feedforward_layernorm`; elsewhere
/// `post_attention_layernorm` is the norm before the MLP.
fn tensor_name(
    naming: TensorNaming,
    spec: &ArchitectureSpec,
    weight: Weight,
    layer: usize,
) -> String {
    let (hf, gguf) = match weight {
        Weight::Embed => return pick(naming, "model.embed_tokens.weight", "token_embd.weight"),
        Weight::FinalNorm => return pick(naming, "model.norm.weight", "output_norm.weight"),
        Weight::LmHead => return pick(naming, "lm_head.weight", "output.weight"),
        Weight::AttnNorm => ("input_layernorm.weight", "attn_norm.weight"),
        Weight::Q => ("self_attn.q_proj.weight", "attn_q.weight"),
        Weight::K => ("self_attn.k_proj.weight", "attn_k.weight"),
        Weight::V => ("self_attn.v_proj.weight", "attn_v.weight"),
        Weight::Qkv => ("self_attn.qkv_proj.weight", "attn_qkv.weight"),
        Weight::QBias => ("self_attn.q_proj.bias", "attn_q.bias"),
        Weight::KBias => ("self_attn.k_proj.bias", "attn_k.bias"),
        Weight::VBias => ("self_attn.v_proj.bias", "attn_v.bias"),
        Weight::QNorm => ("self_attn.q_norm.weight", "attn_q_norm.weight"),
        Weight::KNorm => ("self_attn.k_norm.weight", "attn_k_norm.weight"),
        Weight::O => ("self_attn.o_proj.weight", "attn_output.weight"),
        Weight::PostAttnNorm => (
            "post_attention_layernorm.weight",
            "post_attention_norm.weight",
        ),
        Weight::MlpNorm if spec.sandwich_norms => {
            ("pre_feedforward_layernorm.weight", "ffn_norm.weight")
        }
        Weight::MlpNorm => ("post_attention_layernorm.weight", "ffn_norm.weight"),
        Weight::Gate => ("mlp.gate_proj.weight", "ffn_gate.weight"),
        Weight::Up => ("mlp.up_proj.weight", "ffn_up.weight"),
        Weight::GateUp => ("mlp.gate_up_proj.weight", "ffn_up.weight"),
        Weight::Down => ("mlp.down_proj.weight", "ffn_down.weight"),
        Weight::PostMlpNorm => ("post_feedforward_layernorm.weight", "post_ffw_norm.weight"),
        Weight::Router => ("block_sparse_moe.gate.weight", "ffn_gate_inp.weight"),
        // Per expert in Hugging Face checkpoints: see `hf_expert_name`.
        Weight::ExpertGate => ("block_sparse_moe.experts.w1.weight", "ffn_gate_exps.weight"),
        Weight::ExpertUp => ("block_sparse_moe.experts.w3.weight", "ffn_up_exps.weight"),
        Weight::ExpertDown => ("block_sparse_moe.experts.w2.weight", "ffn_down_exps.weight"),
    };
    match naming {
        TensorNaming::HuggingFace => format!("model.layers.{layer}.{hf}"),
        TensorNaming::Gguf => format!("blk.{layer}.{gguf}"),
    }
}

/// Mixtral's name in Hugging Face checkpoints for one expert's matrix (`w1` gate, `w3` up,
/// `w2` down).
fn hf_expert_name(weight: Weight, layer: usize, expert: usize) -> String {
    let matrix = match weight {
        Weight::ExpertGate => "w1",
        Weight::ExpertUp => "w3",
        _ => "w2",
    };
    format!("model.layers.{layer}.block_sparse_moe.experts.{expert}.{matrix}.weight")
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
    use super::super::Architecture;
    use super::*;

    const LLAMA: &ArchitectureSpec = Architecture::Llama.spec();

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
            let hf = tensor_name(TensorNaming::HuggingFace, LLAMA, weight, 3);
            let gguf = tensor_name(TensorNaming::Gguf, LLAMA, weight, 3);
            assert!(hf.ends_with(".weight") && gguf.ends_with(".weight"));
        }
        assert_eq!(
            tensor_name(TensorNaming::Gguf, LLAMA, Weight::Gate, 2),
            "blk.2.ffn_gate.weight"
        );
        assert_eq!(
            tensor_name(TensorNaming::HuggingFace, LLAMA, Weight::O, 0),
            "model.layers.0.self_attn.o_proj.weight"
        );
    }

    #[test]
    fn gemma_names_its_four_norms_apart() {
        let gemma = Architecture::Gemma2.spec();
        let hf = |w| tensor_name(TensorNaming::HuggingFace, gemma, w, 1);
        assert_eq!(
            hf(Weight::MlpNorm),
            "model.layers.1.pre_feedforward_layernorm.weight"
        );
        assert_eq!(
            hf(Weight::PostAttnNorm),
            "model.layers.1.post_attention_layernorm.weight"
        );
        assert_eq!(
            hf_expert_name(Weight::ExpertUp, 0, 3),
            "model.layers.0.block_sparse_moe.experts.3.w3.weight"
        );
    }
}
