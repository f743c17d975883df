//! ModelFleet's inference engine.
//!
//! Requests enter through a channel; the scheduler plans a step over the paged KV cache; a
//! backend executes the step's forward pass; the sampler turns logits into tokens; outputs
//! leave through per-request channels. Each of these is its own module.

pub mod backend;
pub mod detokenizer;
pub mod engine;
pub mod kv_cache;
pub mod model;
pub mod sampling;
pub mod scheduler;
pub mod server;
pub mod weights;
