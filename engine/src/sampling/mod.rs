//! Turning one row of logits into the next token of a request.
//!
//! [`SamplingParams`] are validated once, when the request arrives; after that a
//! [`Sampler`] owns the request's random stream (seeded, so the same seed gives the same
//! output) and applies the same pipeline every step: penalties, then temperature, top-k,
//! top-p and min-p, then a draw. The filters are pure functions in [`logits`].

mod grammar;
pub mod logits;
mod logprobs;
mod params;
mod sampler;

pub use grammar::{CompiledGrammar, Grammar};
pub use logprobs::{PositionLogprobs, TokenLogprob, position_logprobs};
pub use params::{MAX_CHOICES, MAX_LOGPROBS, SamplingError, SamplingParams};
pub use sampler::{SampledToken, Sampler};
