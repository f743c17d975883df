//! Qwen2 and Qwen2.5: Llama's decoder with biases on Q, K and V. llama.cpp's converter
//! leaves its Q and K rows in Hugging Face's order.

use super::{Architecture, ArchitectureSpec};
use crate::backend::kernels::GatedActivation;

pub(super) const SPEC: ArchitectureSpec = ArchitectureSpec {
    architecture: Architecture::Qwen2,
    name: "qwen2",
    hf_class: "Qwen2ForCausalLM",
    gguf_arch: Some("qwen2"),
    activation: GatedActivation::Silu,
    qkv_bias_by_default: true,
    scales_embeddings: false,
    norm_gain_offset: false,
    sandwich_norms: false,
    qk_norm: false,
    fused_projections: false,
    gguf_rotary_interleaved: false,
    local_layers: None,
};
