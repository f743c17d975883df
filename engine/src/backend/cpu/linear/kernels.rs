//! The dot products of one weight row with a few activation rows, one kernel per weight
//! layout, generic over [`Simd`].
//!
//! Quantised formats multiply unsigned weight values by int8 activations 32 at a time
//! (`dot_u8_i8`: 8 lanes of 4 products), turn each block's 8 partial sums to floats and
//! accumulate them scaled by `d_weight * d_activation` — lane for lane, blocks in order —
//! then add the weights' offsets (minimums, centres) times the activations' block sums.
//! Float formats accumulate `w * x` in 8 lanes. A weight block is decoded once and used
//! for all `M` activation rows, and each (weight row, activation row) pair is computed by
//! exactly the same operations whatever `M` is: a row's result never depends on its batch.

use std::ops::Range;

use super::activations::{ActivationRow, BLOCK, GROUP, QuantizedActivations};
use super::packed::{Layout, PackedWeights, blocks};
use crate::backend::cpu::simd::{Simd, simd_dispatch};
use crate::weights::WeightFormat;

/// Activation rows in the form a layout's kernel reads.
#[derive(Clone, Copy)]
pub(super) enum Input<'a> {
    /// `rows × cols` f32 values, for float weights.
    Float { x: &'a [f32], rows: usize },
    /// For quantised weights.
    Quantized(&'a QuantizedActivations),
}

impl Input<'_> {
    fn rows(&self) -> usize {
        match self {
            Self::Float { rows, .. } => *rows,
            Self::Quantized(a) => a.rows(),
        }
    }
}

/// A pointer to the output matrix that worker threads share; each job writes its own
/// columns only.
#[derive(Clone, Copy)]
pub(super) struct OutPtr(pub *mut f32);
// SAFETY: jobs write disjoint columns of the output (see `Job`), and the matmul waits for
// all of them before the output is touched again.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `out[m][col0 + r] = w[r] · x[m]` (or `+=` when `accumulate`) for the weight rows `rows`
/// of `w` and every input row `m`. `out` is `input.rows() × out_stride`.
pub(super) struct Job<'a> {
    pub w: &'a PackedWeights,
    pub rows: Range<usize>,
    pub input: Input<'a>,
    pub out: OutPtr,
    pub out_stride: usize,
    pub col0: usize,
    pub accumulate: bool,
}

simd_dispatch!(
    /// Runs one job on `isa`.
    pub(super) fn run_job(job: &Job<'_>) => run
);

#[inline(always)]
fn run<S: Simd>(job: &Job<'_>) {
    let rows = job.input.rows();
    let mut m = 0;
    while m + 4 <= rows {
        tile::<S, 4>(job, m);
        m += 4;
    }
    while m < rows {
        tile::<S, 1>(job, m);
        m += 1;
    }
}

/// Input rows `m0..m0 + M` against every weight row of the job.
#[inline(always)]
fn tile<S: Simd, const M: usize>(job: &Job<'_>, m0: usize) {
    let w = job.w;
    let cols = w.cols;
    let (nb, nbp) = blocks(cols);
    let store = |r: usize, dots: [f32; M]| {
        for (i, dot) in dots.into_iter().enumerate() {
            let at = (m0 + i) * job.out_stride + job.col0 + r;
            // SAFETY: `at` is inside the `rows × out_stride` output, in a column only this
            // job writes.
            unsafe {
                let slot = job.out.0.add(at);
                *slot = if job.accumulate { *slot + dot } else { dot };
            }
        }
    };
    match (&w.layout, job.input) {
        (Layout::Float { format, data }, Input::Float { x, .. }) => {
            let row_bytes = format.block_bytes() * cols;
            let x: [&[f32]; M] = std::array::from_fn(|i| &x[(m0 + i) * cols..][..cols]);
            for r in job.rows.clone() {
                let row = &data[r * row_bytes..][..row_bytes];
                store(r, float_dots::<S, M>(*format, row, &x));
            }
        }
        (layout, Input::Quantized(acts)) => {
            let a: [ActivationRow<'_>; M] = std::array::from_fn(|i| acts.row(m0 + i));
            for r in job.rows.clone() {
                // SAFETY: every slice below is row `r` of an array `pack` sized for
                // `w.rows × (that array's row length)`, and the activation rows hold
                // `nbp` blocks, so every read the kernels make is in bounds.
                let dots = unsafe {
                    match layout {
                        Layout::Q8_0 { qs, d } => q8_0_dots::<S, M>(
                            &qs[r * nb * BLOCK..][..nb * BLOCK],
                            &d[r * nbp..][..nbp],
                            &a,
                        ),
                        Layout::Q4 { qs, d, m } => {
                            let pairs = nb.div_ceil(2) * BLOCK;
                            q4_dots::<S, M>(
                                &qs[r * pairs..][..pairs],
                                &d[r * nbp..][..nbp],
                                m.as_ref().map(|m| &m[r * nbp..][..nbp]),
                                nb,
                                &a,
                            )
                        }
                        Layout::K45 {
                            qs,
                            qh,
                            scales,
                            mins,
                            d,
                            dmin,
                        } => {
                            let nsb = cols / 256;
                            k45_dots::<S, M>(
                                K45Row {
                                    qs: &qs[r * nsb * 128..][..nsb * 128],
                                    qh: qh.as_ref().map(|qh| &qh[r * nsb * 32..][..nsb * 32]),
                                    scales: &scales[r * nsb * 8..][..nsb * 8],
                                    mins: &mins[r * nsb * 8..][..nsb * 8],
                                    d: &d[r * nsb..][..nsb],
                                    dmin: &dmin[r * nsb..][..nsb],
                                },
                                &a,
                            )
                        }
                        Layout::Q6K { ql, qh, scales, d } => {
                            let nsb = cols / 256;
                            q6_k_dots::<S, M>(
                                &ql[r * nsb * 128..][..nsb * 128],
                                &qh[r * nsb * 64..][..nsb * 64],
                                &scales[r * nsb * 16..][..nsb * 16],
                                &d[r * nsb..][..nsb],
                                &a,
                            )
                        }
                        Layout::Float { .. } => unreachable!("float weights take float input"),
                    }
                };
                store(r, dots);
            }
        }
        (_, Input::Float { .. }) => unreachable!("quantised weights take quantised input"),
    }
}

/// Float weights (f32, f16, bf16) against f32 rows: 8 lanes of fused multiply-adds; a
/// tail of fewer than 8 columns goes through the same lanes zero-padded.
#[inline(always)]
fn float_dots<S: Simd, const M: usize>(
    format: WeightFormat,
    row: &[u8],
    x: &[&[f32]; M],
) -> [f32; M] {
    let cols = x[0].len();
    let full = cols / 8 * 8;
    // SAFETY: `row` holds `cols` values of `format` and each `x[i]` `cols` floats; loads
    // read 8 values at offsets below `full`.
    unsafe {
        let load_w = |c: usize| match format {
            WeightFormat::F32 => S::load(row.as_ptr().add(4 * c).cast()),
            WeightFormat::F16 => S::load_f16(row.as_ptr().add(2 * c).cast()),
            _ => S::load_bf16(row.as_ptr().add(2 * c).cast()),
        };
        let mut acc = [S::zero(); M];
        for c in (0..full).step_by(8) {
            let w = load_w(c);
            for i in 0..M {
                acc[i] = S::fma(w, S::load(x[i].as_ptr().add(c)), acc[i]);
            }
        }
        if full < cols {
            let mut w_tail = [0.0f32; 8];
            crate::weights::dequantize::dequantize_row(
                format,
                &row[full * format.block_bytes()..],
                &mut w_tail[..cols - full],
            );
            let w = S::load(w_tail.as_ptr());
            for i in 0..M {
                let mut x_tail = [0.0f32; 8];
                x_tail[..cols - full].copy_from_slice(&x[i][full..]);
                acc[i] = S::fma(w, S::load(x_tail.as_ptr()), acc[i]);
            }
        }
        acc.map(|v| S::sum(v))
    }
}

/// `acc += dot(w, a_block) * scale`, the step every quantised kernel repeats per block.
#[inline(always)]
unsafe fn accumulate_block<S: Simd>(
    acc: S::Floats,
    w: S::Bytes,
    a_block: *const i8,
    scale: S::Floats,
) -> S::Floats {
    // SAFETY: the caller passes a block of 32 readable bytes.
    unsafe {
        let dot = S::dot_u8_i8(S::zero_ints(), w, S::load_bytes(a_block.cast()));
        S::fma(S::to_floats(dot), scale, acc)
    }
}

/// Q8_0: signed weights, so `|w|` meets `a` with `w`'s sign moved onto it.
#[inline(always)]
unsafe fn q8_0_dots<S: Simd, const M: usize>(
    qs: &[u8],
    d: &[u16],
    a: &[ActivationRow<'_>; M],
) -> [f32; M] {
    let nb = qs.len() / BLOCK;
    // SAFETY: `qs` holds `nb` blocks, `d` and every activation row `nb` rounded up to a
    // group.
    unsafe {
        let mut acc = [S::zero(); M];
        for g in 0..nb.div_ceil(GROUP) {
            let dw = S::load_f16(d.as_ptr().add(g * GROUP));
            let ws: [S::Floats; M] =
                std::array::from_fn(|i| S::mul(dw, S::load(a[i].scale.as_ptr().add(g * GROUP))));
            for j in 0..GROUP.min(nb - g * GROUP) {
                let b = g * GROUP + j;
                let w = S::load_bytes(qs.as_ptr().add(b * BLOCK));
                let w_abs = S::abs_i8(w);
                for i in 0..M {
                    let x = S::sign_i8(S::load_bytes(a[i].q.as_ptr().add(b * BLOCK).cast()), w);
                    let dot = S::dot_u8_i8(S::zero_ints(), w_abs, x);
                    acc[i] = S::fma(S::to_floats(dot), S::broadcast_lane(ws[i], j), acc[i]);
                }
            }
        }
        acc.map(|v| S::sum(v))
    }
}

/// Q4_0 and Q4_1: one load gives a pair of blocks (low and high nibbles). The offset of a
/// block is its minimum (Q4_1) or `-8 d` (Q4_0), applied through the activations' sums.
#[inline(always)]
unsafe fn q4_dots<S: Simd, const M: usize>(
    qs: &[u8],
    d: &[u16],
    m: Option<&[u16]>,
    nb: usize,
    a: &[ActivationRow<'_>; M],
) -> [f32; M] {
    // SAFETY: `qs` holds `nb` blocks in pairs, `d`, `m` and the activation rows `nb`
    // rounded up to a group (zeros past `nb`), so the second block of a last odd pair
    // reads zeros and adds nothing.
    unsafe {
        let low = S::splat_byte(0x0F);
        let mut acc = [S::zero(); M];
        let mut off = [S::zero(); M];
        for g in 0..nb.div_ceil(GROUP) {
            let dw = S::load_f16(d.as_ptr().add(g * GROUP));
            let cw = match m {
                Some(m) => S::load_f16(m.as_ptr().add(g * GROUP)),
                None => S::mul(dw, S::splat(-8.0)),
            };
            let mut ws = [S::zero(); M];
            for i in 0..M {
                ws[i] = S::mul(dw, S::load(a[i].scale.as_ptr().add(g * GROUP)));
                off[i] = S::fma(cw, S::load(a[i].sum.as_ptr().add(g * GROUP)), off[i]);
            }
            let pairs = GROUP.min(nb - g * GROUP).div_ceil(2);
            for p in 0..pairs {
                let bytes = S::load_bytes(qs.as_ptr().add((g * GROUP / 2 + p) * BLOCK));
                let lo = S::and(bytes, low);
                let hi = S::and(S::shr16::<4>(bytes), low);
                let b = g * GROUP + 2 * p;
                for i in 0..M {
                    let q = a[i].q.as_ptr().add(b * BLOCK);
                    acc[i] = accumulate_block::<S>(acc[i], lo, q, S::broadcast_lane(ws[i], 2 * p));
                    acc[i] = accumulate_block::<S>(
                        acc[i],
                        hi,
                        q.add(BLOCK),
                        S::broadcast_lane(ws[i], 2 * p + 1),
                    );
                }
            }
        }
        std::array::from_fn(|i| S::sum(acc[i]) + S::sum(off[i]))
    }
}

/// One row of Q4_K (`qh: None`) or Q5_K weights.
struct K45Row<'a> {
    qs: &'a [u8],
    qh: Option<&'a [u8]>,
    scales: &'a [u8],
    mins: &'a [u8],
    d: &'a [u16],
    dmin: &'a [u16],
}

/// Q4_K and Q5_K: a super-block of 256 is one group of 8 sub-blocks, each with its own
/// 6-bit scale and minimum times the super-block's `d` and `dmin`.
#[inline(always)]
unsafe fn k45_dots<S: Simd, const M: usize>(w: K45Row<'_>, a: &[ActivationRow<'_>; M]) -> [f32; M] {
    let h = |bits: u16| half::f16::from_bits(bits).to_f32();
    // SAFETY: the row holds `d.len()` super-blocks of every array; activation rows hold
    // 8 blocks per super-block.
    unsafe {
        let low = S::splat_byte(0x0F);
        let bit4 = S::splat_byte(0x10);
        let mut acc = [S::zero(); M];
        let mut off = [S::zero(); M];
        for s in 0..w.d.len() {
            let dsc = S::mul(
                S::load_u8(w.scales.as_ptr().add(8 * s)),
                S::splat(h(w.d[s])),
            );
            let dmn = S::mul(
                S::load_u8(w.mins.as_ptr().add(8 * s)),
                S::splat(-h(w.dmin[s])),
            );
            let mut ws = [S::zero(); M];
            for i in 0..M {
                ws[i] = S::mul(dsc, S::load(a[i].scale.as_ptr().add(8 * s)));
                off[i] = S::fma(dmn, S::load(a[i].sum.as_ptr().add(8 * s)), off[i]);
            }
            let mut high_bits = w.qh.map(|qh| S::load_bytes(qh.as_ptr().add(32 * s)));
            for p in 0..4 {
                let bytes = S::load_bytes(w.qs.as_ptr().add(128 * s + 32 * p));
                let mut lo = S::and(bytes, low);
                let mut hi = S::and(S::shr16::<4>(bytes), low);
                if let Some(bits) = high_bits {
                    // Bits 2p and 2p + 1 of each qh byte (shifted down to 0 and 1 by the
                    // previous pairs) are the fifth bits of the two sub-blocks.
                    lo = S::or(lo, S::and(S::shl16::<4>(bits), bit4));
                    hi = S::or(hi, S::and(S::shl16::<3>(bits), bit4));
                    high_bits = Some(S::shr16::<2>(bits));
                }
                let b = 8 * s + 2 * p;
                for i in 0..M {
                    let q = a[i].q.as_ptr().add(b * BLOCK);
                    acc[i] = accumulate_block::<S>(acc[i], lo, q, S::broadcast_lane(ws[i], 2 * p));
                    acc[i] = accumulate_block::<S>(
                        acc[i],
                        hi,
                        q.add(BLOCK),
                        S::broadcast_lane(ws[i], 2 * p + 1),
                    );
                }
            }
        }
        std::array::from_fn(|i| S::sum(acc[i]) + S::sum(off[i]))
    }
}

/// Q6_K: 6-bit values from a low nibble and a pair of high bits, centred on 32 (applied
/// through the activations' half-block sums), a signed scale per 16 values.
#[inline(always)]
unsafe fn q6_k_dots<S: Simd, const M: usize>(
    ql: &[u8],
    qh: &[u8],
    scales: &[u8],
    d: &[u16],
    a: &[ActivationRow<'_>; M],
) -> [f32; M] {
    let h = |bits: u16| half::f16::from_bits(bits).to_f32();
    // SAFETY: the row holds `d.len()` super-blocks of every array; activation rows hold
    // 8 blocks (16 half-block sums) per super-block.
    unsafe {
        let low = S::splat_byte(0x0F);
        let two_bits = S::splat_byte(0x30);
        // A block's lanes 0-3 (values 0-15) take the scale of its first half, lanes 4-7
        // its second: these pick them out of 8 half-block scales.
        let pick: [S::Ints; 4] = std::array::from_fn(|k| {
            let (x, y) = (2 * k as i32, 2 * k as i32 + 1);
            S::ints([x, x, x, x, y, y, y, y])
        });
        let pairs_low = S::ints([0, 0, 1, 1, 2, 2, 3, 3]);
        let pairs_high = S::ints([4, 4, 5, 5, 6, 6, 7, 7]);
        let mut acc = [S::zero(); M];
        let mut off = [S::zero(); M];
        for s in 0..d.len() {
            let scale_d = S::splat(h(d[s]));
            let sc = scales.as_ptr().add(16 * s).cast::<i8>();
            // Scales of half-blocks 0-7 (blocks 0-3) and 8-15 (blocks 4-7).
            let dsc = [
                S::mul(S::load_i8(sc), scale_d),
                S::mul(S::load_i8(sc.add(8)), scale_d),
            ];
            let centre = S::splat(-32.0);
            let mut ws = [[S::zero(); 2]; M];
            for i in 0..M {
                let da = S::load(a[i].scale.as_ptr().add(8 * s));
                ws[i] = [
                    S::mul(dsc[0], S::permute(da, pairs_low)),
                    S::mul(dsc[1], S::permute(da, pairs_high)),
                ];
                let sums = a[i].sum16.as_ptr().add(16 * s);
                off[i] = S::fma(S::mul(dsc[0], centre), S::load(sums), off[i]);
                off[i] = S::fma(S::mul(dsc[1], centre), S::load(sums.add(8)), off[i]);
            }
            for n in 0..2 {
                let ql_a = S::load_bytes(ql.as_ptr().add(128 * s + 64 * n));
                let ql_b = S::load_bytes(ql.as_ptr().add(128 * s + 64 * n + 32));
                let bits = S::load_bytes(qh.as_ptr().add(64 * s + 32 * n));
                let values = [
                    S::or(S::and(ql_a, low), S::and(S::shl16::<4>(bits), two_bits)),
                    S::or(S::and(ql_b, low), S::and(S::shl16::<2>(bits), two_bits)),
                    S::or(S::and(S::shr16::<4>(ql_a), low), S::and(bits, two_bits)),
                    S::or(
                        S::and(S::shr16::<4>(ql_b), low),
                        S::and(S::shr16::<2>(bits), two_bits),
                    ),
                ];
                for (k, &w) in values.iter().enumerate() {
                    let block = 4 * n + k;
                    for i in 0..M {
                        let q = a[i].q.as_ptr().add((8 * s + block) * BLOCK);
                        let scale = S::permute(ws[i][n], pick[k]);
                        acc[i] = accumulate_block::<S>(acc[i], w, q, scale);
                    }
                }
            }
        }
        std::array::from_fn(|i| S::sum(acc[i]) + S::sum(off[i]))
    }
}
