//! Llama 2 and 3 (and the many models shaped like them: SmolLM, TinyLlama, DeepSeek's
//! Llama-architecture releases): the plain decoder, SwiGLU, RoPE with Llama 3's or linear
//! scaling (in [`crate::model::ModelConfig::rope_inv_freq`]).

use super::{Architecture, ArchitectureSpec};
use crate::backend::kernels::GatedActivation;

/// The plain decoder every other architecture's spec starts from.
pub(super) const SPEC: ArchitectureSpec = ArchitectureSpec {
    architecture: Architecture::Llama,
    name: "llama",
    hf_class: "LlamaForCausalLM",
    gguf_arch: None,
    activation: GatedActivation::Silu,
    qkv_bias_by_default: false,
    scales_embeddings: false,
    norm_gain_offset: false,
    sandwich_norms: false,
    qk_norm: false,
    fused_projections: false,
    gguf_rotary_interleaved: true,
    local_layers: None,
};
