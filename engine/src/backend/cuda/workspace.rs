//! The size of the activation workspace: every buffer the model asks for in its largest
//! step, at once (nothing is freed within a step), plus the step's metadata.

use super::arena::ALIGN;
use super::ops::attention_decode::{MAX_PARTITIONS, partitions};
use super::ops::select_tokens::PICK_WORDS;
use super::step_upload::{StepCapacity, max_words};
use crate::model::ModelConfig;

/// The model sizes the workspace depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelDims {
    pub hidden: usize,
    pub intermediate: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
}

impl ModelDims {
    pub fn of(config: &ModelConfig) -> Self {
        Self {
            hidden: config.hidden_size,
            intermediate: config.intermediate_size,
            num_heads: config.num_heads,
            num_kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
            vocab: config.vocab_size,
        }
    }

    pub fn group(&self) -> usize {
        self.num_heads / self.num_kv_heads.max(1)
    }
}

/// Bytes of workspace for steps up to `capacity` on a GPU of `multiprocessors`.
pub fn workspace_bytes(
    dims: &ModelDims,
    capacity: &StepCapacity,
    tile_tokens: usize,
    multiprocessors: usize,
) -> usize {
    let t = capacity.max_tokens;
    let rows = capacity.max_seqs; // rows of logits: one per sequence at most
    let q = dims.num_heads * dims.head_dim;
    let qkv = q + 2 * dims.num_kv_heads * dims.head_dim;
    let f32s = |n: usize| 4 * n;
    // What Llama::forward asks for, in its order: h, normed, qkv, attn, gate_up, act, then
    // the logits rows, their norm and the logits.
    let mut buffers = vec![
        f32s(t * dims.hidden),
        f32s(t * dims.hidden),
        f32s(t * qkv),
        f32s(t * q),
        f32s(t * 2 * dims.intermediate),
        f32s(t * dims.intermediate),
        f32s(rows * dims.hidden),
        f32s(rows * dims.hidden),
        f32s(rows * dims.vocab),
    ];
    // The decode split's partial states, at the batch size that needs the most.
    let most_partials = (1..=rows)
        .map(|items| items * partitions(items, dims.num_kv_heads, multiprocessors))
        .max()
        .unwrap_or(0)
        .min(rows * MAX_PARTITIONS);
    let states = most_partials * dims.num_heads;
    buffers.extend([f32s(states * dims.head_dim), f32s(states * 2)]);
    // A bf16 copy of a GEMM input produced in f32 (not in the model's own flow).
    buffers.push(2 * t * dims.hidden.max(dims.intermediate).max(q));
    // Token picks and the picked tokens.
    buffers.extend([f32s(rows * PICK_WORDS), f32s(rows)]);
    buffers.push(f32s(max_words(capacity, tile_tokens)));
    buffers
        .iter()
        .map(|b| b.next_multiple_of(ALIGN))
        .sum::<usize>()
        + 16 * ALIGN
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA_8B: ModelDims = ModelDims {
        hidden: 4096,
        intermediate: 14336,
        num_heads: 32,
        num_kv_heads: 8,
        head_dim: 128,
        vocab: 128_256,
    };

    #[test]
    fn the_workspace_holds_a_full_prefill_step_and_a_full_decode_batch() {
        let capacity = StepCapacity {
            max_tokens: 8192,
            max_seqs: 256,
            max_blocks_per_seq: 256,
        };
        let bytes = workspace_bytes(&LLAMA_8B, &capacity, 8, 132);
        // Per token: h, normed (4096), qkv (6144), attn (4096), gate_up (28672), act (14336).
        let per_token = 4 * (4096 * 2 + 6144 + 4096 + 28672 + 14336);
        let logits = 4 * 256 * 128_256;
        assert!(bytes > 8192 * per_token + logits);
        // ... and not wildly more: under 2.5 GiB of an 80 GiB device.
        assert!(bytes < 5 << 29, "{bytes}");
    }

    #[test]
    fn the_workspace_grows_with_the_step_it_must_hold() {
        let small = StepCapacity {
            max_tokens: 512,
            max_seqs: 64,
            max_blocks_per_seq: 64,
        };
        let large = StepCapacity {
            max_tokens: 2048,
            ..small
        };
        assert!(
            workspace_bytes(&LLAMA_8B, &large, 8, 132) > workspace_bytes(&LLAMA_8B, &small, 8, 132)
        );
    }
}
