//! CUDA graphs for decode steps: which batch sizes get a recorded graph, and how a decode
//! step is padded up to one.
//!
//! A graph replays the kernel launches it recorded with the same arguments, so a step must
//! have the same shape (and the same buffer addresses, which the workspace guarantees for a
//! given shape) as when it was recorded. Decode steps, one token per sequence, are padded
//! to the next bucket: padded rows read token 0 at position 0, write no cache slot and
//! attend to nothing, and their logits are dropped.

use crate::backend::step::StepMetadata;

/// The slot a padded row writes its key and value to: none (the kernels' `SKIP_SLOT`).
pub const SKIP_SLOT: u32 = u32::MAX;

/// Batch sizes with a graph, ascending: 1, 2, 4, then every 8 up to 256, then every 16,
/// up to `max_num_seqs`, which is always the last.
pub fn decode_buckets(max_num_seqs: usize) -> Vec<usize> {
    let mut buckets: Vec<usize> = [1, 2, 4]
        .into_iter()
        .chain((8..=256).step_by(8))
        .chain((272..).step_by(16).take_while(|&b| b < max_num_seqs))
        .filter(|&b| b < max_num_seqs)
        .collect();
    if max_num_seqs > 0 {
        buckets.push(max_num_seqs);
    }
    buckets
}

/// The smallest bucket holding `num_seqs` sequences.
pub fn bucket_for(buckets: &[usize], num_seqs: usize) -> Option<usize> {
    buckets.iter().copied().find(|&b| b >= num_seqs)
}

/// Whether a step is a decode step a graph can run: every sequence feeds one token and
/// wants its logits.
pub fn is_decode_step(meta: &StepMetadata) -> bool {
    let seqs = meta.num_seqs();
    seqs > 0 && meta.num_tokens() == seqs && meta.logits_rows.len() == seqs
}

/// The decode step `meta` padded to `bucket` sequences (see the module's notes).
pub fn pad_decode_step(meta: &StepMetadata, bucket: usize) -> StepMetadata {
    let pad = bucket.saturating_sub(meta.num_seqs());
    let mut padded = meta.clone();
    let first = meta.num_seqs() as u32;
    padded.token_ids.extend(std::iter::repeat_n(0, pad));
    padded.positions.extend(std::iter::repeat_n(0, pad));
    padded
        .slot_mapping
        .extend(std::iter::repeat_n(SKIP_SLOT, pad));
    padded.context_lens.extend(std::iter::repeat_n(0, pad));
    padded
        .block_tables
        .extend(std::iter::repeat_n(0, pad * meta.max_blocks_per_seq));
    for i in 0..pad as u32 {
        padded.query_start.push(first + i + 1);
        padded.logits_rows.push(first + i);
    }
    padded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{ForwardBatch, KvCacheShape, SequenceChunk};

    #[test]
    fn buckets_are_powers_of_two_then_steps_of_8_then_16_and_end_at_the_maximum() {
        let b = decode_buckets(256);
        assert_eq!(&b[..5], &[1, 2, 4, 8, 16]);
        assert_eq!(b.last(), Some(&256));
        assert_eq!(b.len(), 3 + 32);
        let b = decode_buckets(320);
        assert_eq!(&b[b.len() - 4..], &[272, 288, 304, 320]);
        assert_eq!(decode_buckets(20), vec![1, 2, 4, 8, 16, 20]);
        assert_eq!(decode_buckets(1), vec![1]);
        assert!(decode_buckets(0).is_empty());
        for max in [3, 64, 100, 256, 300, 512] {
            let b = decode_buckets(max);
            assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
            assert_eq!(b.last(), Some(&max));
        }
    }

    #[test]
    fn a_batch_rounds_up_to_its_bucket_and_none_holds_more_than_the_maximum() {
        let b = decode_buckets(64);
        assert_eq!(bucket_for(&b, 1), Some(1));
        assert_eq!(bucket_for(&b, 3), Some(4));
        assert_eq!(bucket_for(&b, 9), Some(16));
        assert_eq!(bucket_for(&b, 64), Some(64));
        assert_eq!(bucket_for(&b, 65), None);
    }

    fn decode_batch(contexts: &[usize]) -> StepMetadata {
        let chunks = contexts
            .iter()
            .enumerate()
            .map(|(i, &len)| SequenceChunk {
                token_ids: vec![7 + i as u32],
                start_position: len - 1,
                block_table: (0..len.div_ceil(4) as u32)
                    .map(|b| b + 4 * i as u32)
                    .collect(),
                needs_logits: true,
                every_token_logits: false,
            })
            .collect();
        let shape = KvCacheShape {
            num_blocks: 64,
            block_size: 4,
        };
        StepMetadata::build(&ForwardBatch { chunks }, shape, 100).expect("valid")
    }

    #[test]
    fn padded_rows_write_nothing_attend_to_nothing_and_come_after_the_real_ones() {
        let meta = decode_batch(&[5, 9, 2]);
        assert!(is_decode_step(&meta));
        let padded = pad_decode_step(&meta, 4);
        assert!(is_decode_step(&padded));
        assert_eq!(padded.num_seqs(), 4);
        assert_eq!(padded.token_ids[..3], meta.token_ids[..]);
        assert_eq!(padded.slot_mapping[3], SKIP_SLOT);
        assert_eq!(padded.context_lens[3], 0);
        assert_eq!(padded.query_start, [0, 1, 2, 3, 4]);
        assert_eq!(padded.logits_rows, [0, 1, 2, 3]);
        assert_eq!(padded.block_tables.len(), 4 * meta.max_blocks_per_seq);
        assert!(padded.block_table(3).is_empty());
        assert_eq!(pad_decode_step(&meta, 3), meta);
    }

    #[test]
    fn prefill_steps_and_steps_without_logits_are_not_decode_steps() {
        let shape = KvCacheShape {
            num_blocks: 8,
            block_size: 4,
        };
        let prefill = ForwardBatch {
            chunks: vec![SequenceChunk {
                token_ids: vec![1, 2],
                start_position: 0,
                block_table: vec![0],
                needs_logits: true,
                every_token_logits: false,
            }],
        };
        let meta = StepMetadata::build(&prefill, shape, 10).expect("valid");
        assert!(!is_decode_step(&meta));
        let middle = ForwardBatch {
            chunks: vec![SequenceChunk {
                token_ids: vec![1],
                start_position: 0,
                block_table: vec![0],
                needs_logits: false,
                every_token_logits: false,
            }],
        };
        let meta = StepMetadata::build(&middle, shape, 10).expect("valid");
        assert!(!is_decode_step(&meta));
        assert!(!is_decode_step(
            &StepMetadata::build(&ForwardBatch::default(), shape, 10).expect("valid")
        ));
    }
}
