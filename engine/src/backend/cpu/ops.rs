//! The CPU kernels a decoder layer is made of, each a plain function over f32 slices.

use gemm::{Parallelism, gemm};

use crate::model::Matrix;

/// `out[t] += x[t] · wᵀ` (when `accumulate`) or `out[t] = x[t] · wᵀ`, for `rows` rows of `x`
/// (`[rows, w.cols]`), with `w` in `nn.Linear` layout (`[out, in]`).
pub fn linear(x: &[f32], rows: usize, w: &Matrix, out: &mut [f32], accumulate: bool) {
    assert_eq!(x.len(), rows * w.cols, "linear: input shape");
    assert_eq!(out.len(), rows * w.rows, "linear: output shape");
    if rows == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the asserts above pin every slice to the extents the strides describe:
    // dst is rows × w.rows (row stride w.rows), lhs rows × w.cols (row stride w.cols), and
    // rhs = wᵀ is w.cols × w.rows read from w's row-major storage (column stride w.cols).
    unsafe {
        gemm(
            rows,
            w.rows,
            w.cols,
            out.as_mut_ptr(),
            1,
            w.rows as isize,
            accumulate,
            x.as_ptr(),
            1,
            w.cols as isize,
            w.data.as_ptr(),
            w.cols as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Root-mean-square normalisation of each `weight.len()`-wide row, scaled by `weight`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let width = weight.len();
    for (row, out_row) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let mean_square = row.iter().map(|v| v * v).sum::<f32>() / width as f32;
        let scale = 1.0 / (mean_square + eps).sqrt();
        for ((o, v), w) in out_row.iter_mut().zip(row).zip(weight) {
            *o = v * scale * w;
        }
    }
}

/// Rotary position embedding in Hugging Face's layout: each head's first half pairs with
/// its second half. `x` is `[tokens, heads, head_dim]`.
pub fn rope(x: &mut [f32], positions: &[usize], head_dim: usize, inv_freq: &[f32]) {
    let half = head_dim / 2;
    let per_token = x.len() / positions.len().max(1);
    let mut cos = vec![0.0f32; half];
    let mut sin = vec![0.0f32; half];
    for (token, &position) in x.chunks_exact_mut(per_token).zip(positions) {
        for (i, f) in inv_freq.iter().enumerate() {
            let angle = position as f32 * f;
            cos[i] = angle.cos();
            sin[i] = angle.sin();
        }
        for head in token.chunks_exact_mut(head_dim) {
            let (a, b) = head.split_at_mut(half);
            for i in 0..half {
                let (x1, x2) = (a[i], b[i]);
                a[i] = x1 * cos[i] - x2 * sin[i];
                b[i] = x2 * cos[i] + x1 * sin[i];
            }
        }
    }
}

/// `gate = silu(gate) * up`, in place: the SwiGLU activation.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_multiplies_by_the_transpose_and_can_accumulate() {
        // w = [[1, 2], [3, 4], [5, 6]] maps 2 inputs to 3 outputs.
        let w = Matrix::new(3, 2, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let x = [1.0, 1.0, 2.0, 0.0];
        let mut out = vec![0.0; 6];
        linear(&x, 2, &w, &mut out, false);
        assert_eq!(out, vec![3.0, 7.0, 11.0, 2.0, 6.0, 10.0]);
        linear(&x, 2, &w, &mut out, true);
        assert_eq!(out, vec![6.0, 14.0, 22.0, 4.0, 12.0, 20.0]);
    }

    #[test]
    fn rms_norm_makes_rows_unit_rms() {
        let mut out = vec![0.0; 4];
        rms_norm(&[3.0, 4.0, 0.0, 0.0], &[1.0, 1.0, 1.0, 1.0], 0.0, &mut out);
        let rms = (out.iter().map(|v| v * v).sum::<f32>() / 4.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-6);
    }

    #[test]
    fn rope_at_position_zero_is_the_identity_and_preserves_norm() {
        let original = vec![1.0, 2.0, 3.0, 4.0];
        let inv = [1.0, 0.01];
        let mut x = original.clone();
        rope(&mut x, &[0], 4, &inv);
        assert_eq!(x, original);
        rope(&mut x, &[7], 4, &inv);
        let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        assert!((norm(&x) - norm(&original)).abs() < 1e-4);
        assert_ne!(x, original);
    }
}
