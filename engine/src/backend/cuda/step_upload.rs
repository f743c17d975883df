//! A step's metadata as the CUDA kernels read it: the arrays of [`StepMetadata`] packed into
//! one buffer of u32 words, uploaded with one copy, plus the attention work lists the
//! kernels walk (which tokens decode alone, which are tiled for prefill attention).
//!
//! Where each array starts depends only on the step's counts (tokens, sequences, rows of
//! logits, work items) and the block-table stride, which is fixed per model: two steps of
//! the same shape share every address, which is what lets a recorded CUDA graph replay the
//! second with the first's launches.

use crate::backend::BackendError;
use crate::backend::step::StepMetadata;

/// The largest step the workspace is sized for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepCapacity {
    pub max_tokens: usize,
    pub max_seqs: usize,
    /// Block-table entries per sequence: the longest sequence's blocks.
    pub max_blocks_per_seq: usize,
}

/// Word offsets of each array in the packed buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepLayout {
    pub token_ids: usize,
    pub positions: usize,
    pub slot_mapping: usize,
    pub context_lens: usize,
    /// `num_seqs × table_stride`.
    pub block_tables: usize,
    pub logits_rows: usize,
    /// `(token, sequence)` pairs: sequences with one query token this step.
    pub decode_items: usize,
    /// `(sequence, first token, tokens)` triples: sequences with more.
    pub prefill_tiles: usize,
    pub total_words: usize,
}

/// A step ready to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedStep {
    pub words: Vec<u32>,
    pub layout: StepLayout,
    pub num_tokens: usize,
    pub num_seqs: usize,
    pub num_logits_rows: usize,
    pub num_decode_items: usize,
    pub num_prefill_tiles: usize,
    pub table_stride: usize,
    pub block_size: usize,
}

/// Packs `meta`, splitting multi-token chunks into tiles of at most `tile_tokens` tokens.
/// Refuses a step beyond `capacity`, naming the limit.
pub fn pack_step(
    meta: &StepMetadata,
    capacity: &StepCapacity,
    tile_tokens: usize,
) -> Result<PackedStep, BackendError> {
    let over = |what: &str, got: usize, max: usize| {
        BackendError::InvalidPlan(format!(
            "{got} {what} in one step, more than the CUDA workspace was sized for ({max})"
        ))
    };
    let (tokens, seqs) = (meta.num_tokens(), meta.num_seqs());
    if tokens > capacity.max_tokens {
        return Err(over("tokens", tokens, capacity.max_tokens));
    }
    if seqs > capacity.max_seqs {
        return Err(over("sequences", seqs, capacity.max_seqs));
    }
    if meta.max_blocks_per_seq > capacity.max_blocks_per_seq {
        return Err(over(
            "blocks for one sequence",
            meta.max_blocks_per_seq,
            capacity.max_blocks_per_seq,
        ));
    }
    let tile_tokens = tile_tokens.max(1);
    let mut decode_items = Vec::new();
    let mut prefill_tiles = Vec::new();
    for seq in 0..seqs {
        let span = meta.tokens_of(seq);
        if span.len() == 1 {
            decode_items.extend([span.start as u32, seq as u32]);
        } else {
            for first in span.clone().step_by(tile_tokens) {
                let count = tile_tokens.min(span.end - first);
                prefill_tiles.extend([seq as u32, first as u32, count as u32]);
            }
        }
    }
    let stride = capacity.max_blocks_per_seq;
    let layout = layout_for(
        tokens,
        seqs,
        meta.logits_rows.len(),
        decode_items.len() / 2,
        prefill_tiles.len() / 3,
        stride,
    );
    let mut words = Vec::with_capacity(layout.total_words);
    words.extend_from_slice(&meta.token_ids);
    words.extend_from_slice(&meta.positions);
    words.extend_from_slice(&meta.slot_mapping);
    words.extend_from_slice(&meta.context_lens);
    for seq in 0..seqs {
        let row = &meta.block_tables[seq * meta.max_blocks_per_seq..][..meta.max_blocks_per_seq];
        words.extend_from_slice(row);
        words.extend(std::iter::repeat_n(0, stride - row.len()));
    }
    words.extend_from_slice(&meta.logits_rows);
    words.extend_from_slice(&decode_items);
    words.extend_from_slice(&prefill_tiles);
    debug_assert_eq!(words.len(), layout.total_words);
    Ok(PackedStep {
        words,
        layout,
        num_tokens: tokens,
        num_seqs: seqs,
        num_logits_rows: meta.logits_rows.len(),
        num_decode_items: decode_items.len() / 2,
        num_prefill_tiles: prefill_tiles.len() / 3,
        table_stride: stride,
        block_size: meta.block_size,
    })
}

/// Offsets of a step with these counts: the arrays back to back, in [`StepLayout`]'s order.
fn layout_for(
    tokens: usize,
    seqs: usize,
    logits_rows: usize,
    decode_items: usize,
    prefill_tiles: usize,
    stride: usize,
) -> StepLayout {
    let token_ids = 0;
    let positions = token_ids + tokens;
    let slot_mapping = positions + tokens;
    let context_lens = slot_mapping + tokens;
    let block_tables = context_lens + seqs;
    let logits_rows_at = block_tables + seqs * stride;
    let decode_items_at = logits_rows_at + logits_rows;
    let prefill_tiles_at = decode_items_at + 2 * decode_items;
    StepLayout {
        token_ids,
        positions,
        slot_mapping,
        context_lens,
        block_tables,
        logits_rows: logits_rows_at,
        decode_items: decode_items_at,
        prefill_tiles: prefill_tiles_at,
        total_words: prefill_tiles_at + 3 * prefill_tiles,
    }
}

/// Words the packed metadata of the largest step takes at most.
pub fn max_words(capacity: &StepCapacity, tile_tokens: usize) -> usize {
    let (t, s) = (capacity.max_tokens, capacity.max_seqs);
    // Every sequence decodes alone, or every token is in a tile of its own sequence.
    let items = 2 * s;
    let tiles = 3 * (t / tile_tokens.max(1) + s);
    3 * t + s + s * capacity.max_blocks_per_seq + s + items.max(tiles)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{ForwardBatch, KvCacheShape, SequenceChunk};

    const CAPACITY: StepCapacity = StepCapacity {
        max_tokens: 64,
        max_seqs: 4,
        max_blocks_per_seq: 5,
    };

    fn step(chunks: Vec<SequenceChunk>) -> StepMetadata {
        let shape = KvCacheShape {
            num_blocks: 32,
            block_size: 4,
        };
        StepMetadata::build(&ForwardBatch { chunks }, shape, 1000).expect("valid")
    }

    fn chunk(len: usize, start: usize, table: &[u32]) -> SequenceChunk {
        SequenceChunk {
            token_ids: (0..len as u32).map(|t| 100 + t).collect(),
            start_position: start,
            block_table: table.to_vec(),
            needs_logits: true,
            every_token_logits: false,
        }
    }

    #[test]
    fn arrays_are_packed_back_to_back_with_tables_at_the_fixed_stride() {
        // A 5-token prefill chunk after 2 cached tokens, and a decode.
        let meta = step(vec![chunk(5, 2, &[3, 4]), chunk(1, 6, &[7, 8])]);
        let packed = pack_step(&meta, &CAPACITY, 2).expect("fits");
        let l = packed.layout;
        let w = &packed.words;
        assert_eq!(&w[l.token_ids..l.positions], &meta.token_ids[..]);
        assert_eq!(&w[l.positions..l.slot_mapping], &[2, 3, 4, 5, 6, 6]);
        assert_eq!(&w[l.slot_mapping..l.context_lens], &meta.slot_mapping[..]);
        assert_eq!(&w[l.context_lens..l.block_tables], &[7, 7]);
        assert_eq!(
            &w[l.block_tables..l.logits_rows],
            &[3, 4, 0, 0, 0, 7, 8, 0, 0, 0]
        );
        assert_eq!(&w[l.logits_rows..l.decode_items], &[4, 5]);
        // The decode is token 5 of sequence 1; the chunk is tiled 2 + 2 + 1.
        assert_eq!(&w[l.decode_items..l.prefill_tiles], &[5, 1]);
        assert_eq!(&w[l.prefill_tiles..], &[0, 0, 2, 0, 2, 2, 0, 4, 1]);
        assert_eq!((packed.num_decode_items, packed.num_prefill_tiles), (1, 3));
        assert_eq!(w.len(), l.total_words);
        assert!(w.len() <= max_words(&CAPACITY, 2));
    }

    #[test]
    fn steps_of_the_same_shape_share_every_offset() {
        let a = pack_step(
            &step(vec![chunk(1, 0, &[1]), chunk(1, 9, &[2, 3, 4])]),
            &CAPACITY,
            8,
        )
        .expect("fits");
        let b = pack_step(
            &step(vec![chunk(1, 3, &[5]), chunk(1, 0, &[6])]),
            &CAPACITY,
            8,
        )
        .expect("fits");
        assert_eq!(a.layout, b.layout);
        assert_ne!(a.words, b.words);
    }

    #[test]
    fn a_step_beyond_the_workspace_is_refused_by_its_limit() {
        let err = |meta: StepMetadata| {
            pack_step(&meta, &CAPACITY, 8)
                .expect_err("too big")
                .to_string()
        };
        let many = (0..5).map(|i| chunk(1, 0, &[i])).collect();
        assert!(err(step(many)).contains("5 sequences"));
        let long = chunk(1, 23, &[0, 1, 2, 3, 4, 5]);
        assert!(err(step(vec![long])).contains("6 blocks for one sequence"));
        let wide = StepCapacity {
            max_tokens: 4,
            ..CAPACITY
        };
        assert!(
            pack_step(&step(vec![chunk(5, 0, &[0, 1])]), &wide, 8)
                .expect_err("too many tokens")
                .to_string()
                .contains("5 tokens")
        );
    }

    #[test]
    fn the_bound_covers_the_largest_steps_of_either_kind() {
        let cap = StepCapacity {
            max_tokens: 16,
            max_seqs: 4,
            max_blocks_per_seq: 5,
        };
        let decodes = step((0..4).map(|i| chunk(1, 0, &[i])).collect());
        let prefills = step((0..4).map(|i| chunk(4, 0, &[i])).collect());
        for meta in [decodes, prefills] {
            let packed = pack_step(&meta, &cap, 3).expect("fits");
            assert!(packed.words.len() <= max_words(&cap, 3));
        }
    }
}
