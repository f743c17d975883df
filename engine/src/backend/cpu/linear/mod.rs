//! Linear layers on the CPU: weights kept as stored (see [`packed`]), multiplied by
//! activations with the int8 or float kernels of [`kernels`], split across rayon's threads
//! by output rows.

mod activations;
mod kernels;
mod packed;

use rayon::prelude::*;

use activations::{Grouping, QuantizedActivations};
use kernels::{Input, Job, OutPtr, run_job};
use packed::PackedWeights;

use super::simd::Isa;
use crate::backend::BackendError;
use crate::weights::{HostTensor, WeightFormat};

/// The precision the CPU keeps weights in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightDtype {
    /// As the file stores them: quantised GGUF blocks stay quantised, 16-bit stays 16-bit.
    #[default]
    AsStored,
    /// Decoded to float32 at load (the reference the quantised kernels are tested on).
    F32,
    F16,
    Bf16,
}

impl WeightDtype {
    fn convert_to(self) -> Option<WeightFormat> {
        match self {
            Self::AsStored => None,
            Self::F32 => Some(WeightFormat::F32),
            Self::F16 => Some(WeightFormat::F16),
            Self::Bf16 => Some(WeightFormat::Bf16),
        }
    }
}

/// Output rows one job computes, at least: a job must outweigh its scheduling.
const MIN_ROWS_PER_JOB: usize = 16;
/// Jobs per thread, so uneven progress evens out.
const JOBS_PER_THREAD: usize = 4;

/// A linear layer: one or more tensors stacked along the output.
pub struct CpuLinear {
    parts: Vec<PackedWeights>,
    rows: usize,
    cols: usize,
}

impl CpuLinear {
    pub fn new(parts: &[HostTensor<'_>], dtype: WeightDtype) -> Result<Self, BackendError> {
        let cols = parts.first().map_or(0, HostTensor::cols);
        let mut packed = Vec::with_capacity(parts.len());
        for part in parts {
            if part.cols() != cols {
                return Err(BackendError::InvalidWeights(format!(
                    "{} has {} columns, the layer it is stacked into {cols}",
                    part.name(),
                    part.cols()
                )));
            }
            packed.push(match dtype.convert_to() {
                Some(format) if format != part.format() => {
                    PackedWeights::pack(&part.convert(format))
                }
                _ => PackedWeights::pack(part),
            });
        }
        Ok(Self {
            rows: packed.iter().map(|p| p.rows).sum(),
            parts: packed,
            cols,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn bytes(&self) -> usize {
        self.parts.iter().map(PackedWeights::bytes).sum()
    }

    /// Decodes row `r` (of the stacked layer) into `out`.
    pub fn dequantize_row(&self, mut r: usize, out: &mut [f32]) {
        for part in &self.parts {
            if r < part.rows {
                return part.dequantize_row(r, out);
            }
            r -= part.rows;
        }
        panic!("dequantize_row: row past the layer's {} rows", self.rows);
    }

    /// `out = x · wᵀ` (or `out += x · wᵀ` when `accumulate`) for `x` of `rows × cols` and
    /// `out` of `rows × self.rows()`.
    pub fn matmul(&self, isa: Isa, x: &[f32], rows: usize, out: &mut [f32], accumulate: bool) {
        assert_eq!(x.len(), rows * self.cols, "matmul: input shape");
        assert_eq!(out.len(), rows * self.rows, "matmul: output shape");
        if rows == 0 || self.rows == 0 {
            return;
        }
        let needs = |grouping: Grouping| {
            self.parts
                .iter()
                .any(|p| grouping_of(p.format()) == Some(grouping))
                .then(|| QuantizedActivations::quantize(x, rows, self.cols, grouping))
        };
        let blocks = needs(Grouping::Blocks);
        let half_blocks = needs(Grouping::HalfBlocks);
        let acts = Activations {
            x,
            rows,
            blocks: blocks.as_ref(),
            half_blocks: half_blocks.as_ref(),
        };
        let jobs = self.jobs(&acts, OutPtr(out.as_mut_ptr()), accumulate);
        if jobs.len() == 1 {
            run_job(isa, &jobs[0]);
        } else {
            jobs.par_iter().for_each(|job| run_job(isa, job));
        }
    }

    /// Splits the output rows of every part into jobs of a similar size.
    fn jobs<'a>(&'a self, acts: &Activations<'a>, out: OutPtr, accumulate: bool) -> Vec<Job<'a>> {
        let target = self
            .rows
            .div_ceil(rayon::current_num_threads() * JOBS_PER_THREAD)
            .max(MIN_ROWS_PER_JOB);
        let mut jobs = Vec::new();
        let mut col0 = 0;
        for part in &self.parts {
            let input = match grouping_of(part.format()) {
                None => Input::Float {
                    x: acts.x,
                    rows: acts.rows,
                },
                Some(Grouping::Blocks) => {
                    Input::Quantized(acts.blocks.expect("quantised for these parts"))
                }
                Some(Grouping::HalfBlocks) => {
                    Input::Quantized(acts.half_blocks.expect("quantised for these parts"))
                }
            };
            let pieces = part.rows.div_ceil(target).max(1);
            let per_piece = part.rows.div_ceil(pieces);
            for start in (0..part.rows).step_by(per_piece.max(1)) {
                jobs.push(Job {
                    w: part,
                    rows: start..(start + per_piece).min(part.rows),
                    input,
                    out,
                    out_stride: self.rows,
                    col0,
                    accumulate,
                });
            }
            col0 += part.rows;
        }
        jobs
    }
}

/// The input of one matmul in each form its parts read.
struct Activations<'a> {
    x: &'a [f32],
    rows: usize,
    blocks: Option<&'a QuantizedActivations>,
    half_blocks: Option<&'a QuantizedActivations>,
}

/// How a format's kernel wants its activations quantised (`None`: as f32).
fn grouping_of(format: WeightFormat) -> Option<Grouping> {
    match format {
        WeightFormat::F32 | WeightFormat::F16 | WeightFormat::Bf16 => None,
        WeightFormat::Q6K => Some(Grouping::HalfBlocks),
        _ => Some(Grouping::Blocks),
    }
}

#[cfg(test)]
mod tests;
