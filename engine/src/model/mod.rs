//! Models: finding one on disk (a Hugging Face directory or a GGUF file), its shape,
//! tokenizer and tensors, and the architectures themselves, each written once over the
//! kernel layer (crate::backend::kernels) so every device runs the same definition.

pub mod arch;
mod config;
pub mod decoder;
mod error;
pub mod experts;
pub mod gguf;
mod loader;
mod safetensors_source;
mod tensors;
mod tokenizer;

pub use config::{Architecture, Experts, ModelConfig, RopeScaling};
pub use decoder::Decoder;
pub use error::ModelError;
pub use loader::LoadedModel;
pub use tensors::{TensorNaming, TensorSource};
pub use tokenizer::Tokenizer;
