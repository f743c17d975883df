//! Linear layers on the GPU: weights in bf16, `[out_features, in_features]` row-major, the
//! stacked parts back to back. Quantised and f32 weights are converted at placement by the
//! host's reference decoding (crate::weights), so the GPU reads one format.

use cudarc::driver::CudaSlice;

use super::device::Device;
use crate::backend::BackendError;
use crate::weights::{HostTensor, WeightFormat};

pub struct CudaLinear {
    weights: CudaSlice<u16>,
    rows: usize,
    cols: usize,
}

impl CudaLinear {
    pub fn place(device: &Device, parts: &[HostTensor<'_>]) -> Result<Self, BackendError> {
        let cols = parts.first().map_or(0, HostTensor::cols);
        let rows: usize = parts.iter().map(HostTensor::rows).sum();
        let mut values: Vec<u16> = Vec::with_capacity(rows * cols);
        for part in parts {
            if part.cols() != cols {
                return Err(BackendError::Unavailable {
                    backend: "cuda",
                    reason: format!(
                        "{} has {} columns, the layer it is stacked into {cols}",
                        part.name(),
                        part.cols()
                    ),
                });
            }
            let converted;
            let bf16 = if part.format() == WeightFormat::Bf16 {
                part
            } else {
                converted = part.convert(WeightFormat::Bf16);
                &converted
            };
            values.extend(
                bf16.bytes()
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]])),
            );
        }
        Ok(Self {
            weights: device.buffer(&values)?,
            rows,
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
        2 * self.rows * self.cols
    }

    pub fn address(&self, device: &Device) -> u64 {
        device.address(&self.weights)
    }
}
