//! The CPU linear kernels against the reference decoding, on random weights of every
//! format: each SIMD path equals the portable one exactly, a row's result does not depend
//! on its batch, and the int8 error stays within what quantising the activations allows.

use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

/// A random `[rows, cols]` tensor of `format`: random bytes, with every block's f16 scales
/// replaced by small finite values so the blocks decode to sensible numbers.
pub(crate) fn random_tensor(
    format: WeightFormat,
    rows: usize,
    cols: usize,
    seed: u64,
) -> HostTensor<'static> {
    let mut rng = StdRng::seed_from_u64(seed);
    if !format.is_quantized() {
        let values: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        return HostTensor::from_f32("w", rows, cols, &values).convert(format);
    }
    let size = format.row_bytes(cols).expect("whole blocks") * rows;
    let mut bytes: Vec<u8> = (0..size).map(|_| rng.random()).collect();
    let scale_at: &[usize] = match format {
        WeightFormat::Q8_0 | WeightFormat::Q4_0 => &[0],
        WeightFormat::Q4_1 | WeightFormat::Q4K | WeightFormat::Q5K => &[0, 2],
        WeightFormat::Q6K => &[208],
        _ => unreachable!(),
    };
    for block in bytes.chunks_exact_mut(format.block_bytes()) {
        for &at in scale_at {
            let v = f16::from_f32(rng.random_range(-0.05..0.05));
            block[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    HostTensor::new("w", format, rows, cols, bytes).expect("sized")
}

fn random_activations(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..rows * cols)
        .map(|_| rng.random_range(-2.0f32..2.0) * if rng.random_bool(0.05) { 8.0 } else { 1.0 })
        .collect()
}

/// Shapes that exercise partial groups, odd pairs of Q4 blocks and float tails.
fn shapes(format: WeightFormat) -> Vec<(usize, usize)> {
    match format.block_len() {
        1 => vec![(5, 77), (17, 64)],
        32 => vec![(5, 576), (19, 96), (3, 32)],
        _ => vec![(5, 512), (9, 256)],
    }
}

fn matmul(w: &CpuLinear, isa: Isa, x: &[f32], rows: usize) -> Vec<f32> {
    let mut out = vec![0.0; rows * w.rows()];
    w.matmul(isa, x, rows, &mut out, false);
    out
}

#[test]
fn every_simd_path_equals_the_portable_one_exactly() {
    for format in WeightFormat::ALL {
        for (n, k) in shapes(format) {
            let w = CpuLinear::new(&[random_tensor(format, n, k, 1)], WeightDtype::AsStored)
                .expect("places");
            let x = random_activations(7, k, 2);
            let reference = matmul(&w, Isa::Portable, &x, 7);
            for isa in Isa::supported() {
                assert_eq!(
                    matmul(&w, isa, &x, 7),
                    reference,
                    "{format} [{n}, {k}] on {isa}"
                );
            }
        }
    }
}

#[test]
fn a_rows_result_does_not_depend_on_its_batch() {
    for format in WeightFormat::ALL {
        let (n, k) = shapes(format)[0];
        let w = CpuLinear::new(&[random_tensor(format, n, k, 3)], WeightDtype::AsStored)
            .expect("places");
        let x = random_activations(9, k, 4);
        for isa in Isa::supported() {
            let batched = matmul(&w, isa, &x, 9);
            for r in 0..9 {
                let alone = matmul(&w, isa, &x[r * k..(r + 1) * k], 1);
                assert_eq!(
                    &batched[r * n..(r + 1) * n],
                    alone,
                    "{format} row {r} on {isa}"
                );
            }
        }
    }
}

#[test]
fn packed_rows_decode_to_the_reference_values() {
    for format in WeightFormat::ALL {
        for (n, k) in shapes(format) {
            let tensor = random_tensor(format, n, k, 5);
            let w = CpuLinear::new(std::slice::from_ref(&tensor), WeightDtype::AsStored)
                .expect("places");
            let reference = tensor.to_f32();
            let mut row = vec![0.0; k];
            for r in 0..n {
                w.dequantize_row(r, &mut row);
                assert_eq!(row, reference[r * k..(r + 1) * k], "{format} row {r}");
            }
        }
    }
}

/// Quantised weights: the only error is rounding each activation to a multiple of its
/// block's scale `d`, at most `d / 2` per value, so `|ours - exact| <= Σ |w_i| d_i / 2`
/// (plus float rounding). Float weights: float rounding only.
#[test]
fn results_stay_within_the_error_activation_quantisation_allows() {
    for format in WeightFormat::ALL {
        for (n, k) in shapes(format) {
            let tensor = random_tensor(format, n, k, 6);
            let w = CpuLinear::new(std::slice::from_ref(&tensor), WeightDtype::AsStored)
                .expect("places");
            let values = tensor.to_f32();
            let rows = 3;
            let x = random_activations(rows, k, 7);
            let ours = matmul(&w, Isa::detect(), &x, rows);
            for m in 0..rows {
                let xm = &x[m * k..(m + 1) * k];
                for r in 0..n {
                    let wr = &values[r * k..(r + 1) * k];
                    let exact: f64 = wr.iter().zip(xm).map(|(a, b)| *a as f64 * *b as f64).sum();
                    let magnitude: f64 = wr
                        .iter()
                        .zip(xm)
                        .map(|(a, b)| (*a as f64 * *b as f64).abs())
                        .sum();
                    let quantisation: f64 = if format.is_quantized() {
                        wr.chunks(32)
                            .zip(xm.chunks(32))
                            .map(|(wb, xb)| {
                                let d =
                                    xb.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64 / 127.0;
                                wb.iter().map(|v| v.abs() as f64).sum::<f64>() * d / 2.0
                            })
                            .sum()
                    } else {
                        0.0
                    };
                    let bound = quantisation * 1.001 + 1e-5 * magnitude + 1e-6;
                    let error = (ours[m * n + r] as f64 - exact).abs();
                    assert!(
                        error <= bound,
                        "{format} [{n}, {k}] ({m}, {r}): error {error:e} above {bound:e}"
                    );
                }
            }
        }
    }
}

#[test]
fn stacked_parts_of_different_formats_fill_their_own_columns_and_can_accumulate() {
    let (a, b) = (
        random_tensor(WeightFormat::Q4K, 6, 256, 8),
        random_tensor(WeightFormat::Q6K, 3, 256, 9),
    );
    let stacked = CpuLinear::new(&[a.clone(), b.clone()], WeightDtype::AsStored).expect("places");
    assert_eq!(stacked.rows(), 9);
    let only_a = CpuLinear::new(&[a], WeightDtype::AsStored).expect("places");
    let only_b = CpuLinear::new(&[b], WeightDtype::AsStored).expect("places");
    let x = random_activations(2, 256, 10);
    let isa = Isa::detect();
    let out = matmul(&stacked, isa, &x, 2);
    let (oa, ob) = (matmul(&only_a, isa, &x, 2), matmul(&only_b, isa, &x, 2));
    for m in 0..2 {
        assert_eq!(&out[m * 9..m * 9 + 6], &oa[m * 6..(m + 1) * 6]);
        assert_eq!(&out[m * 9 + 6..(m + 1) * 9], &ob[m * 3..(m + 1) * 3]);
    }
    let mut acc = out.clone();
    stacked.matmul(isa, &x, 2, &mut acc, true);
    let doubled: Vec<f32> = out.iter().map(|v| v + v).collect();
    assert_eq!(acc, doubled);
}

#[test]
fn weights_can_be_kept_at_another_precision() {
    let tensor = random_tensor(WeightFormat::Q4_1, 4, 512, 11);
    let f32_layer =
        CpuLinear::new(std::slice::from_ref(&tensor), WeightDtype::F32).expect("places");
    let kept =
        CpuLinear::new(std::slice::from_ref(&tensor), WeightDtype::AsStored).expect("places");
    assert_eq!(f32_layer.bytes(), 4 * 512 * 4);
    // Q4_1 is 5 bits a value: 4 bits plus an f16 scale and minimum per 32.
    assert_eq!(kept.bytes(), 4 * 512 * 5 / 8);
    let bf16 = CpuLinear::new(std::slice::from_ref(&tensor), WeightDtype::Bf16).expect("places");
    assert_eq!(bf16.bytes(), 4 * 512 * 2);
}
