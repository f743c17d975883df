//! Gemma 2: GeGLU, embeddings scaled by `√hidden_size`, RMSNorm gains stored as `w - 1`,
//! a norm before and after both attention and MLP, attention scores and final logits
//! soft-capped (`cap · tanh(x / cap)`), `query_pre_attn_scalar` in place of `head_dim` in
//! the attention scale, and every other layer (the even ones) local: a sliding window.

use super::{Architecture, ArchitectureSpec};
use crate::backend::kernels::GatedActivation;

pub(super) const SPEC: ArchitectureSpec = ArchitectureSpec {
    architecture: Architecture::Gemma2,
    name: "gemma2",
    hf_class: "Gemma2ForCausalLM",
    gguf_arch: Some("gemma2"),
    activation: GatedActivation::GeluTanh,
    scales_embeddings: true,
    norm_gain_offset: true,
    sandwich_norms: true,
    gguf_rotary_interleaved: false,
    local_layers: Some(|layer| layer % 2 == 0),
    ..super::llama::SPEC
};
