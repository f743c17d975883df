use crate::backend::BlockId;

use super::SequenceId;

/// Misuse of the block accounting. Each variant is a bug in the caller (the scheduler), never
/// a consequence of user input: running out of blocks is an ordinary outcome, not an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvCacheError {
    #[error("block {0} does not exist in this pool")]
    UnknownBlock(BlockId),
    #[error("block {0} was released more often than it was taken")]
    DoubleFree(BlockId),
    #[error("sequence {0} has no block table")]
    UnknownSequence(SequenceId),
    #[error("the pool ran out of blocks after reporting them free")]
    Exhausted,
    #[error("sequence {0} already has a block table")]
    DuplicateSequence(SequenceId),
}
