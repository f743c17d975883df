//! Building an engine for a model on disk from the command line's flags: the one place
//! the binary meets the model loader and the backends.

use std::sync::Arc;

use modelfleet_contract::serve::{Backend, Dtype, ModelArgs};
use modelfleet_engine::backend::KvCacheShape;
use modelfleet_engine::backend::cpu::linear::WeightDtype;
use modelfleet_engine::backend::cpu::{CpuConfig, CpuKernels, CpuModel};
use modelfleet_engine::backend::kernels::KvCacheDtype;
use modelfleet_engine::engine::{Engine, EngineConfig, FaultyBackend, InjectedFault, ModelSpec};
use modelfleet_engine::model::{Decoder, LoadedModel, ModelConfig, Tokenizer};
use modelfleet_engine::scheduler::SchedulerConfig;

use super::{KvCacheDtypeArg, TuningArgs};

/// An engine ready to step, and what else the model brought.
pub struct LoadedEngine {
    pub engine: Engine,
    pub tokenizer: Tokenizer,
    pub config: ModelConfig,
    pub chat_template: Option<String>,
    pub kv_cache: KvCacheShape,
    pub kv_cache_dtype: KvCacheDtype,
    /// Bytes the placed weights take.
    pub weight_bytes: usize,
    /// `cpu` or `cuda`.
    pub backend: &'static str,
    /// The kernels that run: the CPU's SIMD path, or the GPU.
    pub kernels: String,
}

/// A model placed on its device with a backend over a KV cache.
struct Placed {
    backend: Box<dyn modelfleet_engine::backend::Backend>,
    kv_cache_dtype: KvCacheDtype,
    weight_bytes: usize,
    kernels: String,
}

impl LoadedEngine {
    /// `max_model_len` (default: the model's context) bounds the longest sequence, which
    /// the CUDA backend sizes its block tables for.
    pub fn load(
        model: &ModelArgs,
        tuning: &TuningArgs,
        max_model_len: Option<usize>,
    ) -> anyhow::Result<Self> {
        Self::load_with_fault(model, tuning, max_model_len, None)
    }

    /// Like [`LoadedEngine::load`], with an injected fault in the backend (tests only).
    pub fn load_with_fault(
        model: &ModelArgs,
        tuning: &TuningArgs,
        max_model_len: Option<usize>,
        fault: Option<InjectedFault>,
    ) -> anyhow::Result<Self> {
        let loaded = LoadedModel::load(&model.model)?;
        let placed = match model.backend {
            Backend::Cpu => place_cpu(model, tuning, &loaded)?,
            Backend::Cuda => place_cuda(model, tuning, &loaded, max_model_len)?,
        };
        let LoadedModel {
            config,
            tokenizer,
            chat_template,
            ..
        } = loaded;
        let spec = ModelSpec {
            decoder: Arc::new(tokenizer.clone_handle()),
            eos_token_ids: config.eos_token_ids.clone(),
            vocab_size: config.vocab_size,
        };
        let kv_cache = placed.backend.kv_cache_shape();
        let backend_name = placed.backend.name();
        let mut backend = placed.backend;
        if let Some(fault) = fault {
            tracing::warn!(?fault, "injecting a fault into the engine on purpose");
            backend = Box::new(FaultyBackend::new(backend, fault));
        }
        let engine = Engine::new(
            backend,
            spec,
            EngineConfig {
                scheduler: SchedulerConfig {
                    max_num_batched_tokens: tuning.max_num_batched_tokens,
                    max_num_seqs: model.max_num_seqs,
                },
                enable_prefix_caching: !tuning.no_prefix_caching,
            },
        );
        Ok(Self {
            engine,
            tokenizer,
            config,
            chat_template,
            kv_cache,
            kv_cache_dtype: placed.kv_cache_dtype,
            weight_bytes: placed.weight_bytes,
            backend: backend_name,
            kernels: placed.kernels,
        })
    }
}

fn place_cpu(
    model: &ModelArgs,
    tuning: &TuningArgs,
    loaded: &LoadedModel,
) -> anyhow::Result<Placed> {
    let placed = CpuModel::place(
        loaded,
        CpuConfig {
            weight_dtype: weight_dtype(model.dtype),
            isa: tuning.cpu_kernels,
            threads: tuning.threads,
        },
    )?;
    let weight_bytes = placed.weight_bytes();
    let kv_cache_dtype = kv_cache_dtype(tuning.kv_cache_dtype, &placed.model, weight_bytes);
    let block_size = model.block_size;
    let num_blocks = tuning.num_blocks.unwrap_or_else(|| {
        placed
            .model
            .kv_cache_layout(
                KvCacheShape {
                    num_blocks: 0,
                    block_size,
                },
                kv_cache_dtype,
            )
            .blocks_in(tuning.kv_cache_bytes)
    });
    anyhow::ensure!(
        num_blocks > 0,
        "a KV cache of {} bytes holds no block of {block_size} tokens for this model; raise --kv-cache-bytes",
        tuning.kv_cache_bytes,
    );
    let shape = KvCacheShape {
        num_blocks,
        block_size,
    };
    Ok(Placed {
        backend: Box::new(placed.backend(shape, kv_cache_dtype)?),
        kv_cache_dtype,
        weight_bytes,
        kernels: placed.kernels.isa().to_string(),
    })
}

#[cfg(feature = "cuda")]
fn place_cuda(
    model: &ModelArgs,
    tuning: &TuningArgs,
    loaded: &LoadedModel,
    max_model_len: Option<usize>,
) -> anyhow::Result<Placed> {
    use modelfleet_engine::backend::cuda::{CudaConfig, CudaModel, driver};

    // Before anything touches CUDA: a machine without it gets this, not a placement error.
    driver::check_libraries()?;
    anyhow::ensure!(
        matches!(model.dtype, Dtype::Auto | Dtype::Bfloat16),
        "the CUDA backend keeps weights in bfloat16; use --dtype auto or bfloat16"
    );
    let kv_cache_dtype = match tuning.kv_cache_dtype {
        KvCacheDtypeArg::Auto | KvCacheDtypeArg::Bfloat16 => KvCacheDtype::Bf16,
        KvCacheDtypeArg::Float16 => KvCacheDtype::F16,
        KvCacheDtypeArg::Float32 => KvCacheDtype::F32,
    };
    let config = CudaConfig {
        device: 0,
        gpu_memory_utilization: model.gpu_memory_utilization as f32,
        max_num_batched_tokens: tuning.max_num_batched_tokens,
        max_num_seqs: model.max_num_seqs,
        max_model_len: max_model_len.unwrap_or(loaded.config.max_position_embeddings),
        block_size: model.block_size,
        kv_cache_dtype,
        cuda_graphs: !tuning.enforce_eager,
    };
    let placed = CudaModel::place(loaded, config)?;
    let num_blocks = match tuning.num_blocks {
        Some(blocks) => blocks,
        None => {
            let plan = placed.plan_kv_cache()?;
            tracing::info!(%plan, "KV cache planned");
            plan.num_blocks
        }
    };
    let info = placed.kernels.info();
    let kernels = format!(
        "cuda: {} (sm_{}{})",
        info.name, info.compute_capability.0, info.compute_capability.1
    );
    let backend = placed.backend(KvCacheShape {
        num_blocks,
        block_size: model.block_size,
    })?;
    Ok(Placed {
        backend: Box::new(backend),
        kv_cache_dtype,
        weight_bytes: placed.weight_bytes(),
        kernels,
    })
}

#[cfg(not(feature = "cuda"))]
fn place_cuda(
    _model: &ModelArgs,
    _tuning: &TuningArgs,
    _loaded: &LoadedModel,
    _max_model_len: Option<usize>,
) -> anyhow::Result<Placed> {
    anyhow::bail!(
        "this build of modelfleet-engine has no CUDA backend (built without the `cuda` feature); use --backend cpu"
    )
}

fn weight_dtype(dtype: Dtype) -> WeightDtype {
    match dtype {
        Dtype::Auto => WeightDtype::AsStored,
        Dtype::Float32 => WeightDtype::F32,
        Dtype::Float16 => WeightDtype::F16,
        Dtype::Bfloat16 => WeightDtype::Bf16,
    }
}

/// `auto`: float32 when the weights are float32 (as stored or converted), float16 otherwise
/// — as llama.cpp does for quantised models.
fn kv_cache_dtype(
    kv: KvCacheDtypeArg,
    model: &Decoder<CpuKernels>,
    weight_bytes: usize,
) -> KvCacheDtype {
    match kv {
        KvCacheDtypeArg::Float32 => KvCacheDtype::F32,
        KvCacheDtypeArg::Float16 => KvCacheDtype::F16,
        KvCacheDtypeArg::Bfloat16 => KvCacheDtype::Bf16,
        KvCacheDtypeArg::Auto if weight_bytes >= 4 * model.parameters() => KvCacheDtype::F32,
        KvCacheDtypeArg::Auto => KvCacheDtype::F16,
    }
}
