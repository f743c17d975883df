//! Activations quantised per block of 32 to int8, once per matmul, for the integer dot
//! products of the quantised weight formats (as llama.cpp's Q8 activations): each block
//! keeps its scale `d = max|x| / 127` and the scaled sums of its values, which turn the
//! weights' offsets (Q4_0's centre, Q4_1's and the K-quants' minimums, Q6_K's centre)
//! into one multiply per block.
//!
//! The int8 values are stored in the interleaved order of [`interleaved`]: a group of 8
//! blocks is 8 vectors of 32 bytes, vector `v` holding values `4v..4v + 4` of each block.
//! One `vpdpbusd` per vector then adds 4 products of every block into that block's own
//! i32 lane, so after the group each lane holds one block's exact dot product, scaled
//! with one multiply-add for all 8. Rows whose blocks do not fill a last group keep those
//! blocks in plain order after the groups. Q6_K's scales cover 16 values, so it reads a
//! second copy interleaved by half-blocks of 16 ([`Grouping::HalfBlocks`]).

pub(super) const BLOCK: usize = 32;
/// Blocks interleaved together, and whose scales a kernel loads together.
pub(super) const GROUP: usize = 8;

/// Where value `t` of block `j` of a group goes: vector `t / 4`, lane `j`, byte `t % 4`.
pub(super) const fn interleaved(j: usize, t: usize) -> usize {
    (t / 4) * 32 + 4 * j + t % 4
}

/// How the int8 values of a row are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Grouping {
    /// Groups of 8 blocks of 32, a partial last group in plain order (Q8_0, Q4_0, Q4_1,
    /// Q4_K, Q5_K).
    Blocks,
    /// Groups of 8 half-blocks of 16 (Q6_K; rows are whole groups).
    HalfBlocks,
}

pub(super) struct QuantizedActivations {
    rows: usize,
    /// Blocks per row padded to whole groups: the length of a row's scale arrays.
    padded_blocks: usize,
    /// Bytes of a row's values, with a zero block after them (for odd Q4 tails).
    row_bytes: usize,
    q: Vec<i8>,
    /// `d` of each block.
    scale: Vec<f32>,
    /// `d * Σ q` of each block.
    sum: Vec<f32>,
    /// `d * Σ q` of each half block of 16.
    sum16: Vec<f32>,
    /// `Σ q` of each block.
    qsum: Vec<i32>,
}

/// One row's blocks.
#[derive(Clone, Copy)]
pub(super) struct ActivationRow<'a> {
    pub q: &'a [i8],
    pub scale: &'a [f32],
    pub sum: &'a [f32],
    pub sum16: &'a [f32],
    /// `Σ q` of each block.
    pub qsum: &'a [i32],
}

impl QuantizedActivations {
    /// Quantises `rows` rows of `cols` values (`cols` a multiple of 32).
    pub fn quantize(x: &[f32], rows: usize, cols: usize, grouping: Grouping) -> Self {
        assert!(
            cols.is_multiple_of(BLOCK),
            "activations: {cols} is not whole blocks of {BLOCK}"
        );
        assert_eq!(x.len(), rows * cols, "activations: shape");
        let blocks = cols / BLOCK;
        let padded_blocks = blocks.div_ceil(GROUP) * GROUP;
        let row_bytes = (blocks + 1) * BLOCK;
        let mut out = Self {
            rows,
            padded_blocks,
            row_bytes,
            q: vec![0; rows * row_bytes],
            scale: vec![0.0; rows * padded_blocks],
            sum: vec![0.0; rows * padded_blocks],
            sum16: vec![0.0; rows * padded_blocks * 2],
            qsum: vec![0; rows * padded_blocks],
        };
        let mut values = [0i8; BLOCK];
        for r in 0..rows {
            let row = &x[r * cols..(r + 1) * cols];
            let q_row = &mut out.q[r * row_bytes..(r + 1) * row_bytes];
            for (b, block) in row.chunks_exact(BLOCK).enumerate() {
                let d = quantize_block(block, &mut values);
                let half_sum = |h: &[i8]| h.iter().map(|&v| v as i32).sum::<i32>();
                let (s0, s1) = (half_sum(&values[..16]), half_sum(&values[16..]));
                let at = r * padded_blocks + b;
                out.scale[at] = d;
                out.sum[at] = d * (s0 + s1) as f32;
                out.sum16[2 * at] = d * s0 as f32;
                out.sum16[2 * at + 1] = d * s1 as f32;
                out.qsum[at] = s0 + s1;
                place_block(q_row, b, blocks, grouping, &values);
            }
        }
        out
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn row(&self, r: usize) -> ActivationRow<'_> {
        let b = self.padded_blocks;
        ActivationRow {
            q: &self.q[r * self.row_bytes..(r + 1) * self.row_bytes],
            scale: &self.scale[r * b..(r + 1) * b],
            sum: &self.sum[r * b..(r + 1) * b],
            sum16: &self.sum16[2 * r * b..2 * (r + 1) * b],
            qsum: &self.qsum[r * b..(r + 1) * b],
        }
    }
}

/// Writes block `b` (of `blocks` in the row) at its place in the grouping.
fn place_block(
    q_row: &mut [i8],
    b: usize,
    blocks: usize,
    grouping: Grouping,
    values: &[i8; BLOCK],
) {
    match grouping {
        Grouping::Blocks if b < blocks / GROUP * GROUP => {
            let group = &mut q_row[b / GROUP * GROUP * BLOCK..][..GROUP * BLOCK];
            for (t, &v) in values.iter().enumerate() {
                group[interleaved(b % GROUP, t)] = v;
            }
        }
        Grouping::Blocks => q_row[b * BLOCK..(b + 1) * BLOCK].copy_from_slice(values),
        Grouping::HalfBlocks => {
            for (half, h) in values.chunks_exact(16).enumerate() {
                let index = 2 * b + half;
                let group = &mut q_row[index / GROUP * GROUP * 16..][..GROUP * 16];
                for (t, &v) in h.iter().enumerate() {
                    group[interleaved(index % GROUP, t)] = v;
                }
            }
        }
    }
}

/// Writes the int8 values of one block and returns its scale. Rounds to nearest, ties to
/// even (as llama.cpp's SIMD quantisers do); a block of zeros has scale 0.
fn quantize_block(values: &[f32], q: &mut [i8; BLOCK]) -> f32 {
    /// `x + ROUND - ROUND` is `x` rounded to the nearest integer (ties to even) for
    /// `|x| < 2^22`: the sum has no bits below the units.
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23
    let mut amax = 0.0f32;
    for v in values {
        amax = amax.max(v.abs());
    }
    let d = amax / 127.0;
    let inverse = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (q, v) in q.iter_mut().zip(values) {
        // |v * inverse| <= 127 (plus rounding), so the conversion is exact.
        *q = ((v * inverse + ROUND) - ROUND) as i32 as i8;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_scale_to_127_and_keep_their_sums() {
        let mut x: Vec<f32> = (0..64).map(|i| i as f32 - 32.0).collect();
        x[40] = 254.0;
        let a = QuantizedActivations::quantize(&x, 1, 64, Grouping::Blocks);
        let row = a.row(0);
        assert_eq!(row.scale.len(), 8, "padded to a group");
        assert_eq!(row.scale[0], 32.0 / 127.0);
        // Two blocks do not fill a group: plain order.
        assert_eq!(row.q[0], -127);
        assert_eq!(row.scale[1], 2.0);
        assert_eq!(row.q[32 + 8], 127);
        assert_eq!(row.q[32], 0, "0 / 2 rounds to 0");
        let q_sum: i32 = row.q[..32].iter().map(|&v| v as i32).sum();
        assert_eq!(row.sum[0], row.scale[0] * q_sum as f32);
        assert!((row.sum16[0] + row.sum16[1] - row.sum[0]).abs() <= 1e-5 * row.sum[0].abs());
        assert_eq!(&row.scale[2..], &[0.0; 6], "padding blocks are zero");
        assert_eq!(&row.q[64..], &[0; 32], "a zero block follows the values");
    }

    #[test]
    fn whole_groups_are_interleaved_four_values_of_each_block_at_a_time() {
        // Block j holds the value j + 1 everywhere, scaled so each quantises to 127.
        let x: Vec<f32> = (0..8 * 32).map(|i| (i / 32 + 1) as f32).collect();
        let a = QuantizedActivations::quantize(&x, 1, 256, Grouping::Blocks);
        let row = a.row(0);
        assert!(row.q[..256].iter().all(|&v| v == 127));
        for j in 0..8 {
            assert_eq!(row.scale[j], (j + 1) as f32 / 127.0);
        }
        // A ramp inside block 3: value t is t + 1.
        let mut x = vec![0.0f32; 256];
        for t in 0..32 {
            x[3 * 32 + t] = (t + 1) as f32;
        }
        let a = QuantizedActivations::quantize(&x, 1, 256, Grouping::Blocks);
        let row = a.row(0);
        for t in 0..32 {
            let expected = ((t + 1) as f32 * 127.0 / 32.0).round() as i8;
            assert_eq!(row.q[interleaved(3, t)], expected, "value {t}");
        }
        assert_eq!(
            &row.q[4 * 3..4 * 3 + 4],
            &[4, 8, 12, 16],
            "vector 0, lane 3"
        );
    }

    #[test]
    fn half_block_grouping_interleaves_sixteen_at_a_time() {
        let mut x = vec![0.0f32; 256];
        for t in 0..16 {
            x[16 + t] = (t + 1) as f32; // half-block 1
        }
        let a = QuantizedActivations::quantize(&x, 1, 256, Grouping::HalfBlocks);
        let row = a.row(0);
        for t in 0..16 {
            assert_eq!(
                row.q[interleaved(1, t)],
                ((t + 1) as f32 * 127.0 / 16.0).round() as i8
            );
        }
    }

    #[test]
    fn a_block_of_zeros_quantises_to_zeros() {
        let a = QuantizedActivations::quantize(&[0.0; 32], 1, 32, Grouping::Blocks);
        assert_eq!(a.row(0).scale[0], 0.0);
        assert!(a.row(0).q.iter().all(|&q| q == 0));
    }
}
