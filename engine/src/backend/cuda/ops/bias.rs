//! Launches `bias.cu`.

use cudarc::driver::PushKernelArg;

use super::{elementwise, int};
use crate::backend::BackendError;
use crate::backend::cuda::compile::{Defines, KernelSource};
use crate::backend::cuda::device::Device;

pub const SOURCE: KernelSource = KernelSource {
    file: "bias.cu",
    code: include_str!("bias.cu"),
    entry_points: &["add_bias"],
    needs: &[],
};

/// `x += bias` on every f32 row.
pub fn launch(
    device: &Device,
    x: u64,
    bias: u64,
    rows: usize,
    width: usize,
) -> Result<(), BackendError> {
    if rows * width == 0 {
        return Ok(());
    }
    let f = device.function(&SOURCE, &Defines::default(), "add_bias")?;
    let (rows_arg, width_arg) = (int(rows, "rows")?, int(width, "bias width")?);
    let mut args = device.stream().launch_builder(&f);
    args.arg(&x).arg(&bias).arg(&rows_arg).arg(&width_arg);
    device.launch(&mut args, elementwise(rows * width), "add_bias")
}
