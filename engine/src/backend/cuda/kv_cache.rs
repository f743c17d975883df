//! The paged KV cache in device memory: per layer, keys and values of
//! `[num_blocks, block_size, num_kv_heads, head_dim]` (the CPU cache's layout), one
//! allocation per plane, plus a device array of the planes' addresses for copy_blocks.

use cudarc::driver::CudaSlice;

use super::device::Device;
use super::ops::copy_blocks;
use crate::backend::BackendError;
use crate::backend::kernels::KvCacheLayout;

pub struct CudaKvCache {
    layout: KvCacheLayout,
    _planes: Vec<CudaSlice<u8>>,
    keys: Vec<u64>,
    values: Vec<u64>,
    /// Keys of every layer, then values: `[2 * layers]` addresses.
    plane_addresses: CudaSlice<u64>,
    block_words: u64,
}

impl CudaKvCache {
    pub fn new(device: &Device, layout: &KvCacheLayout) -> Result<Self, BackendError> {
        let block_bytes = layout.bytes_per_block() / (2 * layout.num_layers.max(1));
        let block_words = copy_blocks::block_words(block_bytes)?;
        let plane_bytes = block_bytes * layout.shape.num_blocks;
        let planes = (0..2 * layout.num_layers)
            .map(|_| device.zeros::<u8>(plane_bytes))
            .collect::<Result<Vec<_>, _>>()?;
        let addresses: Vec<u64> = planes.iter().map(|p| device.address(p)).collect();
        let (keys, values) = addresses.split_at(layout.num_layers);
        Ok(Self {
            layout: *layout,
            keys: keys.to_vec(),
            values: values.to_vec(),
            plane_addresses: device.buffer(&addresses)?,
            _planes: planes,
            block_words,
        })
    }

    pub fn layout(&self) -> &KvCacheLayout {
        &self.layout
    }

    /// `(keys, values)` addresses of `layer`.
    pub fn layer(&self, layer: usize) -> Result<(u64, u64), BackendError> {
        match (self.keys.get(layer), self.values.get(layer)) {
            (Some(&k), Some(&v)) => Ok((k, v)),
            _ => Err(BackendError::Execution(format!(
                "layer {layer} of a {}-layer cache",
                self.layout.num_layers
            ))),
        }
    }

    pub fn copy_blocks(&self, device: &Device, pairs: &[(u32, u32)]) -> Result<(), BackendError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let flat: Vec<u32> = pairs.iter().flat_map(|&(s, d)| [s, d]).collect();
        let on_device = device.buffer(&flat)?;
        copy_blocks::launch(
            device,
            device.address(&self.plane_addresses),
            2 * self.layout.num_layers,
            device.address(&on_device),
            pairs.len(),
            self.block_words,
        )?;
        // The pairs' buffer is freed in stream order, after the copy has read it.
        drop(on_device);
        Ok(())
    }
}
