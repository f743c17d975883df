//! The host-side description of one forward pass, computed once per step from the plan and
//! shared by every kernel layer: flattened token ids and positions, where each token's key
//! and value go in the paged cache, each sequence's block table and context length, and
//! which rows need logits. A device uploads these arrays as they are.

use std::ops::Range;

use super::{BackendError, BlockId, ForwardBatch, KvCacheShape};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepMetadata {
    /// Tokens of every chunk, concatenated in batch order.
    pub token_ids: Vec<u32>,
    /// Absolute position of each token in its sequence.
    pub positions: Vec<u32>,
    /// Cache slot of each token: `block * block_size + position % block_size`.
    pub slot_mapping: Vec<u32>,
    /// Offsets of each sequence's tokens in the flattened arrays, `num_seqs + 1` entries
    /// (sequence `s` owns tokens `query_start[s]..query_start[s + 1]`).
    pub query_start: Vec<u32>,
    /// Tokens each sequence has in the cache once this step has written its own.
    pub context_lens: Vec<u32>,
    /// `num_seqs × max_blocks_per_seq` block ids, row-major; entries past a sequence's own
    /// blocks are 0 and never read.
    pub block_tables: Vec<u32>,
    pub max_blocks_per_seq: usize,
    /// Indices of the tokens whose logits are returned (the last token of each chunk that
    /// asked), in batch order.
    pub logits_rows: Vec<u32>,
    pub block_size: usize,
}

impl StepMetadata {
    /// Flattens and checks a plan against the cache it will run on and the model's
    /// vocabulary. A plan the scheduler made is always valid; this refuses anything else
    /// with the chunk named, before a kernel could read out of bounds.
    pub fn build(
        batch: &ForwardBatch,
        cache: KvCacheShape,
        vocab_size: usize,
    ) -> Result<Self, BackendError> {
        let block_size = cache.block_size;
        let invalid =
            |i: usize, what: String| BackendError::InvalidPlan(format!("chunk {i}: {what}"));
        let max_blocks_per_seq = batch
            .chunks
            .iter()
            .map(|c| c.block_table.len())
            .max()
            .unwrap_or(0);
        let num_tokens: usize = batch.chunks.iter().map(|c| c.token_ids.len()).sum();
        let mut step = StepMetadata {
            token_ids: Vec::with_capacity(num_tokens),
            positions: Vec::with_capacity(num_tokens),
            slot_mapping: Vec::with_capacity(num_tokens),
            query_start: Vec::with_capacity(batch.chunks.len() + 1),
            context_lens: Vec::with_capacity(batch.chunks.len()),
            block_tables: vec![0; batch.chunks.len() * max_blocks_per_seq],
            max_blocks_per_seq,
            logits_rows: Vec::new(),
            block_size,
        };
        step.query_start.push(0);
        for (i, chunk) in batch.chunks.iter().enumerate() {
            if chunk.token_ids.is_empty() {
                return Err(invalid(i, "no tokens".into()));
            }
            let end = chunk.start_position + chunk.token_ids.len();
            if chunk.block_table.len() * block_size < end {
                return Err(invalid(
                    i,
                    format!(
                        "{} blocks cannot hold {end} positions",
                        chunk.block_table.len()
                    ),
                ));
            }
            if let Some(b) = chunk
                .block_table
                .iter()
                .find(|&&b| b as usize >= cache.num_blocks)
            {
                return Err(invalid(i, format!("block {b} out of range")));
            }
            if let Some(t) = chunk.token_ids.iter().find(|&&t| t as usize >= vocab_size) {
                return Err(invalid(i, format!("token {t} out of vocabulary")));
            }
            let end = u32::try_from(end).map_err(|_| invalid(i, "position beyond u32".into()))?;
            let row = &mut step.block_tables[i * max_blocks_per_seq..][..chunk.block_table.len()];
            row.copy_from_slice(&chunk.block_table);
            for (offset, &token) in chunk.token_ids.iter().enumerate() {
                let position = chunk.start_position + offset;
                let block = chunk.block_table[position / block_size] as usize;
                step.token_ids.push(token);
                step.positions.push(position as u32);
                step.slot_mapping
                    .push((block * block_size + position % block_size) as u32);
            }
            step.query_start.push(step.token_ids.len() as u32);
            step.context_lens.push(end);
            let end = step.token_ids.len() as u32;
            if chunk.every_token_logits {
                step.logits_rows.extend(step.query_start[i]..end);
            } else if chunk.needs_logits {
                step.logits_rows.push(end - 1);
            }
        }
        Ok(step)
    }

    pub fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }

    pub fn num_seqs(&self) -> usize {
        self.context_lens.len()
    }

    /// The flattened token indices of sequence `seq`.
    pub fn tokens_of(&self, seq: usize) -> Range<usize> {
        self.query_start[seq] as usize..self.query_start[seq + 1] as usize
    }

    /// The blocks holding sequence `seq`'s context, in position order.
    pub fn block_table(&self, seq: usize) -> &[BlockId] {
        let blocks = (self.context_lens[seq] as usize).div_ceil(self.block_size);
        &self.block_tables[seq * self.max_blocks_per_seq..][..blocks]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::SequenceChunk;

    const CACHE: KvCacheShape = KvCacheShape {
        num_blocks: 8,
        block_size: 4,
    };

    fn chunk(tokens: &[u32], start: usize, table: &[u32], needs_logits: bool) -> SequenceChunk {
        SequenceChunk {
            token_ids: tokens.to_vec(),
            start_position: start,
            block_table: table.to_vec(),
            needs_logits,
            every_token_logits: false,
        }
    }

    #[test]
    fn a_prefill_chunk_and_a_decode_flatten_with_slots_through_their_tables() {
        let batch = ForwardBatch {
            chunks: vec![
                chunk(&[10, 11, 12, 13, 14], 0, &[7, 2], true),
                chunk(&[20], 6, &[5, 3], true),
            ],
        };
        let step = StepMetadata::build(&batch, CACHE, 100).expect("valid");
        assert_eq!(step.token_ids, [10, 11, 12, 13, 14, 20]);
        assert_eq!(step.positions, [0, 1, 2, 3, 4, 6]);
        // Positions 0-3 in block 7, 4 in block 2; position 6 of the second is block 3 slot 2.
        assert_eq!(step.slot_mapping, [28, 29, 30, 31, 8, 14]);
        assert_eq!(step.query_start, [0, 5, 6]);
        assert_eq!(step.context_lens, [5, 7]);
        assert_eq!(step.logits_rows, [4, 5]);
        assert_eq!(step.block_table(0), [7, 2]);
        assert_eq!(step.block_table(1), [5, 3]);
        assert_eq!(step.tokens_of(1), 5..6);
    }

    #[test]
    fn middle_chunks_of_a_long_prompt_ask_for_no_logits_and_tables_are_padded() {
        let batch = ForwardBatch {
            chunks: vec![
                chunk(&[1, 2, 3, 4], 4, &[0, 1, 6], false),
                chunk(&[5], 0, &[4], true),
            ],
        };
        let step = StepMetadata::build(&batch, CACHE, 100).expect("valid");
        assert_eq!(step.logits_rows, [4]);
        assert_eq!(step.max_blocks_per_seq, 3);
        assert_eq!(step.block_tables, [0, 1, 6, 4, 0, 0]);
        // Only the blocks the context reaches: 8 positions are 2 blocks of 4.
        assert_eq!(step.block_table(0), [0, 1]);
        assert_eq!(step.block_table(1), [4]);
    }

    #[test]
    fn a_chunk_scoring_its_prompt_asks_for_the_logits_of_every_token() {
        let mut scoring = chunk(&[1, 2, 3], 0, &[0], false);
        scoring.every_token_logits = true;
        let batch = ForwardBatch {
            chunks: vec![chunk(&[9], 5, &[1, 2], true), scoring],
        };
        let step = StepMetadata::build(&batch, CACHE, 100).expect("valid");
        assert_eq!(step.logits_rows, [0, 1, 2, 3]);
    }

    #[test]
    fn plans_that_would_read_out_of_bounds_are_refused_with_the_chunk_named() {
        let refuse = |c: SequenceChunk| {
            StepMetadata::build(&ForwardBatch { chunks: vec![c] }, CACHE, 100)
                .expect_err("invalid")
                .to_string()
        };
        assert!(refuse(chunk(&[1; 9], 0, &[0, 1], true)).contains("cannot hold 9 positions"));
        assert!(refuse(chunk(&[1], 0, &[8], true)).contains("block 8 out of range"));
        assert!(refuse(chunk(&[100], 0, &[0], true)).contains("token 100 out of vocabulary"));
        assert!(refuse(chunk(&[], 0, &[0], true)).contains("chunk 0: no tokens"));
    }

    #[test]
    fn an_empty_batch_is_an_empty_step() {
        let step = StepMetadata::build(&ForwardBatch::default(), CACHE, 100).expect("valid");
        assert_eq!(step.num_tokens(), 0);
        assert_eq!(step.num_seqs(), 0);
        assert_eq!(step.query_start, [0]);
    }
}
