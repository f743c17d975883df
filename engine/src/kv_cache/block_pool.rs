//! Pure accounting of physical blocks: reference counts, the free queue and the prefix cache.

use std::collections::{BTreeMap, HashMap};

use crate::backend::BlockId;

use super::{BlockHash, KvCacheError};

#[derive(Debug, Clone, Default)]
struct BlockMeta {
    ref_count: u32,
    /// Set once the block is full and its content is known; such a block stays findable by
    /// prefix lookups even while free, until it is evicted for reuse.
    hash: Option<BlockHash>,
    /// Position in the free queue while `ref_count == 0`.
    free_stamp: Option<u64>,
}

/// Every physical block of the KV cache, free or in use.
///
/// Free blocks wait in a queue ordered by the time they were freed: allocation takes the
/// oldest, so a free block that still holds a cached prefix survives as long as possible
/// (least recently used goes first). A cached block that is free can be taken back by a
/// prefix hit without recomputation.
#[derive(Debug, Clone)]
pub struct BlockPool {
    blocks: Vec<BlockMeta>,
    /// Free blocks by the stamp they were freed at: the first entry is the LRU one.
    free_queue: BTreeMap<u64, BlockId>,
    next_stamp: u64,
    cached: HashMap<BlockHash, BlockId>,
}

impl BlockPool {
    pub fn new(num_blocks: usize) -> Self {
        let mut pool = BlockPool {
            blocks: vec![BlockMeta::default(); num_blocks],
            free_queue: BTreeMap::new(),
            next_stamp: 0,
            cached: HashMap::new(),
        };
        for id in 0..num_blocks {
            pool.push_free(id as BlockId);
        }
        pool
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks with no owner, cached or not: what allocation can draw on.
    pub fn num_free(&self) -> usize {
        self.free_queue.len()
    }

    pub fn num_used(&self) -> usize {
        self.blocks.len() - self.free_queue.len()
    }

    /// Fraction of blocks owned by at least one sequence (0 when the pool is empty).
    pub fn usage(&self) -> f64 {
        if self.blocks.is_empty() {
            0.0
        } else {
            self.num_used() as f64 / self.blocks.len() as f64
        }
    }

    pub fn ref_count(&self, block: BlockId) -> Result<u32, KvCacheError> {
        Ok(self.meta(block)?.ref_count)
    }

    pub fn block_hash(&self, block: BlockId) -> Result<Option<BlockHash>, KvCacheError> {
        Ok(self.meta(block)?.hash)
    }

    /// Takes the least recently freed block for new content, evicting its cached prefix.
    /// `None` when every block is in use.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let (_, block) = self.free_queue.pop_first()?;
        let meta = &mut self.blocks[block as usize];
        meta.free_stamp = None;
        meta.ref_count = 1;
        if let Some(hash) = meta.hash.take()
            && self.cached.get(&hash) == Some(&block)
        {
            self.cached.remove(&hash);
        }
        Some(block)
    }

    /// The block caching this prefix hash, if any (free or in use).
    pub fn lookup(&self, hash: BlockHash) -> Option<BlockId> {
        self.cached.get(&hash).copied()
    }

    /// Adds an owner to an existing block (a prefix hit or a fork), taking it off the free
    /// queue if it had none.
    pub fn acquire(&mut self, block: BlockId) -> Result<(), KvCacheError> {
        let meta = self.meta_mut(block)?;
        meta.ref_count += 1;
        if let Some(stamp) = meta.free_stamp.take() {
            self.free_queue.remove(&stamp);
        }
        Ok(())
    }

    /// Drops one owner; the last one puts the block back on the free queue (its cached
    /// prefix stays findable until the block is reused).
    pub fn release(&mut self, block: BlockId) -> Result<(), KvCacheError> {
        let meta = self.meta_mut(block)?;
        if meta.ref_count == 0 {
            return Err(KvCacheError::DoubleFree(block));
        }
        meta.ref_count -= 1;
        if meta.ref_count == 0 {
            self.push_free(block);
        }
        Ok(())
    }

    /// Records that `block` is full and holds the prefix `hash`. If another block already
    /// caches the same prefix, that one stays the canonical copy and this call does nothing.
    pub fn register(&mut self, block: BlockId, hash: BlockHash) -> Result<(), KvCacheError> {
        if self.meta(block)?.hash.is_some() || self.cached.contains_key(&hash) {
            return Ok(());
        }
        self.meta_mut(block)?.hash = Some(hash);
        self.cached.insert(hash, block);
        Ok(())
    }

    /// Number of prefixes findable by [`BlockPool::lookup`].
    pub fn num_cached(&self) -> usize {
        self.cached.len()
    }

    fn push_free(&mut self, block: BlockId) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.blocks[block as usize].free_stamp = Some(stamp);
        self.free_queue.insert(stamp, block);
    }

    fn meta(&self, block: BlockId) -> Result<&BlockMeta, KvCacheError> {
        self.blocks
            .get(block as usize)
            .ok_or(KvCacheError::UnknownBlock(block))
    }

    fn meta_mut(&mut self, block: BlockId) -> Result<&mut BlockMeta, KvCacheError> {
        self.blocks
            .get_mut(block as usize)
            .ok_or(KvCacheError::UnknownBlock(block))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv_cache::hash_block;

    #[test]
    fn allocate_until_exhausted_then_release_returns_blocks() {
        let mut pool = BlockPool::new(3);
        let blocks: Vec<_> = (0..3).filter_map(|_| pool.allocate()).collect();
        assert_eq!(blocks.len(), 3);
        assert_eq!(pool.allocate(), None);
        assert_eq!(pool.num_used(), 3);
        pool.release(blocks[1]).expect("owned");
        assert_eq!(pool.num_free(), 1);
        assert_eq!(pool.allocate(), Some(blocks[1]));
    }

    #[test]
    fn double_release_is_an_error() {
        let mut pool = BlockPool::new(1);
        let b = pool.allocate().expect("one free block");
        pool.release(b).expect("owned");
        assert_eq!(pool.release(b), Err(KvCacheError::DoubleFree(b)));
        assert_eq!(pool.release(7), Err(KvCacheError::UnknownBlock(7)));
    }

    #[test]
    fn free_cached_block_is_found_until_evicted_lru_first() {
        let mut pool = BlockPool::new(2);
        let a = pool.allocate().expect("free");
        let b = pool.allocate().expect("free");
        let (ha, hb) = (hash_block(None, &[1]), hash_block(None, &[2]));
        pool.register(a, ha).expect("valid");
        pool.register(b, hb).expect("valid");
        pool.release(a).expect("owned");
        pool.release(b).expect("owned");
        assert_eq!(pool.lookup(ha), Some(a));
        // `a` was freed first, so it is the one evicted.
        assert_eq!(pool.allocate(), Some(a));
        assert_eq!(pool.lookup(ha), None);
        assert_eq!(pool.lookup(hb), Some(b));
        // A hit takes the free cached block back off the queue.
        pool.acquire(b).expect("valid");
        assert_eq!(pool.num_free(), 0);
        assert_eq!(pool.ref_count(b), Ok(1));
    }

    #[test]
    fn second_block_with_same_prefix_does_not_replace_the_first() {
        let mut pool = BlockPool::new(2);
        let a = pool.allocate().expect("free");
        let b = pool.allocate().expect("free");
        let h = hash_block(None, &[9, 9]);
        pool.register(a, h).expect("valid");
        pool.register(b, h).expect("valid");
        assert_eq!(pool.lookup(h), Some(a));
        assert_eq!(pool.block_hash(b), Ok(None));
    }
}
