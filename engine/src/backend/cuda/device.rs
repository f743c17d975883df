//! One GPU as the kernels use it: a context with one stream (not the legacy default stream,
//! which cannot be recorded into a graph), a cuBLAS handle on that stream with its own
//! workspace, the compiled kernels, and the activation workspace.
//!
//! Event tracking is off: everything runs on the one stream, in order, so cudarc's
//! per-buffer events would only add event nodes to recorded graphs.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, MutexGuard};

use cudarc::cublas::{CudaBlas, sys as cublas_sys};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchArgs,
    LaunchConfig, sys,
};

use super::arena::Arena;
use super::compile::{self, Defines, KernelSource};
use super::driver::{check_libraries, unavailable};
use crate::backend::BackendError;

/// cuBLAS's workspace: what NVIDIA recommends for Hopper. Set by hand so that cuBLAS never
/// allocates while a graph is being recorded.
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// What the backend reports about its GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (u32, u32),
    pub total_memory: usize,
    pub multiprocessors: usize,
    /// Peak memory bandwidth from the memory clock and bus width, when the driver says.
    pub peak_bandwidth_bytes_per_s: Option<f64>,
}

/// Memory clock in kHz and bus width in bits to bytes per second (double data rate).
pub fn peak_bandwidth(memory_clock_khz: i32, bus_width_bits: i32) -> Option<f64> {
    (memory_clock_khz > 0 && bus_width_bits > 0)
        .then(|| 2.0 * f64::from(memory_clock_khz) * 1e3 * f64::from(bus_width_bits) / 8.0)
}

pub(crate) fn driver_error(what: &str) -> impl FnOnce(cudarc::driver::DriverError) -> BackendError {
    move |e| BackendError::Execution(format!("{what}: {e}"))
}

type FunctionKey = (&'static str, Defines, &'static str);

pub struct Device {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    _blas_workspace: CudaSlice<u8>,
    info: DeviceInfo,
    functions: Mutex<HashMap<FunctionKey, CudaFunction>>,
    workspace: CudaSlice<u8>,
    arena: Mutex<Arena>,
}

impl Device {
    /// Opens GPU `ordinal`; refuses, with the reason, when the libraries, a driver or the
    /// device are missing. The activation workspace is allocated by [`Self::allocate_workspace`].
    pub fn open(ordinal: usize) -> Result<Self, BackendError> {
        check_libraries()?;
        let count = CudaContext::device_count()
            .map_err(|e| unavailable(format!("the CUDA driver reports no usable device: {e}")))?;
        if ordinal >= count.max(0) as usize {
            return Err(unavailable(format!(
                "CUDA device {ordinal} asked for, {count} present"
            )));
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| unavailable(format!("opening CUDA device {ordinal}: {e}")))?;
        // SAFETY: no buffer or stream exists yet, so none was tracked.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(driver_error("creating a stream"))?;
        let attribute = |a| {
            ctx.attribute(a)
                .map_err(driver_error("reading a device attribute"))
        };
        use sys::CUdevice_attribute as A;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(driver_error("reading the compute capability"))?;
        let info = DeviceInfo {
            ordinal,
            name: ctx
                .name()
                .map_err(driver_error("reading the device name"))?,
            compute_capability: (major as u32, minor as u32),
            total_memory: ctx
                .total_mem()
                .map_err(driver_error("reading the memory size"))?,
            multiprocessors: attribute(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as usize,
            peak_bandwidth_bytes_per_s: peak_bandwidth(
                attribute(A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE).unwrap_or(0),
                attribute(A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH).unwrap_or(0),
            ),
        };
        if info.compute_capability.0 < 8 {
            return Err(unavailable(format!(
                "{} has compute capability {major}.{minor}; the kernels need bf16 (8.0, Ampere, or newer)",
                info.name
            )));
        }
        let blas = CudaBlas::new(Arc::clone(&stream))
            .map_err(|e| unavailable(format!("starting cuBLAS: {e}")))?;
        let blas_workspace = stream
            .alloc_zeros::<u8>(CUBLAS_WORKSPACE_BYTES)
            .map_err(driver_error("allocating cuBLAS's workspace"))?;
        let (ptr, _) = blas_workspace.device_ptr(&stream);
        // SAFETY: the workspace lives as long as the handle (both are fields of Device).
        unsafe {
            cublas_sys::cublasSetWorkspace_v2(
                *blas.handle(),
                ptr as *mut c_void,
                CUBLAS_WORKSPACE_BYTES,
            )
        }
        .result()
        .map_err(|e| BackendError::Execution(format!("setting cuBLAS's workspace: {e}")))?;
        let workspace = stream
            .alloc_zeros::<u8>(1)
            .map_err(driver_error("allocating the activation workspace"))?;
        Ok(Self {
            ctx,
            stream,
            blas,
            _blas_workspace: blas_workspace,
            info,
            functions: Mutex::new(HashMap::new()),
            workspace,
            arena: Mutex::new(Arena::new(0)),
        })
    }

    /// Replaces the activation workspace with one of `bytes`.
    pub fn allocate_workspace(&mut self, bytes: usize) -> Result<(), BackendError> {
        self.workspace = self
            .stream
            .alloc_zeros::<u8>(bytes.max(1))
            .map_err(driver_error(&format!(
                "allocating the activation workspace ({} MiB)",
                bytes >> 20
            )))?;
        self.arena = Mutex::new(Arena::new(bytes));
        Ok(())
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// `(free, total)` device memory now.
    pub fn memory(&self) -> Result<(usize, usize), BackendError> {
        self.ctx
            .mem_get_info()
            .map_err(driver_error("reading free device memory"))
    }

    /// A kernel of `source` specialised by `defines`, compiled on first use (per process).
    pub fn function(
        &self,
        source: &'static KernelSource,
        defines: &Defines,
        entry: &'static str,
    ) -> Result<CudaFunction, BackendError> {
        let defines = defines.restricted_to(source.needs);
        let key = (source.file, defines, entry);
        if let Some(f) = lock(&self.functions).get(&key) {
            return Ok(f.clone());
        }
        let ptx = compile::compile(source, &key.1, self.info.compute_capability)?;
        let module = self
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(|e| {
                BackendError::Execution(format!(
                    "the driver could not load {} ({}): {e} (PTX from an NVRTC newer than the driver is refused: use the NVRTC of the driver's CUDA release)",
                    source.file, key.1
                ))
            })?;
        let mut functions = lock(&self.functions);
        for &name in source.entry_points {
            let f = module.load_function(name).map_err(driver_error(&format!(
                "loading {name} from {}",
                source.file
            )))?;
            functions.insert((source.file, key.1.clone(), name), f);
        }
        functions.get(&key).cloned().ok_or_else(|| {
            BackendError::Execution(format!("{} has no kernel {entry}", source.file))
        })
    }

    pub fn launch(
        &self,
        args: &mut LaunchArgs<'_>,
        config: LaunchConfig,
        kernel: &str,
    ) -> Result<(), BackendError> {
        // SAFETY: every wrapper passes the arguments its kernel declares, in order, with
        // addresses inside live allocations (checked by the caller's shape checks).
        unsafe { args.launch(config) }
            .map(drop)
            .map_err(driver_error(&format!("launching {kernel}")))
    }

    /// Starts a step: the workspace is free again; returns the new generation.
    pub fn reset_workspace(&self) -> u64 {
        lock(&self.arena).reset()
    }

    pub fn generation(&self) -> u64 {
        lock(&self.arena).generation()
    }

    /// How far the workspace is in use (see [`Self::resume_workspace`]).
    pub fn workspace_used(&self) -> usize {
        lock(&self.arena).used()
    }

    /// After replaying a graph: the workspace is in use as far as when it was recorded.
    pub fn resume_workspace(&self, used: usize) {
        lock(&self.arena).resume_at(used);
    }

    /// The address of `bytes` of workspace for this step.
    pub fn take(&self, bytes: usize) -> Result<u64, BackendError> {
        let offset = lock(&self.arena)
            .take(bytes)
            .map_err(BackendError::Execution)?;
        Ok(self.address(&self.workspace) + offset as u64)
    }

    /// The device address of a buffer.
    pub fn address<T>(&self, buffer: &CudaSlice<T>) -> u64 {
        let (ptr, _) = buffer.device_ptr(&self.stream);
        ptr
    }

    /// A new buffer holding `values`.
    pub fn buffer<T: DeviceRepr>(&self, values: &[T]) -> Result<CudaSlice<T>, BackendError> {
        self.stream
            .clone_htod(values)
            .map_err(driver_error("copying to the device"))
    }

    pub fn zeros<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>, BackendError> {
        self.stream
            .alloc_zeros(len.max(1))
            .map_err(driver_error("allocating device memory"))
    }

    /// Copies `values` to `address`, which must have room for them.
    pub fn upload<T>(&self, address: u64, values: &[T]) -> Result<(), BackendError> {
        // SAFETY: callers pass an address they took with room for `values`; the copy from
        // pageable memory is staged before this returns, so `values` may be dropped.
        unsafe {
            cudarc::driver::result::memcpy_htod_async(address, values, self.stream.cu_stream())
        }
        .map_err(driver_error("copying to the device"))
    }

    /// Waits for the stream, then copies `out.len()` values from `address`.
    pub fn download<T>(&self, address: u64, out: &mut [T]) -> Result<(), BackendError> {
        // SAFETY: callers pass an address of at least `out.len()` values of T.
        unsafe { cudarc::driver::result::memcpy_dtoh_async(out, address, self.stream.cu_stream()) }
            .map_err(driver_error("copying from the device"))?;
        self.synchronize()
    }

    pub fn synchronize(&self) -> Result<(), BackendError> {
        self.stream
            .synchronize()
            .map_err(driver_error("running the step on the GPU"))
    }

    /// Row-major `c[n, m] (+)= x[n, k] · w[m, k]ᵀ`: bf16 `x` and `w`, f32 `c` and f32
    /// accumulation; `accumulate` adds to `c` (beta = 1), folding a residual add into the
    /// GEMM. In cuBLAS's column-major terms: `C[m, n] = Wᵀ[m, k] · X[k, n]`.
    pub fn gemm(
        &self,
        w: u64,
        x: u64,
        c: u64,
        (n, m, k): (usize, usize, usize),
        accumulate: bool,
    ) -> Result<(), BackendError> {
        if n == 0 || m == 0 || k == 0 {
            return Ok(());
        }
        let dim = |v: usize| super::ops::int(v, "GEMM dimension");
        let (n, m, k) = (dim(n)?, dim(m)?, dim(k)?);
        let alpha = 1.0f32;
        let beta = if accumulate { 1.0f32 } else { 0.0 };
        use cublas_sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
        // SAFETY: the callers' shape checks keep every read inside `w`, `x` and `c`; alpha
        // and beta are host scalars (the handle's default pointer mode) read at the call.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *self.blas.handle(),
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                m,
                n,
                k,
                (&alpha as *const f32).cast(),
                w as *const c_void,
                cudaDataType::CUDA_R_16BF,
                k,
                x as *const c_void,
                cudaDataType::CUDA_R_16BF,
                k,
                (&beta as *const f32).cast(),
                c as *mut c_void,
                cudaDataType::CUDA_R_32F,
                m,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| BackendError::Execution(format!("cuBLAS GEMM [{n}, {k}] × [{m}, {k}]ᵀ: {e}")))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves nothing half-written that matters.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_bandwidth_is_double_data_rate_over_the_bus() {
        // H100 SXM: 2619 MHz × 5120 bits.
        let h100 = peak_bandwidth(2_619_000, 5120).expect("known");
        assert!((h100 / 1e12 - 3.352).abs() < 0.01, "{h100}");
        assert_eq!(peak_bandwidth(0, 5120), None);
    }
}
