//! The contract between a step plan and whatever executes it on hardware.
//!
//! The scheduler decides *what* runs in a step (which sequences, which tokens, which KV
//! blocks); a backend only executes that plan: it runs the model over every chunk, writes
//! the chunk's keys and values into the paged cache at the positions the block table
//! names, and returns logits for the chunks that asked for them. Backends never allocate
//! or free blocks: block accounting belongs to the KV cache manager.
//!
//! A backend is a [`runner::ModelRunner`]: the model (crate::model), written once over
//! the device-neutral [`kernels::Kernels`], running on one device's implementation of it
//! ([`cpu`], and `cuda` when built with the `cuda` feature), with the step's host-side
//! metadata ([`step`]) computed once for every device.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod kernels;
pub mod runner;
pub mod step;

use thiserror::Error;

/// Index of a physical block in the paged KV cache, shared by every layer.
pub type BlockId = u32;

/// Shape of the paged KV cache a backend owns: `num_blocks` blocks of `block_size` tokens,
/// each holding keys and values for every layer and KV head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCacheShape {
    pub num_blocks: usize,
    pub block_size: usize,
}

/// One sequence's share of a step: the tokens to run through the model now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceChunk {
    /// Tokens fed this step: a prefill chunk, or one token when decoding.
    pub token_ids: Vec<u32>,
    /// Absolute position of `token_ids[0]`; tokens before it are already in the cache.
    pub start_position: usize,
    /// Physical blocks for positions `0..start_position + token_ids.len()`; entry `i` holds
    /// positions `i * block_size .. (i + 1) * block_size`.
    pub block_table: Vec<BlockId>,
    /// Whether the logits of the chunk's last token are wanted (the chunk ends the prompt,
    /// or it is a decode step). Middle chunks of a long prompt only fill the cache.
    pub needs_logits: bool,
    /// Whether the logits of every token of the chunk are wanted, not only the last one's
    /// (a request that asked for its prompt's log-probabilities).
    pub every_token_logits: bool,
}

/// Everything one forward pass executes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardBatch {
    pub chunks: Vec<SequenceChunk>,
}

/// Logits for the chunks with `needs_logits` (one row each, or one row per token with
/// `every_token_logits`), `vocab_size` values a row, in the order those chunks appear in
/// the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    pub vocab_size: usize,
    pub values: Vec<f32>,
}

impl Logits {
    pub fn num_rows(&self) -> usize {
        self.values.len().checked_div(self.vocab_size).unwrap_or(0)
    }

    pub fn row(&self, index: usize) -> &[f32] {
        &self.values[index * self.vocab_size..(index + 1) * self.vocab_size]
    }
}

#[derive(Debug, Error)]
pub enum BackendError {
    #[error("backend '{backend}' is not available: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
    #[error("invalid step plan: {0}")]
    InvalidPlan(String),
    #[error("weights cannot be placed: {0}")]
    InvalidWeights(String),
    #[error("backend failure: {0}")]
    Execution(String),
}

/// Executes step plans for one loaded model over one paged KV cache.
pub trait Backend: Send {
    /// Short name for logs and metrics (`cpu`, `cuda`).
    fn name(&self) -> &'static str;

    /// The paged KV cache this backend allocated.
    fn kv_cache_shape(&self) -> KvCacheShape;

    /// Runs the model over every chunk of the batch, writing their keys and values into the
    /// cache, and returns the logits the chunks asked for.
    fn forward(&mut self, batch: &ForwardBatch) -> Result<Logits, BackendError>;

    /// Copies whole blocks (`(source, destination)` pairs): copy-on-write of shared blocks.
    fn copy_blocks(&mut self, copies: &[(BlockId, BlockId)]) -> Result<(), BackendError>;

    /// [`Self::forward`], then one token for each row of logits as `picks` says (one pick
    /// per chunk with `needs_logits`, in order), so that a device keeps the logits where
    /// they are. This default picks on the host from [`Self::forward`]'s logits.
    fn forward_picking(
        &mut self,
        batch: &ForwardBatch,
        picks: &[kernels::TokenPick],
    ) -> Result<Vec<u32>, BackendError> {
        let logits = self.forward(batch)?;
        check_picks(logits.num_rows(), picks)?;
        Ok((0..logits.num_rows())
            .zip(picks)
            .map(|(row, pick)| pick.pick(logits.row(row)))
            .collect())
    }
}

/// Refuses a pick list that does not match the step's rows of logits.
pub fn check_picks(rows: usize, picks: &[kernels::TokenPick]) -> Result<(), BackendError> {
    if rows == picks.len() {
        Ok(())
    } else {
        Err(BackendError::InvalidPlan(format!(
            "{} token picks for {rows} rows of logits",
            picks.len()
        )))
    }
}
