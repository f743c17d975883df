//! Weights as files store them, before any device sees them.
//!
//! A [`HostTensor`] is a matrix (or vector) in one of the [`WeightFormat`]s the engine reads:
//! float (f32, f16, bf16) or one of GGML's block-quantised formats (Q8_0, Q4_0, Q4_1 and the
//! K-quants Q4_K, Q5_K, Q6_K). Quantisation runs along each row: a row is a whole number of
//! blocks, so rows can be selected, reordered and stacked without touching their bytes.
//! [`dequantize`] holds the reference decoding of every format, the truth each device's
//! kernels are tested against.

pub mod dequantize;
mod format;
mod host;

pub use format::{UnknownFormat, WeightFormat};
pub use host::HostTensor;
