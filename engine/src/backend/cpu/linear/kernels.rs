//! The dot products of one weight row with a few activation rows, one kernel per weight
//! layout, generic over [`Simd`].
//!
//! Quantised formats: weights and activations are both in the interleaved order of
//! [`super::activations`], so `dot_u8_i8` on vector `v` of a group adds values
//! `4v..4v + 4` of each of the group's 8 blocks into that block's i32 lane. After the
//! group's vectors each lane holds one block's exact integer dot product; one conversion
//! and one fused multiply-add by `d_weight * d_activation` (8 blocks at once) add them to
//! the float accumulator. The weights' offsets (minimums, centres) are added through the
//! activations' block sums, 8 blocks per multiply-add. A row's partial last group (fewer
//! than 8 blocks, in plain order) goes block by block, each block's 8 lanes of 4 products
//! scaled by its own `d`. Float formats accumulate `w * x` in 8 lanes.
//!
//! A weight row is decoded once for all `M` activation rows, and each (weight row,
//! activation row) pair is computed by exactly the same operations whatever `M` is: a
//! row's result never depends on its batch.

use std::ops::Range;

use super::activations::{ActivationRow, BLOCK, GROUP, QuantizedActivations};
use super::packed::{Layout, PackedWeights, RowBlocks};
use crate::backend::cpu::simd::{Simd, simd_dispatch};
use crate::weights::WeightFormat;

/// Activation rows in the form a layout's kernel reads.
#[derive(Clone, Copy)]
pub(super) enum Input<'a> {
    /// `rows × cols` f32 values, for float weights.
    Float { x: &'a [f32], rows: usize },
    /// For quantised weights, grouped as the layout needs.
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
    while S::ROWS_PER_TILE == 8 && m + 8 <= rows {
        tile::<S, 8>(job, m);
        m += 8;
    }
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
    let rb = RowBlocks::of(cols);
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
                // SAFETY: every slice below is row `r` of an array packed for
                // `w.rows × (that array's row length)`, and the activation rows hold the
                // same blocks (plus zero padding), so every read the kernels make is in
                // bounds.
                let dots = unsafe {
                    match layout {
                        Layout::Q8_0 { qs, d } => q8_0_dots::<S, M>(
                            &qs[r * rb.blocks * BLOCK..][..rb.blocks * BLOCK],
                            &d[r * rb.padded..][..rb.padded],
                            rb,
                            &a,
                        ),
                        Layout::Q4 { qs, d, m } => q4_dots::<S, M>(
                            &qs[r * rb.q4_bytes()..][..rb.q4_bytes()],
                            &d[r * rb.padded..][..rb.padded],
                            m.as_ref().map(|m| &m[r * rb.padded..][..rb.padded]),
                            rb,
                            &a,
                        ),
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
        let mut acc = [S::zero(); M];
        for c in (0..full).step_by(8) {
            let w = match format {
                WeightFormat::F32 => S::load(row.as_ptr().add(4 * c).cast()),
                WeightFormat::F16 => S::load_f16(row.as_ptr().add(2 * c).cast()),
                _ => S::load_bf16(row.as_ptr().add(2 * c).cast()),
            };
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
        let mut out = [0.0; M];
        for i in 0..M {
            out[i] = S::sum(acc[i]);
        }
        out
    }
}

/// Activation row `i`'s values at byte `at`.
#[inline(always)]
unsafe fn act<S: Simd>(a: &ActivationRow<'_>, at: usize) -> S::Bytes {
    // SAFETY: the caller keeps `at + 32` within the row.
    unsafe { S::load_bytes(a.q.as_ptr().add(at).cast()) }
}

/// One plain-order block of a partial group: `acc += dot(w, a) * scale`, 8 lanes of 4
/// products each.
#[inline(always)]
unsafe fn accumulate_block<S: Simd>(
    acc: S::Floats,
    w: S::Bytes,
    a: S::Bytes,
    scale: S::Floats,
) -> S::Floats {
    // SAFETY: register operations only.
    unsafe {
        let dot = S::dot_u8_i8(S::zero_ints(), w, a);
        S::fma(S::to_floats(dot), scale, acc)
    }
}

/// Q8_0: weights are stored offset by 128 as unsigned bytes. Where `dot_u8_i8` is exact
/// for any byte, the offset comes back out of each block's sum as `128 Σ a`; otherwise the
/// signed weight is restored and `|w|` meets `a` with `w`'s sign moved onto it. Either
/// way each block's integer sum is exact, so both give the same bits.
#[inline(always)]
unsafe fn q8_0_dots<S: Simd, const M: usize>(
    qs: &[u8],
    d: &[u16],
    rb: RowBlocks,
    a: &[ActivationRow<'_>; M],
) -> [f32; M] {
    // SAFETY: `qs` holds the row's blocks, `d` and every activation row's scales and sums
    // `rb.padded` entries; activation values are laid out as the weights are.
    unsafe {
        let bias = S::splat_byte(0x80);
        let mut acc = [S::zero(); M];
        for g in 0..rb.grouped / GROUP {
            let dw = S::load_f16(d.as_ptr().add(g * GROUP));
            let mut sums = [[S::zero_ints(); 2]; M];
            for v in 0..GROUP {
                let w = S::load_bytes(qs.as_ptr().add(g * 256 + 32 * v));
                if S::DOT_TAKES_FULL_BYTES {
                    for i in 0..M {
                        let x = act::<S>(&a[i], g * 256 + 32 * v);
                        sums[i][v % 2] = S::dot_u8_i8(sums[i][v % 2], w, x);
                    }
                } else {
                    let signed = S::xor(w, bias);
                    let w_abs = S::abs_i8(signed);
                    for i in 0..M {
                        let x = S::sign_i8(act::<S>(&a[i], g * 256 + 32 * v), signed);
                        sums[i][v % 2] = S::dot_u8_i8(sums[i][v % 2], w_abs, x);
                    }
                }
            }
            for i in 0..M {
                let mut block_sums = S::add_ints(sums[i][0], sums[i][1]);
                if S::DOT_TAKES_FULL_BYTES {
                    let offset = S::shl_ints::<7>(S::load_ints(a[i].qsum.as_ptr().add(g * GROUP)));
                    block_sums = S::sub_ints(block_sums, offset);
                }
                let scale = S::mul(dw, S::load(a[i].scale.as_ptr().add(g * GROUP)));
                acc[i] = S::fma(S::to_floats(block_sums), scale, acc[i]);
            }
        }
        let mut tail = [S::zero(); M];
        if rb.grouped < rb.blocks {
            let dw = S::load_f16(d.as_ptr().add(rb.grouped));
            let mut ws = [S::zero(); M];
            for i in 0..M {
                ws[i] = S::mul(dw, S::load(a[i].scale.as_ptr().add(rb.grouped)));
            }
            for b in rb.grouped..rb.blocks {
                let signed = S::xor(S::load_bytes(qs.as_ptr().add(b * BLOCK)), bias);
                let w_abs = S::abs_i8(signed);
                for i in 0..M {
                    let x = S::sign_i8(act::<S>(&a[i], b * BLOCK), signed);
                    let scale = S::broadcast_lane(ws[i], b - rb.grouped);
                    tail[i] = accumulate_block::<S>(tail[i], w_abs, x, scale);
                }
            }
        }
        let mut out = [0.0; M];
        for i in 0..M {
            out[i] = S::sum(acc[i]) + S::sum(tail[i]);
        }
        out
    }
}

/// Q4_0 and Q4_1: one load gives two vectors of a group (low and high nibbles). The
/// offset of a block is its minimum (Q4_1) or `-8 d` (Q4_0).
#[inline(always)]
unsafe fn q4_dots<S: Simd, const M: usize>(
    qs: &[u8],
    d: &[u16],
    m: Option<&[u16]>,
    rb: RowBlocks,
    a: &[ActivationRow<'_>; M],
) -> [f32; M] {
    // SAFETY: as q8_0_dots; a partial group's last odd block pairs with zero nibbles and
    // reads the zero block that follows every activation row.
    unsafe {
        let low = S::splat_byte(0x0F);
        let mut acc = [S::zero(); M];
        let mut off = [S::zero(); M];
        for g in 0..rb.grouped / GROUP {
            let (dw, cw) = q4_scales::<S>(d, m, g);
            let mut sums = [[S::zero_ints(); 2]; M];
            for v in 0..4 {
                let bytes = S::load_bytes(qs.as_ptr().add(g * 128 + 32 * v));
                let lo = S::and(bytes, low);
                let hi = S::and(S::shr16::<4>(bytes), low);
                for i in 0..M {
                    sums[i][0] = S::dot_u8_i8(sums[i][0], lo, act::<S>(&a[i], g * 256 + 32 * v));
                    sums[i][1] =
                        S::dot_u8_i8(sums[i][1], hi, act::<S>(&a[i], g * 256 + 32 * (v + 4)));
                }
            }
            for i in 0..M {
                let scale = S::mul(dw, S::load(a[i].scale.as_ptr().add(g * GROUP)));
                let blocks = S::to_floats(S::add_ints(sums[i][0], sums[i][1]));
                acc[i] = S::fma(blocks, scale, acc[i]);
                off[i] = S::fma(cw, S::load(a[i].sum.as_ptr().add(g * GROUP)), off[i]);
            }
        }
        let mut tail = [S::zero(); M];
        if rb.grouped < rb.blocks {
            let (dw, cw) = q4_scales::<S>(d, m, rb.grouped / GROUP);
            let mut ws = [S::zero(); M];
            for i in 0..M {
                ws[i] = S::mul(dw, S::load(a[i].scale.as_ptr().add(rb.grouped)));
                off[i] = S::fma(cw, S::load(a[i].sum.as_ptr().add(rb.grouped)), off[i]);
            }
            let pairs = (rb.blocks - rb.grouped).div_ceil(2);
            for p in 0..pairs {
                let bytes = S::load_bytes(qs.as_ptr().add(rb.grouped * 16 + p * BLOCK));
                let lo = S::and(bytes, low);
                let hi = S::and(S::shr16::<4>(bytes), low);
                let b = rb.grouped + 2 * p;
                for i in 0..M {
                    let (x0, x1) = (act::<S>(&a[i], b * BLOCK), act::<S>(&a[i], (b + 1) * BLOCK));
                    tail[i] =
                        accumulate_block::<S>(tail[i], lo, x0, S::broadcast_lane(ws[i], 2 * p));
                    tail[i] =
                        accumulate_block::<S>(tail[i], hi, x1, S::broadcast_lane(ws[i], 2 * p + 1));
                }
            }
        }
        let mut out = [0.0; M];
        for i in 0..M {
            out[i] = S::sum(acc[i]) + S::sum(tail[i]) + S::sum(off[i]);
        }
        out
    }
}

/// The scales and offsets of group `g`'s blocks: the minimums (Q4_1) or `-8 d` (Q4_0).
#[inline(always)]
unsafe fn q4_scales<S: Simd>(d: &[u16], m: Option<&[u16]>, g: usize) -> (S::Floats, S::Floats) {
    // SAFETY: `d` and `m` hold whole groups.
    unsafe {
        let dw = S::load_f16(d.as_ptr().add(g * GROUP));
        let cw = match m {
            Some(m) => S::load_f16(m.as_ptr().add(g * GROUP)),
            None => S::mul(dw, S::splat(-8.0)),
        };
        (dw, cw)
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

/// Moves bit `v` of each byte of `bits` to bit 4 (the fifth bit of vector `v`'s values).
#[inline(always)]
unsafe fn fifth_bit<S: Simd>(bits: S::Bytes, v: usize) -> S::Bytes {
    // SAFETY: register operations only. Shifts within 16-bit lanes move bits across the
    // byte boundary only into positions the mask clears.
    unsafe {
        let moved = match v {
            0 => S::shl16::<4>(bits),
            1 => S::shl16::<3>(bits),
            2 => S::shl16::<2>(bits),
            3 => S::shl16::<1>(bits),
            4 => bits,
            5 => S::shr16::<1>(bits),
            6 => S::shr16::<2>(bits),
            _ => S::shr16::<3>(bits),
        };
        S::and(moved, S::splat_byte(0x10))
    }
}

/// Q4_K and Q5_K: a super-block of 256 is one group of 8 sub-blocks, each with its own
/// 6-bit scale and minimum times the super-block's `d` and `dmin`.
#[inline(always)]
unsafe fn k45_dots<S: Simd, const M: usize>(w: K45Row<'_>, a: &[ActivationRow<'_>; M]) -> [f32; M] {
    let h = |bits: u16| half::f16::from_bits(bits).to_f32();
    // SAFETY: the row holds `d.len()` super-blocks of every array; activation rows hold
    // 8 blocks per super-block, interleaved as the weights are.
    unsafe {
        let low = S::splat_byte(0x0F);
        let mut acc = [S::zero(); M];
        let mut off = [S::zero(); M];
        for s in 0..w.d.len() {
            let high_bits = match w.qh {
                Some(qh) => Some(S::load_bytes(qh.as_ptr().add(32 * s))),
                None => None,
            };
            let mut sums = [[S::zero_ints(); 2]; M];
            for v in 0..4 {
                let bytes = S::load_bytes(w.qs.as_ptr().add(128 * s + 32 * v));
                let mut lo = S::and(bytes, low);
                let mut hi = S::and(S::shr16::<4>(bytes), low);
                if let Some(bits) = high_bits {
                    lo = S::or(lo, fifth_bit::<S>(bits, v));
                    hi = S::or(hi, fifth_bit::<S>(bits, v + 4));
                }
                for i in 0..M {
                    sums[i][0] = S::dot_u8_i8(sums[i][0], lo, act::<S>(&a[i], s * 256 + 32 * v));
                    sums[i][1] =
                        S::dot_u8_i8(sums[i][1], hi, act::<S>(&a[i], s * 256 + 32 * (v + 4)));
                }
            }
            let dsc = S::mul(
                S::load_u8(w.scales.as_ptr().add(8 * s)),
                S::splat(h(w.d[s])),
            );
            let dmn = S::mul(
                S::load_u8(w.mins.as_ptr().add(8 * s)),
                S::splat(-h(w.dmin[s])),
            );
            for i in 0..M {
                let scale = S::mul(dsc, S::load(a[i].scale.as_ptr().add(8 * s)));
                let blocks = S::to_floats(S::add_ints(sums[i][0], sums[i][1]));
                acc[i] = S::fma(blocks, scale, acc[i]);
                off[i] = S::fma(dmn, S::load(a[i].sum.as_ptr().add(8 * s)), off[i]);
            }
        }
        let mut out = [0.0; M];
        for i in 0..M {
            out[i] = S::sum(acc[i]) + S::sum(off[i]);
        }
        out
    }
}

/// Q6_K: 6-bit values from a low nibble and a pair of high bits, centred on 32 (applied
/// through the activations' half-block sums), a signed scale per half-block of 16; the
/// activations are interleaved by half-blocks, so each lane is one half-block.
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
    // 8 blocks (16 half-blocks) per super-block, interleaved by half-blocks.
    unsafe {
        let low = S::splat_byte(0x0F);
        let two_bits = S::splat_byte(0x30);
        let centre = S::splat(-32.0);
        // Half-block j of a group belongs to block j / 2 of the group's 4: these repeat
        // each of 8 block scales twice, for the first and the second 4 blocks.
        let halves = [
            S::ints([0, 0, 1, 1, 2, 2, 3, 3]),
            S::ints([4, 4, 5, 5, 6, 6, 7, 7]),
        ];
        let mut acc = [S::zero(); M];
        let mut off = [S::zero(); M];
        for s in 0..d.len() {
            let scale_d = S::splat(h(d[s]));
            for g in 0..2 {
                let group = 2 * s + g;
                let ql_a = S::load_bytes(ql.as_ptr().add(64 * group));
                let ql_b = S::load_bytes(ql.as_ptr().add(64 * group + 32));
                let bits = S::load_bytes(qh.as_ptr().add(32 * group));
                let values = [
                    S::or(S::and(ql_a, low), S::and(S::shl16::<4>(bits), two_bits)),
                    S::or(S::and(ql_b, low), S::and(S::shl16::<2>(bits), two_bits)),
                    S::or(S::and(S::shr16::<4>(ql_a), low), S::and(bits, two_bits)),
                    S::or(
                        S::and(S::shr16::<4>(ql_b), low),
                        S::and(S::shr16::<2>(bits), two_bits),
                    ),
                ];
                let dsc = S::mul(
                    S::load_i8(scales.as_ptr().add(16 * s + 8 * g).cast()),
                    scale_d,
                );
                for i in 0..M {
                    let mut sums = [S::zero_ints(); 2];
                    for (v, &w) in values.iter().enumerate() {
                        let x = act::<S>(&a[i], group * 128 + 32 * v);
                        sums[v % 2] = S::dot_u8_i8(sums[v % 2], w, x);
                    }
                    let da = S::permute(S::load(a[i].scale.as_ptr().add(8 * s)), halves[g]);
                    let blocks = S::to_floats(S::add_ints(sums[0], sums[1]));
                    acc[i] = S::fma(blocks, S::mul(dsc, da), acc[i]);
                    let sums16 = S::load(a[i].sum16.as_ptr().add(16 * s + 8 * g));
                    off[i] = S::fma(S::mul(dsc, centre), sums16, off[i]);
                }
            }
        }
        let mut out = [0.0; M];
        for i in 0..M {
            out[i] = S::sum(acc[i]) + S::sum(off[i]);
        }
        out
    }
}
