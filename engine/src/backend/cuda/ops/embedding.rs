//! Launches `embedding.cu`.

use cudarc::driver::PushKernelArg;

use super::{int, per_row};
use crate::backend::BackendError;
use crate::backend::cuda::compile::{Defines, KernelSource};
use crate::backend::cuda::device::Device;

pub const SOURCE: KernelSource = KernelSource {
    file: "embedding.cu",
    code: include_str!("embedding.cu"),
    entry_points: &["embedding"],
    needs: &[],
};

/// `out[t] = table[token_ids[t]]` (bf16 table, f32 rows).
pub fn launch(
    device: &Device,
    table: u64,
    token_ids: u64,
    out: u64,
    tokens: usize,
    hidden: usize,
) -> Result<(), BackendError> {
    if tokens == 0 {
        return Ok(());
    }
    let f = device.function(&SOURCE, &Defines::default(), "embedding")?;
    let hidden = int(hidden, "hidden size")?;
    let mut args = device.stream().launch_builder(&f);
    args.arg(&table).arg(&token_ids).arg(&out).arg(&hidden);
    device.launch(&mut args, per_row(tokens, 256), "embedding")
}
