//! Mistral: Llama's decoder, every layer attending through a sliding window when
//! `config.json` sets `sliding_window` (Mistral 7B v0.1: 4096; later releases: none).
//! llama.cpp writes Mistral GGUF files as `llama`, without the window.

use super::{Architecture, ArchitectureSpec};

pub(super) const SPEC: ArchitectureSpec = ArchitectureSpec {
    architecture: Architecture::Mistral,
    name: "mistral",
    hf_class: "MistralForCausalLM",
    gguf_arch: None,
    ..super::llama::SPEC
};
