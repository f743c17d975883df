//! The paged KV cache's accounting: which physical block holds which tokens of which sequence.
//!
//! Two units, as in vLLM's v1 core: the [`BlockPool`] knows blocks only (reference counts,
//! the free queue, prefix hashes, LRU eviction), and the [`KvCacheManager`] knows sequences
//! (their block tables, prefix-cache lookups, copy-on-write). Neither touches tensor memory:
//! the backend owns the cache itself and executes the copies the manager asks for.

mod block_pool;
mod error;
mod hash;
mod manager;

pub use block_pool::BlockPool;
pub use error::KvCacheError;
pub use hash::{BlockHash, hash_block};
pub use manager::{Allocation, KvCacheManager, PrefixHit, SequenceId};

/// Number of blocks needed to hold `num_tokens` tokens.
pub fn blocks_for_tokens(num_tokens: usize, block_size: usize) -> usize {
    num_tokens.div_ceil(block_size)
}

#[cfg(test)]
mod proptests;
