//! Phi-3 (and Phi-3.5/Phi-4-mini): Llama's decoder with Q, K and V stored as one
//! projection and gate and up as another, RoPE over part of each head when
//! `partial_rotary_factor` < 1, and a sliding window when `config.json` sets one.

use super::{Architecture, ArchitectureSpec};

pub(super) const SPEC: ArchitectureSpec = ArchitectureSpec {
    architecture: Architecture::Phi3,
    name: "phi3",
    hf_class: "Phi3ForCausalLM",
    gguf_arch: Some("phi3"),
    fused_projections: true,
    gguf_rotary_interleaved: false,
    ..super::llama::SPEC
};
