//! The paged KV cache in host memory: per layer, keys and values of
//! `[num_blocks, block_size, num_kv_heads, head_dim]`, in f32 or a 16-bit float.

use half::{bf16, f16};

use crate::backend::BlockId;
use crate::backend::kernels::{KvCacheDtype, KvCacheLayout};

/// One layer's keys or values.
pub(super) enum Plane {
    F32(Vec<f32>),
    F16(Vec<u16>),
    Bf16(Vec<u16>),
}

impl Plane {
    fn new(dtype: KvCacheDtype, len: usize) -> Self {
        match dtype {
            KvCacheDtype::F32 => Self::F32(vec![0.0; len]),
            KvCacheDtype::F16 => Self::F16(vec![0; len]),
            KvCacheDtype::Bf16 => Self::Bf16(vec![0; len]),
        }
    }

    /// Stores `values` at `at`, rounding to the plane's precision (nearest, ties to even).
    fn write(&mut self, at: usize, values: &[f32]) {
        match self {
            Self::F32(p) => p[at..at + values.len()].copy_from_slice(values),
            Self::F16(p) => {
                for (d, v) in p[at..at + values.len()].iter_mut().zip(values) {
                    *d = f16::from_f32(*v).to_bits();
                }
            }
            Self::Bf16(p) => {
                for (d, v) in p[at..at + values.len()].iter_mut().zip(values) {
                    *d = bf16::from_f32(*v).to_bits();
                }
            }
        }
    }

    fn copy_within(&mut self, from: usize, to: usize, len: usize) {
        match self {
            Self::F32(p) => p.copy_within(from..from + len, to),
            Self::F16(p) | Self::Bf16(p) => p.copy_within(from..from + len, to),
        }
    }
}

pub struct CpuKvCache {
    pub(super) layout: KvCacheLayout,
    /// Values per token slot: `num_kv_heads * head_dim`.
    pub(super) slot_width: usize,
    pub(super) keys: Vec<Plane>,
    pub(super) values: Vec<Plane>,
}

impl CpuKvCache {
    pub fn new(layout: &KvCacheLayout) -> Self {
        let slot_width = layout.num_kv_heads * layout.head_dim;
        let per_layer = layout.shape.num_blocks * layout.shape.block_size * slot_width;
        Self {
            layout: *layout,
            slot_width,
            keys: (0..layout.num_layers)
                .map(|_| Plane::new(layout.dtype, per_layer))
                .collect(),
            values: (0..layout.num_layers)
                .map(|_| Plane::new(layout.dtype, per_layer))
                .collect(),
        }
    }

    /// Writes one token's key and value heads at cache slot `slot`.
    pub(super) fn write(&mut self, layer: usize, slot: usize, key: &[f32], value: &[f32]) {
        let at = slot * self.slot_width;
        self.keys[layer].write(at, key);
        self.values[layer].write(at, value);
    }

    pub(super) fn copy_block(&mut self, source: BlockId, destination: BlockId) {
        let len = self.layout.shape.block_size * self.slot_width;
        let (from, to) = (source as usize * len, destination as usize * len);
        for plane in self.keys.iter_mut().chain(self.values.iter_mut()) {
            plane.copy_within(from, to, len);
        }
    }
}
