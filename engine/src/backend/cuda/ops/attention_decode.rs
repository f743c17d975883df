//! Launches `attention_decode.cu`, choosing how many partitions split each context.

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::int;
use crate::backend::BackendError;
use crate::backend::cuda::compile::{Define, Defines, KernelSource};
use crate::backend::cuda::device::Device;
use crate::backend::kernels::AttentionShape;

pub const SOURCE: KernelSource = KernelSource {
    file: "attention_decode.cu",
    code: include_str!("attention_decode.cu"),
    entry_points: &["attention_decode", "attention_decode_combine"],
    needs: &[Define::HeadDim, Define::Group, Define::KvDtype],
};

/// The kernel's `WARPS * 32`.
const THREADS: u32 = 128;
/// Most partitions one context is split into.
pub const MAX_PARTITIONS: usize = 16;
/// Thread blocks per multiprocessor the split aims for.
const BLOCKS_PER_SM: usize = 2;

/// Partitions per context so that `items × kv_heads × partitions` blocks fill the GPU: a
/// batch of one long sequence is split across the multiprocessors, a large batch is not.
/// Depends only on the batch's shape, never on context lengths, so a recorded graph stays
/// right as contexts grow.
pub fn partitions(items: usize, kv_heads: usize, multiprocessors: usize) -> usize {
    let blocks = (items * kv_heads).max(1);
    (BLOCKS_PER_SM * multiprocessors)
        .div_ceil(blocks)
        .clamp(1, MAX_PARTITIONS)
}

pub fn attention_config(items: usize, kv_heads: usize, partitions: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (items as u32, kv_heads as u32, partitions as u32),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// f32 values of the partial states the split needs (none without a split).
pub fn partial_floats(items: usize, shape: &AttentionShape, partitions: usize) -> (usize, usize) {
    if partitions <= 1 {
        return (0, 0);
    }
    let states = items * shape.num_heads * partitions;
    (states * shape.head_dim, states * 2)
}

/// Device addresses one launch reads and writes.
pub struct DecodeArgs {
    pub qkv: u64,
    pub key_cache: u64,
    pub value_cache: u64,
    pub items: u64,
    pub context_lens: u64,
    pub block_tables: u64,
    pub out: u64,
    /// Scratch for [`partial_floats`], when `partitions > 1`.
    pub partial_acc: u64,
    pub partial_max_sum: u64,
}

#[allow(clippy::too_many_arguments)]
pub fn launch(
    device: &Device,
    defines: &Defines,
    a: &DecodeArgs,
    shape: &AttentionShape,
    items: usize,
    table_stride: usize,
    block_size: usize,
    partitions: usize,
) -> Result<(), BackendError> {
    if items == 0 {
        return Ok(());
    }
    let f = device.function(&SOURCE, defines, "attention_decode")?;
    let stride = int(table_stride, "block table stride")?;
    let block_size_arg = int(block_size, "block size")?;
    let heads = int(shape.num_heads, "heads")?;
    let kv_heads = int(shape.num_kv_heads, "kv heads")?;
    let parts = int(partitions, "partitions")?;
    let mut args = device.stream().launch_builder(&f);
    args.arg(&a.qkv)
        .arg(&a.key_cache)
        .arg(&a.value_cache)
        .arg(&a.items)
        .arg(&a.context_lens)
        .arg(&a.block_tables)
        .arg(&stride)
        .arg(&block_size_arg)
        .arg(&heads)
        .arg(&kv_heads)
        .arg(&shape.scale)
        .arg(&a.out)
        .arg(&a.partial_acc)
        .arg(&a.partial_max_sum)
        .arg(&parts);
    device.launch(
        &mut args,
        attention_config(items, shape.num_kv_heads, partitions),
        "attention_decode",
    )?;
    if partitions <= 1 {
        return Ok(());
    }
    let combine = device.function(&SOURCE, defines, "attention_decode_combine")?;
    let mut args = device.stream().launch_builder(&combine);
    args.arg(&a.partial_acc)
        .arg(&a.partial_max_sum)
        .arg(&a.items)
        .arg(&heads)
        .arg(&parts)
        .arg(&a.out);
    let config = LaunchConfig {
        grid_dim: (items as u32, shape.num_heads as u32, 1),
        block_dim: ((shape.head_dim.next_multiple_of(32)).min(1024) as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    device.launch(&mut args, config, "attention_decode_combine")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_sequence_is_split_to_fill_the_gpu_and_a_large_batch_is_not() {
        // H100/H200: 132 multiprocessors; Llama-3-8B: 8 KV heads.
        assert_eq!(partitions(1, 8, 132), MAX_PARTITIONS);
        assert_eq!(partitions(4, 8, 132), 9);
        assert_eq!(partitions(16, 8, 132), 3);
        assert_eq!(partitions(64, 8, 132), 1);
        assert_eq!(partitions(256, 8, 132), 1);
        assert_eq!(partitions(0, 8, 132), MAX_PARTITIONS);
    }

    #[test]
    fn the_grid_is_items_by_kv_heads_by_partitions_and_partials_exist_only_when_split() {
        let config = attention_config(3, 8, 2);
        assert_eq!(config.grid_dim, (3, 8, 2));
        assert_eq!(config.block_dim.0, THREADS);
        let shape = AttentionShape {
            num_heads: 32,
            num_kv_heads: 8,
            head_dim: 128,
            scale: 1.0,
            sliding_window: None,
            logit_softcap: None,
        };
        assert_eq!(partial_floats(3, &shape, 1), (0, 0));
        assert_eq!(
            partial_floats(3, &shape, 2),
            (3 * 32 * 2 * 128, 3 * 32 * 2 * 2)
        );
    }
}
