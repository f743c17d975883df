//! Mixtral: Mistral's decoder with a sparse mixture of experts in place of the MLP. A
//! router scores `num_local_experts` SwiGLU experts per token; the top
//! `num_experts_per_tok` run, their outputs weighted by the router's softmax renormalised
//! over the chosen ones (see [`crate::model::experts`]). llama.cpp writes it as `llama`
//! with the experts stacked into 3-D tensors.

use super::{Architecture, ArchitectureSpec};

pub(super) const SPEC: ArchitectureSpec = ArchitectureSpec {
    architecture: Architecture::Mixtral,
    name: "mixtral",
    hf_class: "MixtralForCausalLM",
    gguf_arch: None,
    ..super::llama::SPEC
};
