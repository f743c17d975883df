//! Launches `copy_blocks.cu`.

use cudarc::driver::{LaunchConfig, PushKernelArg};

use crate::backend::BackendError;
use crate::backend::cuda::compile::{Defines, KernelSource};
use crate::backend::cuda::device::Device;

pub const SOURCE: KernelSource = KernelSource {
    file: "copy_blocks.cu",
    code: include_str!("copy_blocks.cu"),
    entry_points: &["copy_blocks"],
    needs: &[],
};

const THREADS: u32 = 256;

/// 16-byte words of one block in one plane; refuses a block that is not a whole number.
pub fn block_words(block_bytes: usize) -> Result<u64, BackendError> {
    if block_bytes.is_multiple_of(16) {
        Ok((block_bytes / 16) as u64)
    } else {
        Err(BackendError::Unavailable {
            backend: "cuda",
            reason: format!(
                "a KV block of {block_bytes} bytes is not a whole number of 16-byte words"
            ),
        })
    }
}

pub fn copy_config(pairs: usize, planes: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (pairs as u32, planes as u32, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Copies the blocks of `pairs` (device `[pairs, 2]` u32) in each of `planes` planes
/// (device array of their base addresses).
pub fn launch(
    device: &Device,
    planes_ptr: u64,
    planes: usize,
    pairs_ptr: u64,
    pairs: usize,
    words: u64,
) -> Result<(), BackendError> {
    if pairs == 0 || planes == 0 {
        return Ok(());
    }
    let f = device.function(&SOURCE, &Defines::default(), "copy_blocks")?;
    let mut args = device.stream().launch_builder(&f);
    args.arg(&planes_ptr).arg(&pairs_ptr).arg(&words);
    device.launch(&mut args, copy_config(pairs, planes), "copy_blocks")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_move_in_16_byte_words_across_every_plane() {
        // 16 tokens × 8 KV heads × 128 × bf16.
        assert_eq!(block_words(16 * 8 * 128 * 2).expect("whole"), 2048);
        assert!(block_words(24).is_err());
        assert_eq!(copy_config(3, 64).grid_dim, (3, 64, 1));
    }
}
