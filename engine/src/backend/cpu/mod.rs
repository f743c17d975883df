//! The CPU implementation of the kernel layer.
//!
//! Weights stay as the file stores them (GGUF's quantised blocks, 16-bit floats) unless a
//! precision is asked for; quantised matmuls quantise activations per block of 32 to int8
//! and use integer dot products. The SIMD path is chosen at start-up from the CPU's
//! features (AVX-512 VNNI, AVX-VNNI, AVX2, or portable Rust) and every path computes the
//! same bits. Work is split across the kernels' own rayon pool (`--threads` sizes it).

mod attention;
pub mod kv_cache;
pub mod linear;
mod ops;
pub mod simd;

use std::sync::Arc;

use kv_cache::CpuKvCache;
use linear::{CpuLinear, WeightDtype};
use simd::Isa;

use super::kernels::{AttentionShape, GatedActivation, Kernels, KvCacheDtype, KvCacheLayout};
use super::runner::ModelRunner;
use super::step::StepMetadata;
use super::{BackendError, BlockId, KvCacheShape};
use crate::model::{Decoder, LoadedModel, ModelError};
use crate::weights::HostTensor;

/// How the CPU backend runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuConfig {
    pub weight_dtype: WeightDtype,
    /// The SIMD path; `None` picks the best this CPU has.
    pub isa: Option<Isa>,
    /// Worker threads; `None` is one per core.
    pub threads: Option<usize>,
}

impl Default for CpuConfig {
    fn default() -> Self {
        Self {
            weight_dtype: WeightDtype::AsStored,
            isa: None,
            threads: None,
        }
    }
}

pub struct CpuKernels {
    isa: Isa,
    weight_dtype: WeightDtype,
    /// Every kernel of a step runs inside this pool: the step is handed to it once, and
    /// each kernel's parallel work is split among its threads from there.
    pool: rayon::ThreadPool,
}

impl CpuKernels {
    /// Refuses a SIMD path this CPU cannot run.
    pub fn new(config: CpuConfig) -> Result<Self, BackendError> {
        let isa = match config.isa {
            None => Isa::detect(),
            Some(isa) if isa.is_supported() => isa,
            Some(isa) => {
                return Err(BackendError::Unavailable {
                    backend: "cpu",
                    reason: format!(
                        "this CPU cannot run the {isa} kernels (it can run: {})",
                        Isa::supported()
                            .iter()
                            .map(|i| i.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        };
        let mut pool = rayon::ThreadPoolBuilder::new().thread_name(|i| format!("cpu-kernels-{i}"));
        if let Some(threads) = config.threads {
            pool = pool.num_threads(threads);
        }
        let pool = pool.build().map_err(|e| BackendError::Unavailable {
            backend: "cpu",
            reason: format!("starting the worker threads: {e}"),
        })?;
        Ok(Self {
            isa,
            weight_dtype: config.weight_dtype,
            pool,
        })
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }
}

/// A model placed on the CPU: shared by every backend made from it, each with its own KV
/// cache.
#[derive(Clone)]
pub struct CpuModel {
    pub kernels: Arc<CpuKernels>,
    pub model: Arc<Decoder<CpuKernels>>,
}

impl CpuModel {
    pub fn place(loaded: &LoadedModel, config: CpuConfig) -> Result<Self, ModelError> {
        let kernels = CpuKernels::new(config)?;
        let model = Decoder::load(&loaded.config, loaded.tensors.as_ref(), &kernels)?;
        Ok(Self {
            kernels: Arc::new(kernels),
            model: Arc::new(model),
        })
    }

    /// A backend with a fresh KV cache of `shape` in `dtype`.
    pub fn backend(
        &self,
        shape: KvCacheShape,
        dtype: KvCacheDtype,
    ) -> Result<CpuBackend, BackendError> {
        ModelRunner::new(
            Arc::clone(&self.kernels),
            Arc::clone(&self.model),
            shape,
            dtype,
        )
    }

    /// Bytes the placed weights take.
    pub fn weight_bytes(&self) -> usize {
        self.model.weight_bytes(&self.kernels)
    }
}

/// A backend running a model on the CPU kernels.
pub type CpuBackend = ModelRunner<CpuKernels>;

/// An activation matrix in host memory.
pub struct CpuTensor {
    rows: usize,
    width: usize,
    data: Vec<f32>,
}

impl CpuTensor {
    /// Row `index`, or an error naming `what` when there is no such row.
    fn row(&self, index: usize, what: &str) -> Result<&[f32], BackendError> {
        if index >= self.rows {
            return Err(BackendError::Execution(format!(
                "{what}: row {index} of {}",
                self.rows
            )));
        }
        Ok(&self.data[index * self.width..(index + 1) * self.width])
    }

    fn check(&self, rows: usize, width: usize, what: &str) -> Result<(), BackendError> {
        if (self.rows, self.width) == (rows, width) {
            Ok(())
        } else {
            Err(BackendError::Execution(format!(
                "{what}: [{}, {}] where [{rows}, {width}] was expected",
                self.rows, self.width
            )))
        }
    }
}

impl Kernels for CpuKernels {
    type Activations = CpuTensor;
    type Linear = CpuLinear;
    type Vector = Vec<f32>;
    type Rope = Vec<f32>;
    type KvCache = CpuKvCache;
    /// Host memory is the device: the metadata as computed.
    type Step = StepMetadata;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn execute<R: Send>(&self, step: impl FnOnce() -> R + Send) -> R {
        self.pool.install(step)
    }

    fn place_linear(&self, parts: &[HostTensor<'_>]) -> Result<CpuLinear, BackendError> {
        CpuLinear::new(parts, self.weight_dtype)
    }

    fn place_vector(&self, vector: &HostTensor<'_>) -> Result<Vec<f32>, BackendError> {
        Ok(vector.to_f32())
    }

    fn place_rope(&self, inv_freq: &[f32]) -> Result<Vec<f32>, BackendError> {
        Ok(inv_freq.to_vec())
    }

    fn linear_bytes(&self, linear: &CpuLinear) -> usize {
        linear.bytes()
    }

    fn new_kv_cache(&self, layout: &KvCacheLayout) -> Result<CpuKvCache, BackendError> {
        if !layout.head_dim.is_multiple_of(8) {
            return Err(BackendError::Unavailable {
                backend: "cpu",
                reason: format!("head_dim {} is not a multiple of 8", layout.head_dim),
            });
        }
        Ok(CpuKvCache::new(layout))
    }

    fn upload_step(&self, step: &StepMetadata) -> Result<StepMetadata, BackendError> {
        Ok(step.clone())
    }

    fn activations(&self, rows: usize, width: usize) -> Result<CpuTensor, BackendError> {
        Ok(CpuTensor {
            rows,
            width,
            data: vec![0.0; rows * width],
        })
    }

    fn activations_from(
        &self,
        rows: usize,
        width: usize,
        values: &[f32],
    ) -> Result<CpuTensor, BackendError> {
        if values.len() != rows * width {
            return Err(BackendError::Execution(format!(
                "{} values for a [{rows}, {width}] matrix",
                values.len()
            )));
        }
        Ok(CpuTensor {
            rows,
            width,
            data: values.to_vec(),
        })
    }

    fn read(&self, x: &CpuTensor) -> Result<Vec<f32>, BackendError> {
        Ok(x.data.clone())
    }

    fn embedding(
        &self,
        table: &CpuLinear,
        step: &StepMetadata,
        out: &mut CpuTensor,
    ) -> Result<(), BackendError> {
        out.check(step.num_tokens(), table.cols(), "embedding output")?;
        for (row, &token) in out.data.chunks_exact_mut(table.cols()).zip(&step.token_ids) {
            table.dequantize_row(token as usize, row);
        }
        Ok(())
    }

    fn rms_norm(
        &self,
        x: &CpuTensor,
        weight: &Vec<f32>,
        eps: f32,
        out: &mut CpuTensor,
    ) -> Result<(), BackendError> {
        out.check(x.rows, weight.len(), "rms_norm output")?;
        ops::rms_norm(&x.data, weight, eps, &mut out.data);
        Ok(())
    }

    fn linear(
        &self,
        x: &CpuTensor,
        w: &CpuLinear,
        out: &mut CpuTensor,
    ) -> Result<(), BackendError> {
        x.check(x.rows, w.cols(), "linear input")?;
        out.check(x.rows, w.rows(), "linear output")?;
        w.matmul(self.isa, &x.data, x.rows, &mut out.data, false);
        Ok(())
    }

    fn add_linear(
        &self,
        residual: &mut CpuTensor,
        x: &CpuTensor,
        w: &CpuLinear,
    ) -> Result<(), BackendError> {
        x.check(x.rows, w.cols(), "linear input")?;
        residual.check(x.rows, w.rows(), "residual")?;
        w.matmul(self.isa, &x.data, x.rows, &mut residual.data, true);
        Ok(())
    }

    fn add_bias(&self, x: &mut CpuTensor, bias: &Vec<f32>) -> Result<(), BackendError> {
        x.check(x.rows, bias.len(), "bias")?;
        ops::add_bias(&mut x.data, bias);
        Ok(())
    }

    fn rope_and_cache_kv(
        &self,
        qkv: &mut CpuTensor,
        shape: &AttentionShape,
        rope: &Vec<f32>,
        layer: usize,
        step: &StepMetadata,
        cache: &mut CpuKvCache,
    ) -> Result<(), BackendError> {
        qkv.check(step.num_tokens(), shape.qkv_width(), "qkv")?;
        let half = rope.len();
        if 2 * half > shape.head_dim {
            return Err(BackendError::Execution(format!(
                "rope: {half} rotary pairs do not fit heads of {}",
                shape.head_dim
            )));
        }
        let (mut cos, mut sin) = (vec![0.0; half], vec![0.0; half]);
        let (q, kv) = (shape.q_width(), shape.kv_width());
        for (row, (&position, &slot)) in qkv
            .data
            .chunks_exact_mut(shape.qkv_width())
            .zip(step.positions.iter().zip(&step.slot_mapping))
        {
            ops::rope_angles(position, rope, &mut cos, &mut sin);
            let (queries, keys_values) = row.split_at_mut(q);
            ops::rope(queries, shape.num_heads, shape.head_dim, &cos, &sin);
            ops::rope(keys_values, shape.num_kv_heads, shape.head_dim, &cos, &sin);
            let (key, value) = keys_values.split_at(kv);
            cache.write(layer, slot as usize, key, value);
        }
        Ok(())
    }

    fn paged_attention(
        &self,
        qkv: &CpuTensor,
        shape: &AttentionShape,
        layer: usize,
        step: &StepMetadata,
        cache: &CpuKvCache,
        out: &mut CpuTensor,
    ) -> Result<(), BackendError> {
        qkv.check(step.num_tokens(), shape.qkv_width(), "qkv")?;
        out.check(step.num_tokens(), shape.q_width(), "attention output")?;
        attention::paged_attention(
            self.isa,
            &qkv.data,
            shape,
            layer,
            step,
            cache,
            &mut out.data,
        );
        Ok(())
    }

    fn gated_activation(
        &self,
        gate_up: &CpuTensor,
        activation: GatedActivation,
        out: &mut CpuTensor,
    ) -> Result<(), BackendError> {
        out.check(gate_up.rows, gate_up.width / 2, "gated activation output")?;
        match activation {
            GatedActivation::Silu => {
                ops::silu_mul(self.isa, &gate_up.data, out.width, &mut out.data)
            }
            GatedActivation::GeluTanh => {
                ops::gelu_tanh_mul(&gate_up.data, out.width, &mut out.data)
            }
        }
        Ok(())
    }

    fn scale(&self, x: &mut CpuTensor, factor: f32) -> Result<(), BackendError> {
        x.data.iter_mut().for_each(|v| *v *= factor);
        Ok(())
    }

    fn soft_cap(&self, x: &mut CpuTensor, cap: f32) -> Result<(), BackendError> {
        x.data.iter_mut().for_each(|v| *v = cap * (*v / cap).tanh());
        Ok(())
    }

    fn add(&self, residual: &mut CpuTensor, x: &CpuTensor) -> Result<(), BackendError> {
        residual.check(x.rows, x.width, "residual")?;
        for (r, v) in residual.data.iter_mut().zip(&x.data) {
            *r += v;
        }
        Ok(())
    }

    fn head_rms_norm(
        &self,
        qkv: &mut CpuTensor,
        shape: &AttentionShape,
        q_weight: &Vec<f32>,
        k_weight: &Vec<f32>,
        eps: f32,
    ) -> Result<(), BackendError> {
        qkv.check(qkv.rows, shape.qkv_width(), "qkv")?;
        if q_weight.len() != shape.head_dim || k_weight.len() != shape.head_dim {
            return Err(BackendError::Execution(format!(
                "head_rms_norm: weights of {} and {} for heads of {}",
                q_weight.len(),
                k_weight.len(),
                shape.head_dim
            )));
        }
        for row in qkv.data.chunks_exact_mut(shape.qkv_width()) {
            let (queries, keys_values) = row.split_at_mut(shape.q_width());
            ops::head_rms_norm(queries, shape.num_heads, q_weight, eps);
            ops::head_rms_norm(keys_values, shape.num_kv_heads, k_weight, eps);
        }
        Ok(())
    }

    fn gather_rows(
        &self,
        x: &CpuTensor,
        rows: &[u32],
        out: &mut CpuTensor,
    ) -> Result<(), BackendError> {
        out.check(rows.len(), x.width, "gathered rows")?;
        for (row, &source) in out.data.chunks_exact_mut(x.width).zip(rows) {
            row.copy_from_slice(x.row(source as usize, "gather_rows")?);
        }
        Ok(())
    }

    fn scatter_add_rows(
        &self,
        out: &mut CpuTensor,
        x: &CpuTensor,
        rows: &[u32],
        weights: &[f32],
    ) -> Result<(), BackendError> {
        x.check(rows.len(), out.width, "scattered rows")?;
        if weights.len() != rows.len() {
            return Err(BackendError::Execution(format!(
                "scatter_add_rows: {} weights for {} rows",
                weights.len(),
                rows.len()
            )));
        }
        let width = out.width;
        for ((values, &target), &weight) in x.data.chunks_exact(width).zip(rows).zip(weights) {
            let target = target as usize;
            if target >= out.rows {
                return Err(BackendError::Execution(format!(
                    "scatter_add_rows: row {target} of {}",
                    out.rows
                )));
            }
            for (o, v) in out.data[target * width..(target + 1) * width]
                .iter_mut()
                .zip(values)
            {
                *o += weight * v;
            }
        }
        Ok(())
    }

    fn gather_logits_rows(
        &self,
        x: &CpuTensor,
        step: &StepMetadata,
        out: &mut CpuTensor,
    ) -> Result<(), BackendError> {
        out.check(step.logits_rows.len(), x.width, "logits rows")?;
        for (row, &source) in out.data.chunks_exact_mut(x.width).zip(&step.logits_rows) {
            let source = source as usize;
            row.copy_from_slice(&x.data[source * x.width..(source + 1) * x.width]);
        }
        Ok(())
    }

    fn copy_blocks(
        &self,
        cache: &mut CpuKvCache,
        copies: &[(BlockId, BlockId)],
    ) -> Result<(), BackendError> {
        for &(source, destination) in copies {
            cache.copy_block(source, destination);
        }
        Ok(())
    }
}
