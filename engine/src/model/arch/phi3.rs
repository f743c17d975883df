//! Phi-3 (and Phi-3.5/Phi-4-mini): Llama's decoder with Q, K and V stored as one
//! projection and gate and up as another, RoPE over part of each head when
//! `partial_rotary_factor` < 1, and a sliding window when `config.json` sets one.

use super::{Architecture, ArchitectureSpec};
use crate::backend::kernels::GatedActivation;

pub(super) const SPEC: ArchitectureSpec = ArchitectureSpec {
    architecture: Architecture::Phi3,
    name: "phi3",
    hf_class: "Phi3ForCausalLM",
    gguf_arch: Some("phi3"),
    activation: GatedActivation::Silu,
    qkv_bias_by_default: false,
    scales_embeddings: false,
    norm_gain_offset: false,
    sandwich_norms: false,
    qk_norm: false,
    fused_projections: true,
    gguf_rotary_interleaved: false,
    local_layers: None,
};
