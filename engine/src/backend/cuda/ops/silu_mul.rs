//! Launches `silu_mul.cu`.

use cudarc::driver::PushKernelArg;

use super::{elementwise, int};
use crate::backend::BackendError;
use crate::backend::cuda::compile::{Defines, KernelSource};
use crate::backend::cuda::device::Device;

pub const SOURCE: KernelSource = KernelSource {
    file: "silu_mul.cu",
    code: include_str!("silu_mul.cu"),
    entry_points: &["silu_mul"],
    needs: &[],
};

/// `out = silu(gate) * up` for f32 rows `[gate | up]` of `2 * width`, into bf16 `out`.
pub fn launch(
    device: &Device,
    gate_up: u64,
    out: u64,
    rows: usize,
    width: usize,
) -> Result<(), BackendError> {
    if rows * width == 0 {
        return Ok(());
    }
    let f = device.function(&SOURCE, &Defines::default(), "silu_mul")?;
    let (rows_arg, width_arg) = (int(rows, "rows")?, int(width, "silu_mul width")?);
    let mut args = device.stream().launch_builder(&f);
    args.arg(&gate_up).arg(&out).arg(&rows_arg).arg(&width_arg);
    device.launch(&mut args, elementwise(rows * width), "silu_mul")
}
