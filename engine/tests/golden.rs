//! Golden tests: the engine against reference outputs on real models.

#[path = "golden/support.rs"]
mod support;

#[path = "golden/engine_equivalence.rs"]
mod engine_equivalence;

#[path = "golden/logits.rs"]
mod logits;

#[path = "golden/logprobs.rs"]
mod logprobs;

#[path = "golden/demo_model.rs"]
mod demo_model;

#[path = "golden/quantized_gguf.rs"]
mod quantized_gguf;

#[path = "golden/architectures.rs"]
mod architectures;
