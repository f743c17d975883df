//! The element-wise kernels of a decoder layer, each a plain function over f32 rows.
//! They are a small share of a step's time next to the matmuls and attention.

use super::simd::math::exp;
use super::simd::{Simd, simd_dispatch};

/// Root-mean-square normalisation of each `weight.len()`-wide row, scaled by `weight`.
pub(super) fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let width = weight.len();
    for (row, out_row) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        let mean_square = row.iter().map(|v| v * v).sum::<f32>() / width as f32;
        let scale = 1.0 / (mean_square + eps).sqrt();
        for ((o, v), w) in out_row.iter_mut().zip(row).zip(weight) {
            *o = v * scale * w;
        }
    }
}

/// Rotary position embedding in Hugging Face's layout of the `heads` heads at the start of
/// `row`: within each head, the first `2 · cos.len()` values rotate (the rest pass through),
/// value `i` paired with value `i + cos.len()`.
pub(super) fn rope(row: &mut [f32], heads: usize, head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    for head in row[..heads * head_dim].chunks_exact_mut(head_dim) {
        let (a, b) = head[..2 * half].split_at_mut(half);
        for i in 0..half {
            let (x1, x2) = (a[i], b[i]);
            a[i] = x1 * cos[i] - x2 * sin[i];
            b[i] = x2 * cos[i] + x1 * sin[i];
        }
    }
}

/// The rotation angles of `position`: `cos` and `sin` of `position * inv_freq[i]`.
pub(super) fn rope_angles(position: u32, inv_freq: &[f32], cos: &mut [f32], sin: &mut [f32]) {
    for ((c, s), f) in cos.iter_mut().zip(sin.iter_mut()).zip(inv_freq) {
        let angle = position as f32 * f;
        *c = angle.cos();
        *s = angle.sin();
    }
}

simd_dispatch!(
    /// SwiGLU over rows of `[gate | up]`, each half `width` wide: `out = silu(gate) * up`.
    pub(super) fn silu_mul(gate_up: &[f32], width: usize, out: &mut [f32]) => silu_mul_rows
);

#[inline(always)]
fn silu_mul_rows<S: Simd>(gate_up: &[f32], width: usize, out: &mut [f32]) {
    let full = width / 8 * 8;
    for (row, out_row) in gate_up
        .chunks_exact(2 * width)
        .zip(out.chunks_exact_mut(width))
    {
        let (gate, up) = row.split_at(width);
        for c in (0..full).step_by(8) {
            // SAFETY: `c + 8 <= full <= width`, the length of `gate`, `up` and `out_row`.
            unsafe {
                let g = S::load(gate.as_ptr().add(c));
                let denominator = S::add(S::splat(1.0), exp::<S>(S::mul(g, S::splat(-1.0))));
                let silu = S::div(g, denominator);
                S::store(
                    out_row.as_mut_ptr().add(c),
                    S::mul(silu, S::load(up.as_ptr().add(c))),
                );
            }
        }
        for c in full..width {
            out_row[c] = gate[c] / (1.0 + (-gate[c]).exp()) * up[c];
        }
    }
}

/// GeGLU over rows of `[gate | up]`, each half `width` wide: `out = gelu(gate) * up`, with
/// GELU's tanh approximation (PyTorch's `gelu(approximate="tanh")`).
pub(super) fn gelu_tanh_mul(gate_up: &[f32], width: usize, out: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for (row, out_row) in gate_up
        .chunks_exact(2 * width)
        .zip(out.chunks_exact_mut(width))
    {
        let (gate, up) = row.split_at(width);
        for ((o, &g), &u) in out_row.iter_mut().zip(gate).zip(up) {
            let inner = SQRT_2_OVER_PI * (g + 0.044_715 * g * g * g);
            *o = 0.5 * g * (1.0 + inner.tanh()) * u;
        }
    }
}

/// Per `head_dim` chunk of the first `heads` heads of `row`, RMS normalisation by `weight`.
pub(super) fn head_rms_norm(row: &mut [f32], heads: usize, weight: &[f32], eps: f32) {
    let head_dim = weight.len();
    for head in row[..heads * head_dim].chunks_exact_mut(head_dim) {
        let mean_square = head.iter().map(|v| v * v).sum::<f32>() / head_dim as f32;
        let scale = 1.0 / (mean_square + eps).sqrt();
        for (v, w) in head.iter_mut().zip(weight) {
            *v *= scale * w;
        }
    }
}

pub(super) fn add_bias(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::simd::Isa;
    use super::*;

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
        let (mut cos, mut sin) = ([0.0; 2], [0.0; 2]);
        let mut x = original.clone();
        rope_angles(0, &inv, &mut cos, &mut sin);
        rope(&mut x, 1, 4, &cos, &sin);
        assert_eq!(x, original);
        rope_angles(7, &inv, &mut cos, &mut sin);
        rope(&mut x, 1, 4, &cos, &sin);
        let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        assert!((norm(&x) - norm(&original)).abs() < 1e-4);
        assert_ne!(x, original);
    }

    #[test]
    fn silu_mul_gates_each_row_by_its_own_half_the_same_on_every_path() {
        let width = 20; // two vectors and a tail
        let gate_up: Vec<f32> = (0..4 * width).map(|i| (i as f32 - 37.0) / 5.0).collect();
        let silu = |x: f32| x / (1.0 + (-x).exp());
        let mut reference = vec![0.0; 2 * width];
        silu_mul(Isa::Portable, &gate_up, width, &mut reference);
        for r in 0..2 {
            for c in 0..width {
                let (g, u) = (gate_up[2 * r * width + c], gate_up[(2 * r + 1) * width + c]);
                let got = reference[r * width + c];
                assert!(
                    (got - silu(g) * u).abs() <= 1e-6 * (1.0 + got.abs()),
                    "{r},{c}"
                );
            }
        }
        for isa in Isa::supported() {
            let mut out = vec![0.0; 2 * width];
            silu_mul(isa, &gate_up, width, &mut out);
            assert_eq!(out, reference, "{isa}");
        }
    }
}
