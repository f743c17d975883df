//! Mistral: Llama's decoder, every layer attending through a sliding window when
//! `config.json` sets `sliding_window` (Mistral 7B v0.1: 4096; later releases: none).
//! llama.cpp writes Mistral GGUF files as `llama`, without the window.

use super::{Architecture, ArchitectureSpec};
use crate::backend::kernels::GatedActivation;

pub(super) const SPEC: ArchitectureSpec = ArchitectureSpec {
    architecture: Architecture::Mistral,
    name: "mistral",
    hf_class: "MistralForCausalLM",
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
