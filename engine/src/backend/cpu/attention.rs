//! Causal attention of each new token over its sequence's cached keys and values, read
//! through the block table (grouped-query: `num_heads / num_kv_heads` query heads share a
//! KV head).

use rayon::prelude::*;

use super::kv_cache::PagedKvCache;
use crate::backend::BlockId;
use crate::model::ModelConfig;

/// `out[t, h]` = softmax(q[t, h] · K[0..=pos_t]ᵀ / √d) · V[0..=pos_t], for every token `t` and
/// query head `h`. The token's own key and value must already be in the cache.
pub(super) fn paged_attention<'a>(
    cache: &PagedKvCache,
    layer: usize,
    config: &ModelConfig,
    q: &[f32],
    positions: &[usize],
    block_table_of: impl Fn(usize) -> &'a [BlockId] + Sync,
    out: &mut [f32],
) {
    let head_dim = config.head_dim;
    let group = config.num_heads / config.num_kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let keys = cache.keys(layer);
    let values = cache.values(layer);
    out.par_chunks_mut(head_dim)
        .enumerate()
        .for_each(|(index, out_head)| {
            let token = index / config.num_heads;
            let head = index % config.num_heads;
            let kv_head = head / group;
            let query = &q[index * head_dim..(index + 1) * head_dim];
            let table = block_table_of(token);
            let context = positions[token] + 1;
            let mut scores: Vec<f32> = (0..context)
                .map(|position| {
                    let at = cache.slot_offset(table, position) + kv_head * head_dim;
                    dot(query, &keys[at..at + head_dim]) * scale
                })
                .collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0.0;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                total += *s;
            }
            out_head.fill(0.0);
            for (position, weight) in scores.iter().enumerate() {
                let at = cache.slot_offset(table, position) + kv_head * head_dim;
                let w = weight / total;
                for (o, v) in out_head.iter_mut().zip(&values[at..at + head_dim]) {
                    *o += w * v;
                }
            }
        });
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
