//! Models: finding one on disk (a Hugging Face directory or a GGUF file), its shape,
//! tokenizer and tensors, and the architectures themselves, each written once over the
//! kernel layer (crate::backend::kernels) so every device runs the same definition.

mod config;
mod error;
pub mod gguf;
pub mod llama;
mod loader;
mod safetensors_source;
mod tensors;
mod tokenizer;

pub use config::{Architecture, ModelConfig, RopeScaling};
pub use error::ModelError;
pub use llama::Llama;
pub use loader::LoadedModel;
pub use tensors::{TensorNaming, TensorSource};
pub use tokenizer::Tokenizer;
