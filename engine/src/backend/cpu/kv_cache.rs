//! The paged KV cache's memory: per layer, keys and values laid out as
//! `[num_blocks, block_size, num_kv_heads, head_dim]`.

use crate::backend::{BlockId, KvCacheShape};
use crate::model::ModelConfig;

pub(super) struct PagedKvCache {
    pub shape: KvCacheShape,
    /// Floats per token slot: `num_kv_heads * head_dim`.
    pub slot_width: usize,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

impl PagedKvCache {
    pub fn new(config: &ModelConfig, shape: KvCacheShape) -> Self {
        let slot_width = config.num_kv_heads * config.head_dim;
        let per_layer = shape.num_blocks * shape.block_size * slot_width;
        Self {
            shape,
            slot_width,
            keys: (0..config.num_layers)
                .map(|_| vec![0.0; per_layer])
                .collect(),
            values: (0..config.num_layers)
                .map(|_| vec![0.0; per_layer])
                .collect(),
        }
    }

    /// Index of the first float of `position`'s slot, through the block table.
    pub fn slot_offset(&self, block_table: &[BlockId], position: usize) -> usize {
        let block = block_table[position / self.shape.block_size] as usize;
        (block * self.shape.block_size + position % self.shape.block_size) * self.slot_width
    }

    pub fn write(
        &mut self,
        layer: usize,
        block_table: &[BlockId],
        position: usize,
        key: &[f32],
        value: &[f32],
    ) {
        let at = self.slot_offset(block_table, position);
        self.keys[layer][at..at + self.slot_width].copy_from_slice(key);
        self.values[layer][at..at + self.slot_width].copy_from_slice(value);
    }

    pub fn keys(&self, layer: usize) -> &[f32] {
        &self.keys[layer]
    }

    pub fn values(&self, layer: usize) -> &[f32] {
        &self.values[layer]
    }

    pub fn copy_block(&mut self, source: BlockId, destination: BlockId) {
        let block_floats = self.shape.block_size * self.slot_width;
        let (s, d) = (
            source as usize * block_floats,
            destination as usize * block_floats,
        );
        for layer in self.keys.iter_mut().chain(self.values.iter_mut()) {
            layer.copy_within(s..s + block_floats, d);
        }
    }
}
