//! Launches `rope_cache.cu`.

use cudarc::driver::PushKernelArg;

use super::{int, per_row};
use crate::backend::BackendError;
use crate::backend::cuda::compile::{Define, Defines, KernelSource};
use crate::backend::cuda::device::Device;
use crate::backend::kernels::AttentionShape;

pub const SOURCE: KernelSource = KernelSource {
    file: "rope_cache.cu",
    code: include_str!("rope_cache.cu"),
    entry_points: &["rope_and_cache_kv"],
    needs: &[Define::KvDtype],
};

/// Device addresses one launch reads and writes.
pub struct RopeCacheArgs {
    pub qkv: u64,
    pub inv_freq: u64,
    pub positions: u64,
    pub slots: u64,
    pub key_cache: u64,
    pub value_cache: u64,
}

pub fn launch(
    device: &Device,
    defines: &Defines,
    a: &RopeCacheArgs,
    shape: &AttentionShape,
    tokens: usize,
) -> Result<(), BackendError> {
    if tokens == 0 {
        return Ok(());
    }
    let f = device.function(&SOURCE, defines, "rope_and_cache_kv")?;
    let heads = int(shape.num_heads, "heads")?;
    let kv_heads = int(shape.num_kv_heads, "kv heads")?;
    let head_dim = int(shape.head_dim, "head_dim")?;
    let pairs = (shape.num_heads + shape.num_kv_heads) * shape.head_dim / 2;
    let mut args = device.stream().launch_builder(&f);
    args.arg(&a.qkv)
        .arg(&a.inv_freq)
        .arg(&a.positions)
        .arg(&a.slots)
        .arg(&a.key_cache)
        .arg(&a.value_cache)
        .arg(&heads)
        .arg(&kv_heads)
        .arg(&head_dim);
    device.launch(&mut args, per_row(tokens, pairs), "rope_and_cache_kv")
}
