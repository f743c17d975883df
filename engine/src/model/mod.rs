//! Llama-family decoder models: configuration, weights and tokenizer, loaded from a Hugging
//! Face directory (`config.json`, safetensors, `tokenizer.json`) or from one GGUF file.
//!
//! Every weight is turned into f32 at load (GGUF's quantised blocks are dequantised), so one
//! set of CPU kernels serves every source format. That costs memory (4 bytes a parameter)
//! but keeps the arithmetic identical across formats, which is what golden tests need.

mod config;
mod error;
pub mod gguf;
mod loader;
mod safetensors_source;
mod tokenizer;
mod weights;

pub use config::{Architecture, ModelConfig, RopeScaling};
pub use error::ModelError;
pub use loader::LoadedModel;
pub use tokenizer::Tokenizer;
pub use weights::{LayerWeights, Matrix, ModelWeights};
