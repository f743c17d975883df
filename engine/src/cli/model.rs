//! Building an engine for a model on disk from the command line's flags: the one place
//! the binary meets the model loader and the CPU backend.

use std::sync::Arc;

use anyhow::Context as _;
use modelfleet_engine::backend::cpu::{CpuBackend, num_blocks_for_budget};
use modelfleet_engine::backend::{Backend, KvCacheShape};
use modelfleet_engine::engine::{Engine, EngineConfig, FaultyBackend, InjectedFault, ModelSpec};
use modelfleet_engine::model::{LoadedModel, ModelConfig, Tokenizer};
use modelfleet_engine::scheduler::SchedulerConfig;

use super::ModelArgs;

/// An engine ready to step, and what else the model brought.
pub struct LoadedEngine {
    pub engine: Engine,
    pub tokenizer: Tokenizer,
    pub config: ModelConfig,
    pub chat_template: Option<String>,
    pub kv_cache: KvCacheShape,
}

impl LoadedEngine {
    pub fn load(args: &ModelArgs) -> anyhow::Result<Self> {
        Self::load_with_fault(args, None)
    }

    /// Like [`LoadedEngine::load`], with an injected fault in the backend (tests only).
    pub fn load_with_fault(args: &ModelArgs, fault: Option<InjectedFault>) -> anyhow::Result<Self> {
        if let Some(threads) = args.threads {
            // The CPU backend runs on rayon's global pool; size it before first use.
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build_global()
                .context("configuring the CPU worker threads")?;
        }
        let LoadedModel {
            config,
            weights,
            tokenizer,
            chat_template,
            ..
        } = LoadedModel::load(&args.model)?;
        let num_blocks = args.num_blocks.unwrap_or_else(|| {
            num_blocks_for_budget(&config, args.block_size, args.kv_cache_bytes)
        });
        anyhow::ensure!(
            num_blocks > 0,
            "a KV cache of {} bytes holds no block of {} tokens for this model; raise --kv-cache-bytes",
            args.kv_cache_bytes,
            args.block_size
        );
        let spec = ModelSpec {
            decoder: Arc::new(tokenizer.clone_handle()),
            eos_token_ids: config.eos_token_ids.clone(),
            vocab_size: config.vocab_size,
        };
        let shape = KvCacheShape {
            num_blocks,
            block_size: args.block_size,
        };
        let mut backend: Box<dyn Backend> =
            Box::new(CpuBackend::new(config.clone(), Arc::new(weights), shape));
        if let Some(fault) = fault {
            tracing::warn!(?fault, "injecting a fault into the engine on purpose");
            backend = Box::new(FaultyBackend::new(backend, fault));
        }
        let engine = Engine::new(
            backend,
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
        })
    }
}
