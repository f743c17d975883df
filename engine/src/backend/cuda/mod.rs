//! The CUDA implementation of the kernel layer.
//!
//! Weights are placed in bf16 (quantised GGUF weights are decoded to bf16 at placement);
//! the residual stream and every GEMM's output are f32, and every GEMM accumulates in f32.
//! Linear layers are cuBLAS GEMMs (`add_linear` folds the residual add in with beta = 1);
//! everything else is an NVRTC-compiled kernel from `ops/`, one concern per `.cu` file,
//! specialised at first use by head size, GQA group and cache precision. A kernel feeding a
//! GEMM writes bf16 directly; an activation records which precision it holds.
//!
//! Activations live in one workspace allocated at start-up and handed out front to back
//! within a step ([`arena`]); a step's metadata is packed into it with one copy
//! ([`step_upload`]). Equal-shaped steps therefore see equal addresses, which lets
//! [`runner::CudaRunner`] record decode steps as CUDA graphs ([`graphs`]) and replay them.
//! The KV cache gets what `--gpu-memory-utilization` leaves once the weights and the
//! workspace are placed ([`memory_plan`]).
//!
//! libcuda, NVRTC and cuBLAS are loaded at run time: a build with this backend starts on a
//! machine without them, and asking for the backend there is an error naming what is
//! missing ([`driver`]).

pub mod arena;
pub mod compile;
pub mod device;
pub mod driver;
pub mod graphs;
mod kv_cache;
mod linear;
pub mod memory_plan;
pub mod ops;
mod runner;
pub mod step_upload;
pub mod workspace;

use std::sync::Arc;

use half::bf16;

use compile::{Define, Defines, kv_dtype_code};
use device::{Device, DeviceInfo};
pub use kv_cache::CudaKvCache;
pub use linear::CudaLinear;
use memory_plan::MemoryPlan;
pub use runner::CudaRunner;
use step_upload::{PackedStep, StepCapacity, pack_step};
use workspace::{ModelDims, workspace_bytes};

use super::kernels::{
    AttentionShape, GatedActivation, Kernels, KvCacheDtype, KvCacheLayout, TokenPick,
};
use super::step::StepMetadata;
use super::{BackendError, BlockId, KvCacheShape};
use crate::model::{Decoder, LoadedModel, ModelConfig, ModelError};
use crate::weights::HostTensor;

/// How the CUDA backend runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CudaConfig {
    /// The GPU's ordinal.
    pub device: usize,
    /// Share of the GPU's memory the weights, workspace and KV cache may take together.
    pub gpu_memory_utilization: f32,
    /// The largest step: tokens, sequences, and the longest sequence (for block tables).
    pub max_num_batched_tokens: usize,
    pub max_num_seqs: usize,
    pub max_model_len: usize,
    pub block_size: usize,
    pub kv_cache_dtype: KvCacheDtype,
    /// Record decode steps as CUDA graphs and replay them.
    pub cuda_graphs: bool,
}

impl CudaConfig {
    /// The step the workspace is sized for. Decode steps are padded up to a graph bucket,
    /// at most `max_num_seqs` tokens.
    pub fn capacity(&self) -> StepCapacity {
        StepCapacity {
            max_tokens: self.max_num_batched_tokens.max(self.max_num_seqs),
            max_seqs: self.max_num_seqs,
            max_blocks_per_seq: self.max_model_len.div_ceil(self.block_size.max(1)),
        }
    }
}

/// Which precision an activation holds. Its buffer always has room for f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    Bf16,
}

/// A `[rows, width]` activation matrix in the step's workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaActivations {
    rows: usize,
    width: usize,
    address: u64,
    precision: Precision,
    /// The step it belongs to; later steps refuse it.
    generation: u64,
}

impl CudaActivations {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The first `rows` rows (the real rows of a padded step).
    pub(crate) fn first_rows(mut self, rows: usize) -> Self {
        self.rows = rows.min(self.rows);
        self
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

    fn expect(&self, precision: Precision, what: &str) -> Result<(), BackendError> {
        if self.precision == precision {
            Ok(())
        } else {
            Err(BackendError::Execution(format!(
                "{what} reads {precision:?} rows, this activation holds {:?}",
                self.precision
            )))
        }
    }
}

/// A step's metadata on the device.
pub struct CudaStep {
    packed: PackedStep,
    address: u64,
    generation: u64,
}

impl CudaStep {
    fn at(&self, offset_words: usize) -> u64 {
        self.address + 4 * offset_words as u64
    }
}

pub struct CudaKernels {
    device: Device,
    config: CudaConfig,
    capacity: StepCapacity,
    /// Tokens per prefill-attention tile, for the model's GQA group.
    tile_tokens: usize,
    dims: ModelDims,
}

impl CudaKernels {
    /// Opens the GPU and sizes the workspace for `dims` at `config`'s largest step.
    pub fn new(config: CudaConfig, dims: ModelDims) -> Result<Self, BackendError> {
        if dims.num_kv_heads == 0 || !dims.num_heads.is_multiple_of(dims.num_kv_heads) {
            return Err(driver::unavailable(format!(
                "{} query heads do not group over {} KV heads",
                dims.num_heads, dims.num_kv_heads
            )));
        }
        if !ops::attention_prefill::supports_head_dim(dims.head_dim) {
            return Err(driver::unavailable(format!(
                "head_dim {} (the attention kernels take multiples of 4 up to 256)",
                dims.head_dim
            )));
        }
        let tile_tokens = ops::attention_prefill::tile_tokens(dims.group())?;
        let capacity = config.capacity();
        let mut device = Device::open(config.device)?;
        let bytes = workspace_bytes(&dims, &capacity, tile_tokens, device.info().multiprocessors);
        device.allocate_workspace(bytes)?;
        Ok(Self {
            device,
            config,
            capacity,
            tile_tokens,
            dims,
        })
    }

    pub fn info(&self) -> &DeviceInfo {
        self.device.info()
    }

    pub fn config(&self) -> &CudaConfig {
        &self.config
    }

    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    fn live(&self, x: &CudaActivations) -> Result<(), BackendError> {
        if x.generation == self.device.generation() {
            Ok(())
        } else {
            Err(BackendError::Execution(
                "an activation of an earlier step was used after its workspace was reused".into(),
            ))
        }
    }

    fn live_step(&self, step: &CudaStep) -> Result<(), BackendError> {
        if step.generation == self.device.generation() {
            Ok(())
        } else {
            Err(BackendError::Execution(
                "a step's metadata was used after the next step was uploaded".into(),
            ))
        }
    }

    fn attention_defines(&self, shape: &AttentionShape, dtype: KvCacheDtype) -> Defines {
        Defines::new(&[
            (Define::HeadDim, shape.head_dim),
            (Define::Group, shape.group_size()),
            (Define::KvDtype, kv_dtype_code(dtype)),
        ])
    }

    /// The bf16 rows of `x` for a GEMM: `x` itself, or a copy rounded from f32.
    fn gemm_input(&self, x: &CudaActivations) -> Result<u64, BackendError> {
        match x.precision {
            Precision::Bf16 => Ok(x.address),
            Precision::F32 => {
                let n = x.rows * x.width;
                let copy = self.device.take(2 * n)?;
                ops::convert::launch(&self.device, x.address, copy, n)?;
                Ok(copy)
            }
        }
    }

    /// Sets the activation's rows to come after this step; used by graph replay.
    pub(crate) fn restamp(&self, mut x: CudaActivations) -> CudaActivations {
        x.generation = self.device.generation();
        x
    }
}

impl Kernels for CudaKernels {
    type Activations = CudaActivations;
    type Linear = CudaLinear;
    type Vector = cudarc::driver::CudaSlice<f32>;
    type Rope = cudarc::driver::CudaSlice<f32>;
    type KvCache = CudaKvCache;
    type Step = CudaStep;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn place_linear(&self, parts: &[HostTensor<'_>]) -> Result<CudaLinear, BackendError> {
        CudaLinear::place(&self.device, parts)
    }

    fn place_vector(&self, vector: &HostTensor<'_>) -> Result<Self::Vector, BackendError> {
        self.device.buffer(&vector.to_f32())
    }

    fn place_rope(&self, inv_freq: &[f32]) -> Result<Self::Rope, BackendError> {
        self.device.buffer(inv_freq)
    }

    fn linear_bytes(&self, linear: &CudaLinear) -> usize {
        linear.bytes()
    }

    fn new_kv_cache(&self, layout: &KvCacheLayout) -> Result<CudaKvCache, BackendError> {
        if layout.head_dim != self.dims.head_dim || layout.num_kv_heads != self.dims.num_kv_heads {
            return Err(BackendError::Execution(format!(
                "a cache of {} KV heads of {} for a model of {} of {}",
                layout.num_kv_heads, layout.head_dim, self.dims.num_kv_heads, self.dims.head_dim
            )));
        }
        if layout.shape.block_size != self.config.block_size {
            return Err(BackendError::Execution(format!(
                "a cache of blocks of {} tokens, where the workspace was sized for {}",
                layout.shape.block_size, self.config.block_size
            )));
        }
        CudaKvCache::new(&self.device, layout)
    }

    fn upload_step(&self, step: &StepMetadata) -> Result<CudaStep, BackendError> {
        let packed = pack_step(step, &self.capacity, self.tile_tokens)?;
        let generation = self.device.reset_workspace();
        let address = self.device.take(4 * packed.words.len())?;
        self.device.upload(address, &packed.words)?;
        Ok(CudaStep {
            packed,
            address,
            generation,
        })
    }

    fn activations(&self, rows: usize, width: usize) -> Result<CudaActivations, BackendError> {
        Ok(CudaActivations {
            rows,
            width,
            address: self.device.take(4 * rows * width)?,
            precision: Precision::F32,
            generation: self.device.generation(),
        })
    }

    fn activations_from(
        &self,
        rows: usize,
        width: usize,
        values: &[f32],
    ) -> Result<CudaActivations, BackendError> {
        if values.len() != rows * width {
            return Err(BackendError::Execution(format!(
                "{} values for a [{rows}, {width}] matrix",
                values.len()
            )));
        }
        let x = self.activations(rows, width)?;
        self.device.upload(x.address, values)?;
        Ok(x)
    }

    fn read(&self, x: &CudaActivations) -> Result<Vec<f32>, BackendError> {
        self.live(x)?;
        let n = x.rows * x.width;
        match x.precision {
            Precision::F32 => {
                let mut out = vec![0.0f32; n];
                self.device.download(x.address, &mut out)?;
                Ok(out)
            }
            Precision::Bf16 => {
                let mut raw = vec![0u16; n];
                self.device.download(x.address, &mut raw)?;
                Ok(raw
                    .into_iter()
                    .map(|b| bf16::from_bits(b).to_f32())
                    .collect())
            }
        }
    }

    fn embedding(
        &self,
        table: &CudaLinear,
        step: &CudaStep,
        out: &mut CudaActivations,
    ) -> Result<(), BackendError> {
        self.live_step(step)?;
        self.live(out)?;
        out.check(step.packed.num_tokens, table.cols(), "embedding output")?;
        ops::embedding::launch(
            &self.device,
            table.address(&self.device),
            step.at(step.packed.layout.token_ids),
            out.address,
            out.rows,
            out.width,
        )?;
        out.precision = Precision::F32;
        Ok(())
    }

    fn rms_norm(
        &self,
        x: &CudaActivations,
        weight: &Self::Vector,
        eps: f32,
        out: &mut CudaActivations,
    ) -> Result<(), BackendError> {
        self.live(x)?;
        self.live(out)?;
        x.expect(Precision::F32, "rms_norm")?;
        out.check(x.rows, weight.len(), "rms_norm output")?;
        ops::rms_norm::launch(
            &self.device,
            x.address,
            self.device.address(weight),
            out.address,
            x.rows,
            x.width,
            eps,
        )?;
        out.precision = Precision::Bf16;
        Ok(())
    }

    fn linear(
        &self,
        x: &CudaActivations,
        w: &CudaLinear,
        out: &mut CudaActivations,
    ) -> Result<(), BackendError> {
        self.live(x)?;
        self.live(out)?;
        x.check(x.rows, w.cols(), "linear input")?;
        out.check(x.rows, w.rows(), "linear output")?;
        let input = self.gemm_input(x)?;
        self.device.gemm(
            w.address(&self.device),
            input,
            out.address,
            (x.rows, w.rows(), w.cols()),
            false,
        )?;
        out.precision = Precision::F32;
        Ok(())
    }

    fn add_linear(
        &self,
        residual: &mut CudaActivations,
        x: &CudaActivations,
        w: &CudaLinear,
    ) -> Result<(), BackendError> {
        self.live(x)?;
        self.live(residual)?;
        x.check(x.rows, w.cols(), "linear input")?;
        residual.check(x.rows, w.rows(), "residual")?;
        residual.expect(Precision::F32, "the residual add")?;
        let input = self.gemm_input(x)?;
        self.device.gemm(
            w.address(&self.device),
            input,
            residual.address,
            (x.rows, w.rows(), w.cols()),
            true,
        )
    }

    fn add_bias(&self, x: &mut CudaActivations, bias: &Self::Vector) -> Result<(), BackendError> {
        self.live(x)?;
        x.check(x.rows, bias.len(), "bias")?;
        x.expect(Precision::F32, "add_bias")?;
        ops::bias::launch(
            &self.device,
            x.address,
            self.device.address(bias),
            x.rows,
            x.width,
        )
    }

    fn rope_and_cache_kv(
        &self,
        qkv: &mut CudaActivations,
        shape: &AttentionShape,
        rope: &Self::Rope,
        layer: usize,
        step: &CudaStep,
        cache: &mut CudaKvCache,
    ) -> Result<(), BackendError> {
        self.live_step(step)?;
        self.live(qkv)?;
        qkv.check(step.packed.num_tokens, shape.qkv_width(), "qkv")?;
        qkv.expect(Precision::F32, "rope")?;
        let (key_cache, value_cache) = cache.layer(layer)?;
        let l = &step.packed.layout;
        ops::rope_cache::launch(
            &self.device,
            &self.attention_defines(shape, cache.layout().dtype),
            &ops::rope_cache::RopeCacheArgs {
                qkv: qkv.address,
                inv_freq: self.device.address(rope),
                positions: step.at(l.positions),
                slots: step.at(l.slot_mapping),
                key_cache,
                value_cache,
            },
            shape,
            qkv.rows,
        )
    }

    fn paged_attention(
        &self,
        qkv: &CudaActivations,
        shape: &AttentionShape,
        layer: usize,
        step: &CudaStep,
        cache: &CudaKvCache,
        out: &mut CudaActivations,
    ) -> Result<(), BackendError> {
        if shape.sliding_window.is_some() || shape.logit_softcap.is_some() {
            return Err(not_on_cuda("sliding-window or soft-capped attention"));
        }
        self.live_step(step)?;
        self.live(qkv)?;
        self.live(out)?;
        qkv.check(step.packed.num_tokens, shape.qkv_width(), "qkv")?;
        qkv.expect(Precision::F32, "attention")?;
        out.check(step.packed.num_tokens, shape.q_width(), "attention output")?;
        let (key_cache, value_cache) = cache.layer(layer)?;
        let defines = self.attention_defines(shape, cache.layout().dtype);
        let p = &step.packed;
        let l = &p.layout;
        let items = p.num_decode_items;
        let partitions = ops::attention_decode::partitions(
            items,
            shape.num_kv_heads,
            self.device.info().multiprocessors,
        );
        let (acc_floats, max_sum_floats) =
            ops::attention_decode::partial_floats(items, shape, partitions);
        let (partial_acc, partial_max_sum) = if acc_floats > 0 {
            (
                self.device.take(4 * acc_floats)?,
                self.device.take(4 * max_sum_floats)?,
            )
        } else {
            (0, 0)
        };
        ops::attention_decode::launch(
            &self.device,
            &defines,
            &ops::attention_decode::DecodeArgs {
                qkv: qkv.address,
                key_cache,
                value_cache,
                items: step.at(l.decode_items),
                context_lens: step.at(l.context_lens),
                block_tables: step.at(l.block_tables),
                out: out.address,
                partial_acc,
                partial_max_sum,
            },
            shape,
            items,
            p.table_stride,
            p.block_size,
            partitions,
        )?;
        ops::attention_prefill::launch(
            &self.device,
            &defines,
            &ops::attention_prefill::PrefillArgs {
                qkv: qkv.address,
                key_cache,
                value_cache,
                tiles: step.at(l.prefill_tiles),
                positions: step.at(l.positions),
                context_lens: step.at(l.context_lens),
                block_tables: step.at(l.block_tables),
                out: out.address,
            },
            shape,
            p.num_prefill_tiles,
            p.table_stride,
            p.block_size,
        )?;
        out.precision = Precision::Bf16;
        Ok(())
    }

    fn gated_activation(
        &self,
        gate_up: &CudaActivations,
        activation: GatedActivation,
        out: &mut CudaActivations,
    ) -> Result<(), BackendError> {
        if activation != GatedActivation::Silu {
            return Err(not_on_cuda("GeGLU"));
        }
        self.live(gate_up)?;
        self.live(out)?;
        gate_up.expect(Precision::F32, "silu_mul")?;
        out.check(gate_up.rows, gate_up.width / 2, "silu_mul output")?;
        ops::silu_mul::launch(
            &self.device,
            gate_up.address,
            out.address,
            out.rows,
            out.width,
        )?;
        out.precision = Precision::Bf16;
        Ok(())
    }

    fn scale(&self, _: &mut CudaActivations, _: f32) -> Result<(), BackendError> {
        Err(not_on_cuda("scaled embeddings"))
    }

    fn soft_cap(&self, _: &mut CudaActivations, _: f32) -> Result<(), BackendError> {
        Err(not_on_cuda("logit soft-capping"))
    }

    fn add(&self, _: &mut CudaActivations, _: &CudaActivations) -> Result<(), BackendError> {
        Err(not_on_cuda("post-norms"))
    }

    fn head_rms_norm(
        &self,
        _: &mut CudaActivations,
        _: &AttentionShape,
        _: &Self::Vector,
        _: &Self::Vector,
        _: f32,
    ) -> Result<(), BackendError> {
        Err(not_on_cuda("query and key norms"))
    }

    fn gather_rows(
        &self,
        _: &CudaActivations,
        _: &[u32],
        _: &mut CudaActivations,
    ) -> Result<(), BackendError> {
        Err(not_on_cuda("mixtures of experts"))
    }

    fn scatter_add_rows(
        &self,
        _: &mut CudaActivations,
        _: &CudaActivations,
        _: &[u32],
        _: &[f32],
    ) -> Result<(), BackendError> {
        Err(not_on_cuda("mixtures of experts"))
    }

    fn gather_logits_rows(
        &self,
        x: &CudaActivations,
        step: &CudaStep,
        out: &mut CudaActivations,
    ) -> Result<(), BackendError> {
        self.live_step(step)?;
        self.live(x)?;
        self.live(out)?;
        out.check(step.packed.num_logits_rows, x.width, "logits rows")?;
        let words = match x.precision {
            Precision::F32 => x.width,
            Precision::Bf16 if x.width.is_multiple_of(2) => x.width / 2,
            Precision::Bf16 => {
                return Err(BackendError::Execution(format!(
                    "gathering bf16 rows of odd width {}",
                    x.width
                )));
            }
        };
        ops::gather_rows::launch(
            &self.device,
            x.address,
            step.at(step.packed.layout.logits_rows),
            out.address,
            out.rows,
            words,
        )?;
        out.precision = x.precision;
        Ok(())
    }

    fn copy_blocks(
        &self,
        cache: &mut CudaKvCache,
        copies: &[(BlockId, BlockId)],
    ) -> Result<(), BackendError> {
        cache.copy_blocks(&self.device, copies)
    }

    fn pick_tokens(
        &self,
        logits: &CudaActivations,
        picks: &[TokenPick],
    ) -> Result<Vec<u32>, BackendError> {
        self.live(logits)?;
        logits.expect(Precision::F32, "token selection")?;
        if logits.rows != picks.len() {
            return Err(BackendError::Execution(format!(
                "{} picks for {} rows of logits",
                picks.len(),
                logits.rows
            )));
        }
        let rows = picks.len();
        let tokens = self.device.take(4 * rows)?;
        let packed = if picks.iter().all(|p| *p == TokenPick::Greedy) {
            None
        } else {
            let words: Vec<u32> = picks
                .iter()
                .flat_map(ops::select_tokens::pack_pick)
                .collect();
            let address = self.device.take(4 * words.len())?;
            self.device.upload(address, &words)?;
            Some(address)
        };
        ops::select_tokens::launch(
            &self.device,
            logits.address,
            rows,
            logits.width,
            packed,
            tokens,
        )?;
        let mut out = vec![0u32; rows];
        self.device.download(tokens, &mut out)?;
        Ok(out)
    }
}

/// A model placed on a GPU: shared by every backend made from it, each with its own KV
/// cache.
#[derive(Clone)]
pub struct CudaModel {
    pub kernels: Arc<CudaKernels>,
    pub model: Arc<Decoder<CudaKernels>>,
}

/// What a model needs of the kernel layer that this backend does not run yet, by name;
/// empty when it runs the whole model. Checked before the GPU is opened.
pub fn missing_features(config: &ModelConfig) -> Vec<&'static str> {
    let spec = config.architecture.spec();
    let needs = [
        (config.sliding_window.is_some(), "sliding-window attention"),
        (
            config.attn_logit_softcap.is_some() || config.final_logit_softcap.is_some(),
            "logit soft-capping",
        ),
        (
            config.rotary_dim != config.head_dim,
            "partial rotary embeddings",
        ),
        (config.activation != GatedActivation::Silu, "GeGLU"),
        (spec.scales_embeddings, "scaled embeddings"),
        (spec.sandwich_norms, "post-norms"),
        (spec.qk_norm, "query and key norms"),
        (config.experts.is_some(), "mixtures of experts"),
        (config.local_rope_theta.is_some(), "per-layer RoPE"),
    ];
    needs
        .into_iter()
        .filter_map(|(needed, feature)| needed.then_some(feature))
        .collect()
}

fn not_on_cuda(feature: &str) -> BackendError {
    BackendError::Unavailable {
        backend: "cuda",
        reason: format!("{feature} is not implemented on this backend"),
    }
}

impl CudaModel {
    /// Opens the GPU and places the model's weights on it.
    pub fn place(loaded: &LoadedModel, config: CudaConfig) -> Result<Self, ModelError> {
        let placement = |source| ModelError::Placement {
            path: loaded.source.clone(),
            tensor: "-".into(),
            source,
        };
        let missing = missing_features(&loaded.config);
        if !missing.is_empty() {
            return Err(placement(BackendError::Unavailable {
                backend: "cuda",
                reason: format!(
                    "{} needs {}, not implemented on this backend yet (--backend cpu runs it)",
                    loaded.config.architecture.name(),
                    missing.join(", ")
                ),
            }));
        }
        let kernels = CudaKernels::new(config, ModelDims::of(&loaded.config)).map_err(placement)?;
        let model = Decoder::load(&loaded.config, loaded.tensors.as_ref(), &kernels)?;
        Ok(Self {
            kernels: Arc::new(kernels),
            model: Arc::new(model),
        })
    }

    /// The KV cache `--gpu-memory-utilization` leaves room for, now that the weights and
    /// the workspace are placed.
    pub fn plan_kv_cache(&self) -> Result<MemoryPlan, BackendError> {
        let (free, total) = self.kernels.device().memory()?;
        let layout = self.model.kv_cache_layout(
            KvCacheShape {
                num_blocks: 0,
                block_size: self.kernels.config.block_size,
            },
            self.kernels.config.kv_cache_dtype,
        );
        memory_plan::plan_kv_cache(
            free,
            total,
            self.kernels.config.gpu_memory_utilization,
            &layout,
        )
        .map_err(driver::unavailable)
    }

    /// A backend with a fresh KV cache of `shape` in the configured precision.
    pub fn backend(&self, shape: KvCacheShape) -> Result<CudaRunner, BackendError> {
        CudaRunner::new(
            Arc::clone(&self.kernels),
            Arc::clone(&self.model),
            shape,
            self.kernels.config.kv_cache_dtype,
        )
    }

    /// Bytes the placed weights take.
    pub fn weight_bytes(&self) -> usize {
        self.model.weight_bytes(&self.kernels)
    }
}
