//! The scheduler's output for one step.

use crate::backend::{BlockId, ForwardBatch};
use crate::kv_cache::SequenceId;

/// Bookkeeping for one chunk of the batch (same order as `batch.chunks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledChunk {
    pub sequence: SequenceId,
    pub num_tokens: usize,
    /// The chunk reaches the end of the sequence's known tokens, so its logits give the
    /// next token.
    pub samples: bool,
}

/// What the backend executes this step, and what the engine needs to make sense of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepPlan {
    pub batch: ForwardBatch,
    pub scheduled: Vec<ScheduledChunk>,
    /// Copy-on-write block copies to run before the forward pass.
    pub copies: Vec<(BlockId, BlockId)>,
    /// Sequences sent back to waiting this step (their blocks are already free).
    pub preempted: Vec<SequenceId>,
}

impl StepPlan {
    pub fn is_empty(&self) -> bool {
        self.scheduled.is_empty()
    }

    pub fn num_tokens(&self) -> usize {
        self.scheduled.iter().map(|c| c.num_tokens).sum()
    }

    /// Sequences that get a logits row this step, in the order of the rows.
    pub fn sampling_sequences(&self) -> impl Iterator<Item = SequenceId> + '_ {
        self.scheduled
            .iter()
            .filter(|c| c.samples)
            .map(|c| c.sequence)
    }
}
