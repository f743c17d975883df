//! Launches `gather_rows.cu`.

use cudarc::driver::PushKernelArg;

use super::{int, per_row};
use crate::backend::BackendError;
use crate::backend::cuda::compile::{Defines, KernelSource};
use crate::backend::cuda::device::Device;

pub const SOURCE: KernelSource = KernelSource {
    file: "gather_rows.cu",
    code: include_str!("gather_rows.cu"),
    entry_points: &["gather_rows"],
    needs: &[],
};

/// `out[i] = x[rows[i]]` for rows of `words` 32-bit words.
pub fn launch(
    device: &Device,
    x: u64,
    rows: u64,
    out: u64,
    out_rows: usize,
    words: usize,
) -> Result<(), BackendError> {
    if out_rows == 0 || words == 0 {
        return Ok(());
    }
    let f = device.function(&SOURCE, &Defines::default(), "gather_rows")?;
    let words_arg = int(words, "row words")?;
    let mut args = device.stream().launch_builder(&f);
    args.arg(&x).arg(&rows).arg(&out).arg(&words_arg);
    device.launch(&mut args, per_row(out_rows, words), "gather_rows")
}
