//! Qwen2 and Qwen2.5: Llama's decoder with biases on Q, K and V. llama.cpp's converter
//! leaves its Q and K rows in Hugging Face's order.

use super::{Architecture, ArchitectureSpec};

pub(super) const SPEC: ArchitectureSpec = ArchitectureSpec {
    architecture: Architecture::Qwen2,
    name: "qwen2",
    hf_class: "Qwen2ForCausalLM",
    gguf_arch: Some("qwen2"),
    qkv_bias_by_default: true,
    gguf_rotary_interleaved: false,
    ..super::llama::SPEC
};
