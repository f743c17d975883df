//! A sequence's view of the paged KV cache: its block table, kept in step with the tokens
//! the scheduler plans to compute, on top of the shared [`BlockPool`].

use std::collections::HashMap;

use crate::backend::BlockId;

use super::{BlockHash, BlockPool, KvCacheError, blocks_for_tokens, hash_block};

/// Engine-wide identity of a sequence (one per request).
pub type SequenceId = u64;

#[derive(Debug, Clone, Default)]
struct SequenceBlocks {
    blocks: Vec<BlockId>,
    /// Prefix hashes of the leading full, computed blocks, in order.
    hashes: Vec<BlockHash>,
}

/// Leading full blocks of a token sequence that the prefix cache already holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixHit {
    pub blocks: Vec<BlockId>,
    pub hashes: Vec<BlockHash>,
    /// Tokens covered: `blocks.len() * block_size`.
    pub num_tokens: usize,
}

/// What the backend must do before a step so the planned writes land in private blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocation {
    /// Copy-on-write pairs `(shared source, fresh destination)`.
    pub copies: Vec<(BlockId, BlockId)>,
}

/// Block tables of every live sequence plus the pool they draw from.
#[derive(Debug, Clone)]
pub struct KvCacheManager {
    pool: BlockPool,
    block_size: usize,
    prefix_caching: bool,
    sequences: HashMap<SequenceId, SequenceBlocks>,
}

impl KvCacheManager {
    pub fn new(num_blocks: usize, block_size: usize, prefix_caching: bool) -> Self {
        KvCacheManager {
            pool: BlockPool::new(num_blocks),
            block_size: block_size.max(1),
            prefix_caching,
            sequences: HashMap::new(),
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    /// Tokens the whole cache can hold.
    pub fn capacity_tokens(&self) -> usize {
        self.pool.num_blocks() * self.block_size
    }

    pub fn has_sequence(&self, id: SequenceId) -> bool {
        self.sequences.contains_key(&id)
    }

    pub fn block_table(&self, id: SequenceId) -> Result<&[BlockId], KvCacheError> {
        Ok(&self.sequence(id)?.blocks)
    }

    /// The longest run of leading full blocks of `tokens` found in the prefix cache, always
    /// leaving at least the last token to compute (its logits are needed to sample).
    pub fn find_prefix(&self, tokens: &[u32]) -> PrefixHit {
        let mut hit = PrefixHit::default();
        if !self.prefix_caching || tokens.is_empty() {
            return hit;
        }
        let max_blocks = (tokens.len() - 1) / self.block_size;
        let mut parent = None;
        for chunk in tokens.chunks_exact(self.block_size).take(max_blocks) {
            let hash = hash_block(parent, chunk);
            let Some(block) = self.pool.lookup(hash) else {
                break;
            };
            hit.blocks.push(block);
            hit.hashes.push(hash);
            parent = Some(hash);
        }
        hit.num_tokens = hit.blocks.len() * self.block_size;
        hit
    }

    /// Gives a new sequence a block table holding `hit`'s cached blocks plus fresh blocks up
    /// to `num_tokens` tokens. `Ok(None)` when the pool is too small right now; nothing has
    /// changed then.
    pub fn admit(
        &mut self,
        id: SequenceId,
        hit: &PrefixHit,
        num_tokens: usize,
    ) -> Result<Option<Allocation>, KvCacheError> {
        if self.sequences.contains_key(&id) {
            return Err(KvCacheError::DuplicateSequence(id));
        }
        let mut reactivated = 0;
        for &block in &hit.blocks {
            if self.pool.ref_count(block)? == 0 {
                reactivated += 1;
            }
        }
        let fresh = blocks_for_tokens(num_tokens, self.block_size).saturating_sub(hit.blocks.len());
        if reactivated + fresh > self.pool.num_free() {
            return Ok(None);
        }
        // Take the hits first so growing the table cannot evict them.
        for &block in &hit.blocks {
            self.pool.acquire(block)?;
        }
        self.sequences.insert(
            id,
            SequenceBlocks {
                blocks: hit.blocks.clone(),
                hashes: hit.hashes.clone(),
            },
        );
        self.allocate(id, hit.num_tokens, num_tokens)
    }

    /// Grows a sequence's table to cover `num_tokens` tokens and makes every block that the
    /// step writes (positions `write_from..num_tokens`) private to it, copying shared ones.
    /// `Ok(None)` when the pool is too small right now; nothing has changed then.
    pub fn allocate(
        &mut self,
        id: SequenceId,
        write_from: usize,
        num_tokens: usize,
    ) -> Result<Option<Allocation>, KvCacheError> {
        let block_size = self.block_size;
        let seq = self
            .sequences
            .get(&id)
            .ok_or(KvCacheError::UnknownSequence(id))?;
        let needed_len = blocks_for_tokens(num_tokens, block_size);
        let fresh = needed_len.saturating_sub(seq.blocks.len());
        let first_written = write_from / block_size;
        let mut shared = Vec::new();
        for index in first_written..seq.blocks.len().min(needed_len) {
            if self.pool.ref_count(seq.blocks[index])? > 1 {
                shared.push(index);
            }
        }
        if fresh + shared.len() > self.pool.num_free() {
            return Ok(None);
        }
        let mut allocation = Allocation::default();
        let mut new_blocks = Vec::with_capacity(fresh + shared.len());
        for _ in 0..fresh + shared.len() {
            // The free count was checked above, so this only fails on a broken pool.
            new_blocks.push(self.pool.allocate().ok_or(KvCacheError::Exhausted)?);
        }
        let seq = self
            .sequences
            .get_mut(&id)
            .ok_or(KvCacheError::UnknownSequence(id))?;
        let mut new_blocks = new_blocks.into_iter();
        for index in shared {
            if let Some(copy) = new_blocks.next() {
                let source = seq.blocks[index];
                allocation.copies.push((source, copy));
                seq.blocks[index] = copy;
                // A block being written is not full and computed, so it was never hashed
                // for this sequence; the shared source keeps its other owners.
                self.pool.release(source)?;
            }
        }
        seq.blocks.extend(new_blocks);
        Ok(Some(allocation))
    }

    /// Publishes the sequence's full blocks among `tokens[..num_computed]` in the prefix
    /// cache, so later sequences with the same prefix can skip computing them.
    pub fn cache_full_blocks(
        &mut self,
        id: SequenceId,
        tokens: &[u32],
        num_computed: usize,
    ) -> Result<(), KvCacheError> {
        if !self.prefix_caching {
            return Ok(());
        }
        let block_size = self.block_size;
        let seq = self
            .sequences
            .get_mut(&id)
            .ok_or(KvCacheError::UnknownSequence(id))?;
        let full = (num_computed.min(tokens.len()) / block_size).min(seq.blocks.len());
        for index in seq.hashes.len()..full {
            let parent = seq.hashes.last().copied();
            let chunk = &tokens[index * block_size..(index + 1) * block_size];
            let hash = hash_block(parent, chunk);
            self.pool.register(seq.blocks[index], hash)?;
            seq.hashes.push(hash);
        }
        Ok(())
    }

    /// Gives `child` the same blocks as `parent` (each gaining an owner); the first write
    /// into a shared block copies it.
    pub fn fork(&mut self, parent: SequenceId, child: SequenceId) -> Result<(), KvCacheError> {
        if self.sequences.contains_key(&child) {
            return Err(KvCacheError::DuplicateSequence(child));
        }
        let blocks = self.sequence(parent)?.clone();
        for &block in &blocks.blocks {
            self.pool.acquire(block)?;
        }
        self.sequences.insert(child, blocks);
        Ok(())
    }

    /// Releases every block of the sequence at once (finish, abort or preemption). The tail
    /// goes first so that, among this sequence's cached blocks, the deepest are evicted
    /// before the shared-looking heads.
    pub fn free(&mut self, id: SequenceId) -> Result<(), KvCacheError> {
        let seq = self
            .sequences
            .remove(&id)
            .ok_or(KvCacheError::UnknownSequence(id))?;
        for &block in seq.blocks.iter().rev() {
            self.pool.release(block)?;
        }
        Ok(())
    }

    fn sequence(&self, id: SequenceId) -> Result<&SequenceBlocks, KvCacheError> {
        self.sequences
            .get(&id)
            .ok_or(KvCacheError::UnknownSequence(id))
    }

    /// Every live sequence id (in no particular order); for checks and tests.
    pub fn sequence_ids(&self) -> impl Iterator<Item = SequenceId> + '_ {
        self.sequences.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(n: usize) -> Vec<u32> {
        (0..n as u32).collect()
    }

    #[test]
    fn admit_allocates_whole_blocks_and_free_returns_them() {
        let mut kv = KvCacheManager::new(4, 4, true);
        let hit = kv.find_prefix(&tokens(9));
        assert_eq!(hit.num_tokens, 0);
        let alloc = kv.admit(1, &hit, 9).expect("valid").expect("fits");
        assert!(alloc.copies.is_empty());
        assert_eq!(kv.block_table(1).expect("live").len(), 3);
        assert_eq!(kv.pool().num_free(), 1);
        kv.free(1).expect("live");
        assert_eq!(kv.pool().num_free(), 4);
        assert!(matches!(kv.free(1), Err(KvCacheError::UnknownSequence(1))));
    }

    #[test]
    fn admit_that_does_not_fit_changes_nothing() {
        let mut kv = KvCacheManager::new(2, 4, true);
        assert_eq!(kv.admit(1, &PrefixHit::default(), 9).expect("valid"), None);
        assert!(!kv.has_sequence(1));
        assert_eq!(kv.pool().num_free(), 2);
    }

    #[test]
    fn prefix_hit_reuses_computed_full_blocks_but_leaves_last_token() {
        let mut kv = KvCacheManager::new(8, 4, true);
        let prompt = tokens(8);
        kv.admit(1, &PrefixHit::default(), 8)
            .expect("valid")
            .expect("fits");
        kv.cache_full_blocks(1, &prompt, 8).expect("live");
        let owned = kv.block_table(1).expect("live").to_vec();

        // Same 8 tokens: only the first block may be reused, the last token must run.
        let hit = kv.find_prefix(&prompt);
        assert_eq!(hit.blocks, owned[..1]);
        // A longer prompt with the same start reuses both.
        let longer: Vec<u32> = prompt.iter().copied().chain([100, 101]).collect();
        let hit = kv.find_prefix(&longer);
        assert_eq!(hit.blocks, owned);
        assert_eq!(hit.num_tokens, 8);
        kv.admit(2, &hit, longer.len())
            .expect("valid")
            .expect("fits");
        assert_eq!(kv.pool().ref_count(owned[0]), Ok(2));
        // A different first token shares nothing.
        let mut other = longer.clone();
        other[0] = 77;
        assert_eq!(kv.find_prefix(&other).num_tokens, 0);
    }

    #[test]
    fn writing_into_a_forked_partial_block_copies_it() {
        let mut kv = KvCacheManager::new(4, 4, true);
        kv.admit(1, &PrefixHit::default(), 6)
            .expect("valid")
            .expect("fits");
        kv.fork(1, 2).expect("live parent");
        let shared = kv.block_table(1).expect("live").to_vec();
        // Sequence 2 writes position 6, inside the shared second block.
        let alloc = kv.allocate(2, 6, 7).expect("valid").expect("fits");
        let child = kv.block_table(2).expect("live").to_vec();
        assert_eq!(child[0], shared[0]);
        assert_ne!(child[1], shared[1]);
        assert_eq!(alloc.copies, vec![(shared[1], child[1])]);
        assert_eq!(kv.pool().ref_count(shared[1]), Ok(1));
        // Now private, the parent writes without a copy.
        assert!(
            kv.allocate(1, 6, 7)
                .expect("valid")
                .expect("fits")
                .copies
                .is_empty()
        );
    }

    #[test]
    fn disabled_prefix_caching_never_hits() {
        let mut kv = KvCacheManager::new(4, 4, false);
        let prompt = tokens(9);
        kv.admit(1, &PrefixHit::default(), 9)
            .expect("valid")
            .expect("fits");
        kv.cache_full_blocks(1, &prompt, 9).expect("live");
        assert_eq!(kv.find_prefix(&prompt).num_tokens, 0);
    }
}
