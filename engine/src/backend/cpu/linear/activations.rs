//! Activations quantised per block of 32 to int8, once per matmul, for the integer dot
//! products of the quantised weight formats (as llama.cpp's Q8 activations): each block
//! keeps its scale `d = max|x| / 127` and the scaled sums of its values, which turn the
//! weights' offsets (Q4_0's centre, Q4_1's and the K-quants' minimums, Q6_K's centre)
//! into one multiply per block.
//!
//! Arrays are padded to whole groups of 8 blocks with zeros, so kernels read scales 8 at a
//! time and a padding block contributes exactly nothing.

pub(super) const BLOCK: usize = 32;
/// Blocks whose scales a kernel loads together (one 8-lane vector).
pub(super) const GROUP: usize = 8;

pub(super) struct QuantizedActivations {
    rows: usize,
    /// Padded blocks per row (a multiple of [`GROUP`]).
    blocks: usize,
    q: Vec<i8>,
    /// `d` of each block.
    scale: Vec<f32>,
    /// `d * Σ q` of each block.
    sum: Vec<f32>,
    /// `d * Σ q` of each half block of 16.
    sum16: Vec<f32>,
}

/// One row's blocks.
#[derive(Clone, Copy)]
pub(super) struct ActivationRow<'a> {
    pub q: &'a [i8],
    pub scale: &'a [f32],
    pub sum: &'a [f32],
    pub sum16: &'a [f32],
}

impl QuantizedActivations {
    /// Quantises `rows` rows of `cols` values (`cols` a multiple of 32).
    pub fn quantize(x: &[f32], rows: usize, cols: usize) -> Self {
        assert!(
            cols.is_multiple_of(BLOCK),
            "activations: {cols} is not whole blocks of {BLOCK}"
        );
        assert_eq!(x.len(), rows * cols, "activations: shape");
        let blocks = (cols / BLOCK).div_ceil(GROUP) * GROUP;
        let mut out = Self {
            rows,
            blocks,
            q: vec![0; rows * blocks * BLOCK],
            scale: vec![0.0; rows * blocks],
            sum: vec![0.0; rows * blocks],
            sum16: vec![0.0; rows * blocks * 2],
        };
        for r in 0..rows {
            let row = &x[r * cols..(r + 1) * cols];
            for (b, values) in row.chunks_exact(BLOCK).enumerate() {
                let at = r * blocks + b;
                let q = &mut out.q[at * BLOCK..(at + 1) * BLOCK];
                let d = quantize_block(values, q);
                let half_sum = |h: &[i8]| h.iter().map(|&v| v as i32).sum::<i32>();
                let (s0, s1) = (half_sum(&q[..16]), half_sum(&q[16..]));
                out.scale[at] = d;
                out.sum[at] = d * (s0 + s1) as f32;
                out.sum16[2 * at] = d * s0 as f32;
                out.sum16[2 * at + 1] = d * s1 as f32;
            }
        }
        out
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn row(&self, r: usize) -> ActivationRow<'_> {
        let b = self.blocks;
        ActivationRow {
            q: &self.q[r * b * BLOCK..(r + 1) * b * BLOCK],
            scale: &self.scale[r * b..(r + 1) * b],
            sum: &self.sum[r * b..(r + 1) * b],
            sum16: &self.sum16[2 * r * b..2 * (r + 1) * b],
        }
    }
}

/// Writes the int8 values of one block and returns its scale. Rounds half away from zero,
/// as llama.cpp's reference quantiser does; a block of zeros has scale 0.
fn quantize_block(values: &[f32], q: &mut [i8]) -> f32 {
    let amax = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inverse = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (q, v) in q.iter_mut().zip(values) {
        *q = (v * inverse).round().clamp(-127.0, 127.0) as i8;
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
        let a = QuantizedActivations::quantize(&x, 1, 64);
        let row = a.row(0);
        assert_eq!(row.scale.len(), 8, "padded to a group");
        assert_eq!(row.scale[0], 32.0 / 127.0);
        assert_eq!(row.q[0], -127);
        assert_eq!(row.scale[1], 2.0);
        assert_eq!(row.q[32 + 8], 127);
        assert_eq!(row.q[32], 0, "0 / 2 rounds to 0");
        let q_sum: i32 = row.q[..32].iter().map(|&v| v as i32).sum();
        assert_eq!(row.sum[0], row.scale[0] * q_sum as f32);
        assert!((row.sum16[0] + row.sum16[1] - row.sum[0]).abs() <= 1e-5 * row.sum[0].abs());
        assert_eq!(&row.scale[2..], &[0.0; 6], "padding blocks are zero");
    }

    #[test]
    fn a_block_of_zeros_quantises_to_zeros() {
        let a = QuantizedActivations::quantize(&[0.0; 32], 1, 32);
        assert_eq!(a.row(0).scale[0], 0.0);
        assert!(a.row(0).q.iter().all(|&q| q == 0));
    }
}
