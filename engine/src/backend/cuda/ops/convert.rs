//! Launches `convert.cu`.

use cudarc::driver::PushKernelArg;

use super::elementwise;
use crate::backend::BackendError;
use crate::backend::cuda::compile::{Defines, KernelSource};
use crate::backend::cuda::device::Device;

pub const SOURCE: KernelSource = KernelSource {
    file: "convert.cu",
    code: include_str!("convert.cu"),
    entry_points: &["f32_to_bf16_rows"],
    needs: &[],
};

/// `n` f32 values at `x` rounded to bf16 at `out`.
pub fn launch(device: &Device, x: u64, out: u64, n: usize) -> Result<(), BackendError> {
    if n == 0 {
        return Ok(());
    }
    let f = device.function(&SOURCE, &Defines::default(), "f32_to_bf16_rows")?;
    let count = n as u64;
    let mut args = device.stream().launch_builder(&f);
    args.arg(&x).arg(&out).arg(&count);
    device.launch(&mut args, elementwise(n), "f32_to_bf16_rows")
}
