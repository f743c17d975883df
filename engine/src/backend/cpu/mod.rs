//! The CPU backend: a Llama-family decoder over a paged KV cache, f32 throughout.
//!
//! One forward pass runs every chunk of the batch together: all their tokens are
//! concatenated into one `[tokens, hidden]` activation so each projection is one GEMM
//! (the `gemm` crate, multithreaded through rayon); attention is the only per-sequence part
//! and reads keys and values through each chunk's block table, the same paged layout the
//! CUDA backend uses.

mod attention;
mod kv_cache;
mod ops;

use std::sync::Arc;

use kv_cache::PagedKvCache;

use super::{Backend, BackendError, BlockId, ForwardBatch, KvCacheShape, Logits};
use crate::model::{ModelConfig, ModelWeights};

pub struct CpuBackend {
    config: ModelConfig,
    weights: Arc<ModelWeights>,
    inv_freq: Vec<f32>,
    cache: PagedKvCache,
}

/// Bytes one KV block takes for `config` (keys and values of every layer, f32).
pub fn bytes_per_block(config: &ModelConfig, block_size: usize) -> usize {
    2 * config.num_layers * block_size * config.num_kv_heads * config.head_dim * size_of::<f32>()
}

/// How many blocks fit in `budget_bytes`.
pub fn num_blocks_for_budget(
    config: &ModelConfig,
    block_size: usize,
    budget_bytes: usize,
) -> usize {
    budget_bytes / bytes_per_block(config, block_size).max(1)
}

impl CpuBackend {
    pub fn new(config: ModelConfig, weights: Arc<ModelWeights>, shape: KvCacheShape) -> Self {
        let inv_freq = config.rope_inv_freq();
        let cache = PagedKvCache::new(&config, shape);
        Self {
            config,
            weights,
            inv_freq,
            cache,
        }
    }

    fn validate(&self, batch: &ForwardBatch) -> Result<(), BackendError> {
        let block_size = self.cache.shape.block_size;
        for (i, chunk) in batch.chunks.iter().enumerate() {
            if chunk.token_ids.is_empty() {
                return Err(BackendError::InvalidPlan(format!(
                    "chunk {i} has no tokens"
                )));
            }
            let end = chunk.start_position + chunk.token_ids.len();
            if chunk.block_table.len() * block_size < end {
                return Err(BackendError::InvalidPlan(format!(
                    "chunk {i}: {} blocks cannot hold {end} positions",
                    chunk.block_table.len()
                )));
            }
            if let Some(b) = chunk
                .block_table
                .iter()
                .find(|&&b| b as usize >= self.cache.shape.num_blocks)
            {
                return Err(BackendError::InvalidPlan(format!(
                    "chunk {i}: block {b} out of range"
                )));
            }
            if let Some(t) = chunk
                .token_ids
                .iter()
                .find(|&&t| t as usize >= self.config.vocab_size)
            {
                return Err(BackendError::InvalidPlan(format!(
                    "chunk {i}: token {t} out of vocabulary"
                )));
            }
        }
        Ok(())
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn kv_cache_shape(&self) -> KvCacheShape {
        self.cache.shape
    }

    fn forward(&mut self, batch: &ForwardBatch) -> Result<Logits, BackendError> {
        self.validate(batch)?;
        let c = &self.config;
        let w = &self.weights;
        let (hidden, q_dim, kv_dim) = (
            c.hidden_size,
            c.num_heads * c.head_dim,
            c.num_kv_heads * c.head_dim,
        );

        // Flatten the batch: token i belongs to chunk `owner[i]` at position `positions[i]`.
        let mut tokens = Vec::new();
        let mut positions = Vec::new();
        let mut owner = Vec::new();
        for (index, chunk) in batch.chunks.iter().enumerate() {
            for (offset, &token) in chunk.token_ids.iter().enumerate() {
                tokens.push(token);
                positions.push(chunk.start_position + offset);
                owner.push(index);
            }
        }
        let n = tokens.len();
        let mut x = Vec::with_capacity(n * hidden);
        for &token in &tokens {
            x.extend_from_slice(w.embed_tokens.row(token as usize));
        }

        let mut normed = vec![0.0; n * hidden];
        let mut q = vec![0.0; n * q_dim];
        let mut k = vec![0.0; n * kv_dim];
        let mut v = vec![0.0; n * kv_dim];
        let mut attn = vec![0.0; n * q_dim];
        let mut gate = vec![0.0; n * c.intermediate_size];
        let mut up = vec![0.0; n * c.intermediate_size];
        for (layer_index, layer) in w.layers.iter().enumerate() {
            ops::rms_norm(&x, &layer.attn_norm, c.rms_norm_eps, &mut normed);
            ops::linear(&normed, n, &layer.q_proj, &mut q, false);
            ops::linear(&normed, n, &layer.k_proj, &mut k, false);
            ops::linear(&normed, n, &layer.v_proj, &mut v, false);
            for (target, bias) in [
                (&mut q, &layer.q_bias),
                (&mut k, &layer.k_bias),
                (&mut v, &layer.v_bias),
            ] {
                if let Some(bias) = bias {
                    ops::add_bias(target, bias);
                }
            }
            ops::rope(&mut q, &positions, c.head_dim, &self.inv_freq);
            ops::rope(&mut k, &positions, c.head_dim, &self.inv_freq);
            for i in 0..n {
                let table = &batch.chunks[owner[i]].block_table;
                self.cache.write(
                    layer_index,
                    table,
                    positions[i],
                    &k[i * kv_dim..(i + 1) * kv_dim],
                    &v[i * kv_dim..(i + 1) * kv_dim],
                );
            }
            attention::paged_attention(
                &self.cache,
                layer_index,
                c,
                &q,
                &positions,
                |i| &batch.chunks[owner[i]].block_table,
                &mut attn,
            );
            ops::linear(&attn, n, &layer.o_proj, &mut x, true);

            ops::rms_norm(&x, &layer.mlp_norm, c.rms_norm_eps, &mut normed);
            ops::linear(&normed, n, &layer.gate_proj, &mut gate, false);
            ops::linear(&normed, n, &layer.up_proj, &mut up, false);
            ops::silu_mul(&mut gate, &up);
            ops::linear(&gate, n, &layer.down_proj, &mut x, true);
        }

        // Only the last token of each chunk that asked for logits goes through the head.
        let mut last_rows = Vec::new();
        let mut start = 0;
        for chunk in &batch.chunks {
            start += chunk.token_ids.len();
            if chunk.needs_logits {
                last_rows.extend_from_slice(&x[(start - 1) * hidden..start * hidden]);
            }
        }
        let rows = last_rows.len() / hidden;
        let mut final_normed = vec![0.0; last_rows.len()];
        ops::rms_norm(&last_rows, &w.final_norm, c.rms_norm_eps, &mut final_normed);
        let head = w.output_projection();
        let mut values = vec![0.0; rows * head.rows];
        ops::linear(&final_normed, rows, head, &mut values, false);
        Ok(Logits {
            vocab_size: head.rows,
            values,
        })
    }

    fn copy_blocks(&mut self, copies: &[(BlockId, BlockId)]) -> Result<(), BackendError> {
        for &(source, destination) in copies {
            if source as usize >= self.cache.shape.num_blocks
                || destination as usize >= self.cache.shape.num_blocks
            {
                return Err(BackendError::InvalidPlan(format!(
                    "copy {source} → {destination}: block out of range"
                )));
            }
            self.cache.copy_block(source, destination);
        }
        Ok(())
    }
}
