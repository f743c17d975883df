//! Launches `rms_norm.cu`.

use cudarc::driver::PushKernelArg;

use super::{int, per_row};
use crate::backend::BackendError;
use crate::backend::cuda::compile::{Defines, KernelSource};
use crate::backend::cuda::device::Device;

pub const SOURCE: KernelSource = KernelSource {
    file: "rms_norm.cu",
    code: include_str!("rms_norm.cu"),
    entry_points: &["rms_norm"],
    needs: &[],
};

/// f32 rows of `x` normalised and scaled by `weight` into bf16 `out`.
pub fn launch(
    device: &Device,
    x: u64,
    weight: u64,
    out: u64,
    rows: usize,
    width: usize,
    eps: f32,
) -> Result<(), BackendError> {
    if rows == 0 {
        return Ok(());
    }
    let f = device.function(&SOURCE, &Defines::default(), "rms_norm")?;
    let width_arg = int(width, "rms_norm width")?;
    let mut args = device.stream().launch_builder(&f);
    args.arg(&x)
        .arg(&weight)
        .arg(&out)
        .arg(&width_arg)
        .arg(&eps);
    device.launch(&mut args, per_row(rows, width), "rms_norm")
}
