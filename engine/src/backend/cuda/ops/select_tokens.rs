//! Launches `select_tokens.cu`, with each row's [`TokenPick`] packed as the kernel's `Pick`.

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::int;
use crate::backend::BackendError;
use crate::backend::cuda::compile::{Defines, KernelSource};
use crate::backend::cuda::device::Device;
use crate::backend::kernels::TokenPick;

pub const SOURCE: KernelSource = KernelSource {
    file: "select_tokens.cu",
    code: include_str!("select_tokens.cu"),
    entry_points: &["argmax_rows", "sample_rows"],
    needs: &[],
};

/// The kernel's SELECT_THREADS.
const THREADS: u32 = 1024;
/// Words of the kernel's `struct Pick`.
pub const PICK_WORDS: usize = 5;

/// A row's pick as the kernel reads it: temperature (0 is greedy), top_k, top_p, min_p,
/// uniform.
pub fn pack_pick(pick: &TokenPick) -> [u32; PICK_WORDS] {
    match *pick {
        TokenPick::Greedy => [0.0f32.to_bits(), 0, 1.0f32.to_bits(), 0, 0],
        TokenPick::Sample {
            temperature,
            top_k,
            top_p,
            min_p,
            uniform,
        } => [
            temperature.to_bits(),
            top_k,
            top_p.to_bits(),
            min_p.to_bits(),
            // Below 1 after rounding, as the draw needs.
            (uniform as f32).min(1.0 - f32::EPSILON / 2.0).to_bits(),
        ],
    }
}

pub fn select_config(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Writes one token per row of `logits` to `tokens`: the arg max of every row when `picks`
/// is `None`, else as each row's packed pick says.
pub fn launch(
    device: &Device,
    logits: u64,
    rows: usize,
    vocab: usize,
    picks: Option<u64>,
    tokens: u64,
) -> Result<(), BackendError> {
    if rows == 0 {
        return Ok(());
    }
    let vocab_arg = int(vocab, "vocabulary")?;
    match picks {
        None => {
            let f = device.function(&SOURCE, &Defines::default(), "argmax_rows")?;
            let mut args = device.stream().launch_builder(&f);
            args.arg(&logits).arg(&vocab_arg).arg(&tokens);
            device.launch(&mut args, select_config(rows), "argmax_rows")
        }
        Some(picks) => {
            let f = device.function(&SOURCE, &Defines::default(), "sample_rows")?;
            let mut args = device.stream().launch_builder(&f);
            args.arg(&logits).arg(&vocab_arg).arg(&picks).arg(&tokens);
            device.launch(&mut args, select_config(rows), "sample_rows")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_pack_as_the_kernel_reads_them_and_greedy_is_temperature_zero() {
        assert_eq!(pack_pick(&TokenPick::Greedy)[0], 0.0f32.to_bits());
        let words = pack_pick(&TokenPick::Sample {
            temperature: 0.7,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.05,
            uniform: 0.25,
        });
        assert_eq!(
            words,
            [
                0.7f32.to_bits(),
                40,
                0.9f32.to_bits(),
                0.05f32.to_bits(),
                0.25f32.to_bits()
            ]
        );
        // A uniform that would round up to 1 stays below it.
        let top = pack_pick(&TokenPick::Sample {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            uniform: 1.0 - 1e-12,
        });
        assert!(f32::from_bits(top[4]) < 1.0);
        assert_eq!(select_config(3).grid_dim, (3, 1, 1));
    }
}
