//! Building an engine for a model on disk from the command line's flags: the one place
//! the binary meets the model loader and the CPU backend.

use std::sync::Arc;

use modelfleet_engine::backend::KvCacheShape;
use modelfleet_engine::backend::cpu::linear::WeightDtype;
use modelfleet_engine::backend::cpu::{CpuConfig, CpuKernels, CpuModel};
use modelfleet_engine::backend::kernels::KvCacheDtype;
use modelfleet_engine::engine::{Engine, EngineConfig, ModelSpec};
use modelfleet_engine::model::{Llama, LoadedModel, ModelConfig, Tokenizer};
use modelfleet_engine::scheduler::SchedulerConfig;

use super::{Dtype, KvCacheDtypeArg, ModelArgs};

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
    /// The CPU kernels' SIMD path.
    pub kernels: String,
}

impl LoadedEngine {
    pub fn load(args: &ModelArgs) -> anyhow::Result<Self> {
        let loaded = LoadedModel::load(&args.model)?;
        let placed = CpuModel::place(
            &loaded,
            CpuConfig {
                weight_dtype: weight_dtype(args.dtype),
                isa: args.cpu_kernels,
                threads: args.threads,
            },
        )?;
        let LoadedModel {
            config,
            tokenizer,
            chat_template,
            ..
        } = loaded;
        let weight_bytes = placed.weight_bytes();
        let kv_cache_dtype = kv_cache_dtype(args.kv_cache_dtype, &placed.model, weight_bytes);
        let block_size = args.block_size;
        let num_blocks = args.num_blocks.unwrap_or_else(|| {
            placed
                .model
                .kv_cache_layout(
                    KvCacheShape {
                        num_blocks: 0,
                        block_size,
                    },
                    kv_cache_dtype,
                )
                .blocks_in(args.kv_cache_bytes)
        });
        anyhow::ensure!(
            num_blocks > 0,
            "a KV cache of {} bytes holds no block of {block_size} tokens for this model; raise --kv-cache-bytes",
            args.kv_cache_bytes,
        );
        let spec = ModelSpec {
            decoder: Arc::new(tokenizer.clone_handle()),
            eos_token_ids: config.eos_token_ids.clone(),
            vocab_size: config.vocab_size,
        };
        let shape = KvCacheShape {
            num_blocks,
            block_size,
        };
        let backend = placed.backend(shape, kv_cache_dtype)?;
        let engine = Engine::new(
            Box::new(backend),
            spec,
            EngineConfig {
                scheduler: SchedulerConfig {
                    max_num_batched_tokens: args.max_num_batched_tokens,
                    max_num_seqs: args.max_num_seqs,
                },
                enable_prefix_caching: !args.no_prefix_caching,
            },
        );
        Ok(Self {
            engine,
            tokenizer,
            config,
            chat_template,
            kv_cache: shape,
            kv_cache_dtype,
            weight_bytes,
            kernels: placed.kernels.isa().to_string(),
        })
    }
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
    model: &Llama<CpuKernels>,
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
