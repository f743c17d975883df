//! Launches `attention_prefill.cu`.

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::int;
use crate::backend::BackendError;
use crate::backend::cuda::compile::{Define, Defines, KernelSource};
use crate::backend::cuda::device::Device;
use crate::backend::kernels::AttentionShape;

pub const SOURCE: KernelSource = KernelSource {
    file: "attention_prefill.cu",
    code: include_str!("attention_prefill.cu"),
    entry_points: &["attention_prefill"],
    needs: &[Define::HeadDim, Define::Group, Define::KvDtype],
};

/// The kernel's THREADS and PARTS: queries one block holds.
const THREADS: u32 = 128;
const QUERIES: usize = 32;
const PARTS: usize = 4;

/// Tokens per tile: the kernel's `TILE_TOKENS`. Refuses a group wider than a tile.
pub fn tile_tokens(group: usize) -> Result<usize, BackendError> {
    if group == 0 || group > QUERIES {
        return Err(BackendError::Unavailable {
            backend: "cuda",
            reason: format!(
                "{group} query heads per KV head (the prefill kernel takes 1 to {QUERIES})"
            ),
        });
    }
    Ok(QUERIES / group)
}

/// Whether the kernels take heads of `head_dim` values.
pub fn supports_head_dim(head_dim: usize) -> bool {
    head_dim > 0 && head_dim.is_multiple_of(PARTS) && head_dim <= 256
}

pub fn attention_config(tiles: usize, kv_heads: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (tiles as u32, kv_heads as u32, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Device addresses one launch reads and writes.
pub struct PrefillArgs {
    pub qkv: u64,
    pub key_cache: u64,
    pub value_cache: u64,
    pub tiles: u64,
    pub positions: u64,
    pub context_lens: u64,
    pub block_tables: u64,
    pub out: u64,
}

pub fn launch(
    device: &Device,
    defines: &Defines,
    a: &PrefillArgs,
    shape: &AttentionShape,
    tiles: usize,
    table_stride: usize,
    block_size: usize,
) -> Result<(), BackendError> {
    if tiles == 0 {
        return Ok(());
    }
    let f = device.function(&SOURCE, defines, "attention_prefill")?;
    let stride = int(table_stride, "block table stride")?;
    let block_size_arg = int(block_size, "block size")?;
    let heads = int(shape.num_heads, "heads")?;
    let kv_heads = int(shape.num_kv_heads, "kv heads")?;
    let mut args = device.stream().launch_builder(&f);
    args.arg(&a.qkv)
        .arg(&a.key_cache)
        .arg(&a.value_cache)
        .arg(&a.tiles)
        .arg(&a.positions)
        .arg(&a.context_lens)
        .arg(&a.block_tables)
        .arg(&stride)
        .arg(&block_size_arg)
        .arg(&heads)
        .arg(&kv_heads)
        .arg(&shape.scale)
        .arg(&a.out);
    device.launch(
        &mut args,
        attention_config(tiles, shape.num_kv_heads),
        "attention_prefill",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tile_holds_32_queries_whatever_the_group() {
        assert_eq!(tile_tokens(1).expect("ok"), 32);
        assert_eq!(tile_tokens(4).expect("ok"), 8);
        assert_eq!(tile_tokens(7).expect("ok"), 4);
        assert_eq!(tile_tokens(32).expect("ok"), 1);
        assert!(tile_tokens(33).is_err());
        assert!(tile_tokens(0).is_err());
    }

    #[test]
    fn head_sizes_split_across_four_threads() {
        for ok in [16, 64, 80, 96, 128, 256] {
            assert!(supports_head_dim(ok), "{ok}");
        }
        for bad in [0, 6, 258, 512] {
            assert!(!supports_head_dim(bad), "{bad}");
        }
        assert_eq!(attention_config(5, 8).grid_dim, (5, 8, 1));
    }
}
