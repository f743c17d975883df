//! Gemma 3 (the text decoder, `Gemma3ForCausalLM`): Gemma 2's layer without the attention
//! soft-cap, with RMSNorm over each query and key head, and five local layers to each
//! global one. Local layers rotate with their own RoPE base (`rope_local_base_freq`,
//! 10,000) and no scaling; global layers with `rope_theta` and the configured scaling.

use super::{Architecture, ArchitectureSpec};
use crate::backend::kernels::GatedActivation;

pub(super) const SPEC: ArchitectureSpec = ArchitectureSpec {
    architecture: Architecture::Gemma3,
    name: "gemma3",
    hf_class: "Gemma3ForCausalLM",
    gguf_arch: Some("gemma3"),
    activation: GatedActivation::GeluTanh,
    scales_embeddings: true,
    norm_gain_offset: true,
    sandwich_norms: true,
    qk_norm: true,
    gguf_rotary_interleaved: false,
    local_layers: Some(|layer| (layer + 1) % 6 != 0),
    ..super::llama::SPEC
};

/// RoPE's base frequency of the local layers when the config does not give one.
pub const LOCAL_ROPE_THETA: f32 = 10_000.0;
