//! The NVRTC kernels, one concern per `.cu` file, each with its launch wrapper beside it:
//! the wrapper names the source's entry points, computes the launch shape (pure, tested
//! here) and passes device addresses and sizes in the order the kernel declares them.

pub mod attention_decode;
pub mod attention_prefill;
pub mod bias;
pub mod convert;
pub mod copy_blocks;
pub mod embedding;
pub mod gather_rows;
pub mod rms_norm;
pub mod rope_cache;
pub mod select_tokens;
pub mod silu_mul;

use cudarc::driver::LaunchConfig;

use crate::backend::BackendError;

/// Threads of the grid-stride kernels' blocks.
const ELEMENTWISE_THREADS: u32 = 256;
/// Enough blocks to fill any current GPU several times over; the kernels stride past it.
const ELEMENTWISE_MAX_BLOCKS: u32 = 65_535;

/// One block per row, as many threads as the row has values (a multiple of 32, 32 to 1024).
pub fn per_row(rows: usize, width: usize) -> LaunchConfig {
    let threads = (width.next_multiple_of(32)).clamp(32, 1024) as u32;
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A grid-stride launch over `n` elements.
pub fn elementwise(n: usize) -> LaunchConfig {
    let blocks = n
        .div_ceil(ELEMENTWISE_THREADS as usize)
        .clamp(1, ELEMENTWISE_MAX_BLOCKS as usize) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (ELEMENTWISE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A size as the `int` a kernel takes, refusing one that does not fit.
pub fn int(value: usize, what: &str) -> Result<i32, BackendError> {
    i32::try_from(value).map_err(|_| {
        BackendError::Execution(format!("{what} = {value} does not fit a kernel's int"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_row_blocks_round_the_row_up_to_whole_warps_within_the_limit() {
        assert_eq!(per_row(3, 64).block_dim.0, 64);
        assert_eq!(per_row(3, 100).block_dim.0, 128);
        assert_eq!(per_row(3, 4096).block_dim.0, 1024);
        assert_eq!(per_row(3, 1).block_dim.0, 32);
        assert_eq!(per_row(7, 64).grid_dim, (7, 1, 1));
    }

    #[test]
    fn elementwise_grids_cover_small_inputs_and_cap_large_ones() {
        assert_eq!(elementwise(1).grid_dim.0, 1);
        assert_eq!(elementwise(257).grid_dim.0, 2);
        assert_eq!(elementwise(0).grid_dim.0, 1);
        assert_eq!(elementwise(1 << 40).grid_dim.0, ELEMENTWISE_MAX_BLOCKS);
    }

    #[test]
    fn sizes_beyond_an_int_are_refused() {
        assert_eq!(int(5, "x").expect("fits"), 5);
        assert!(
            int(1 << 31, "width")
                .expect_err("too big")
                .to_string()
                .contains("width")
        );
    }
}
