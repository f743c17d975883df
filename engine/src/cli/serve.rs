//! `modelfleet-engine serve`: load the model behind open ports, serve until SIGTERM, drain.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use modelfleet_engine::engine::EngineHandle;
use modelfleet_engine::server::{
    self, ApiKey, ChatTemplate, ModelInfo, ServerConfig, ServingModel,
};
use modelfleet_fetch::marker;
use tokio::signal::unix::{SignalKind, signal};

use super::ServeArgs;
use super::model::LoadedEngine;
use modelfleet_engine::backend::KvCacheShape;

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    check_backend(&args)?;
    let served_name = args
        .serve
        .served_name
        .clone()
        .unwrap_or_else(|| default_served_name(&args.serve.model.model));
    let api_key = args
        .serve
        .api_key_file
        .as_deref()
        .map(ApiKey::from_file)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let config = ServerConfig {
        served_name: served_name.clone(),
        grpc_addr: SocketAddr::new(args.host, args.serve.grpc_port),
        http_addr: SocketAddr::new(args.host, args.serve.http_port),
        max_num_seqs: args.serve.model.max_num_seqs,
        max_queued_requests: args.max_queued_requests,
        drain_timeout: Duration::from_secs(args.drain_timeout_seconds),
        preprocess_concurrency: args
            .tokenizer_threads
            .map_or(cores.min(4), |n| usize::try_from(n).unwrap_or(usize::MAX)),
        write_timeout: Duration::from_secs(args.write_timeout_seconds),
        keepalive: Duration::from_secs(args.keepalive_seconds),
        api_key,
    };
    // The CPU backend computes on rayon's threads; the servers need only a few.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown_signal()?;
        server::run(
            config,
            move || load(&args, served_name).map_err(|e| format!("{e:#}")),
            shutdown,
        )
        .await
        .map_err(anyhow::Error::from)
    })
}

fn check_backend(args: &ServeArgs) -> anyhow::Result<()> {
    let utilization = args.serve.model.gpu_memory_utilization;
    anyhow::ensure!(
        utilization > 0.0 && utilization <= 1.0,
        "--gpu-memory-utilization must be in (0, 1], got {utilization}"
    );
    Ok(())
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
        }
    })
}

fn load(args: &ServeArgs, served_name: String) -> anyhow::Result<ServingModel> {
    let LoadedEngine {
        engine,
        tokenizer,
        config,
        chat_template,
        kv_cache,
        kv_cache_dtype,
        weight_bytes,
        backend,
        kernels,
    } = LoadedEngine::load_with_fault(
        &args.serve.model,
        &args.tuning,
        args.serve.max_model_len,
        args.inject_fault,
    )?;
    let max_model_len = max_model_len(
        args.serve.max_model_len,
        config.max_position_embeddings,
        kv_cache,
    )?;
    let token_text = |id: Option<u32>| {
        id.and_then(|id| tokenizer.id_to_token(id))
            .unwrap_or_default()
    };
    let chat_template = chat_template
        .map(|source| {
            ChatTemplate::new(
                source,
                token_text(config.bos_token_id),
                token_text(config.eos_token_ids.first().copied()),
            )
        })
        .transpose()
        .context("the model's chat template does not parse")?;
    let info = ModelInfo {
        served_name,
        architecture: config.architecture.name().to_string(),
        vocab_size: config.vocab_size,
        max_model_len,
        block_size: kv_cache.block_size,
        num_kv_blocks: kv_cache.num_blocks,
        max_num_seqs: args.serve.model.max_num_seqs,
        backend: backend.into(),
        eos_token_ids: config.eos_token_ids.clone(),
        revision: fetched_revision(&args.serve.model.model),
        weight_bytes: weight_bytes as u64,
        kv_cache_dtype: kv_cache_dtype.name().into(),
        kernels,
    };
    tracing::info!(
        model = %args.serve.model.model.display(),
        served_name = %info.served_name,
        max_model_len,
        kv_cache_blocks = kv_cache.num_blocks,
        kv_cache_dtype = info.kv_cache_dtype,
        weight_mib = format!("{:.1}", weight_bytes as f64 / (1 << 20) as f64),
        kernels = info.kernels,
        revision = info.revision.as_deref().unwrap_or("-"),
        "model loaded"
    );
    Ok(ServingModel {
        engine: EngineHandle::spawn(engine).context("starting the engine loop")?,
        tokenizer,
        chat_template,
        info,
        grammars: Default::default(),
    })
}

/// The longest prompt plus output a request may have: `--max-model-len`, or the model's
/// context. Either must fit the KV cache, or a request of that length could never run:
/// an explicit value that does not is refused at start-up; the model's context is lowered
/// to what the cache holds, with a warning.
fn max_model_len(
    requested: Option<usize>,
    context: usize,
    kv_cache: KvCacheShape,
) -> anyhow::Result<usize> {
    let kv_tokens = kv_cache.num_blocks * kv_cache.block_size;
    match requested {
        Some(len) if len > context => anyhow::bail!(
            "--max-model-len {len} is longer than the model's context of {context} tokens"
        ),
        Some(len) if len > kv_tokens => anyhow::bail!(
            "--max-model-len {len} is more than the KV cache holds: {} blocks of {} tokens \
             = {kv_tokens} tokens; raise --kv-cache-bytes (or --num-blocks) or lower \
             --max-model-len to at most {kv_tokens}",
            kv_cache.num_blocks,
            kv_cache.block_size
        ),
        Some(len) => Ok(len),
        None if context > kv_tokens => {
            tracing::warn!(
                context,
                kv_cache_tokens = kv_tokens,
                "the KV cache holds fewer tokens than the model's context; requests are \
                 limited to {kv_tokens} tokens (raise --kv-cache-bytes for the full context)"
            );
            Ok(kv_tokens)
        }
        None => Ok(context),
    }
}

/// The revision `fetch` recorded beside the weights, if they came that way.
fn fetched_revision(model: &Path) -> Option<String> {
    let dir = if model.is_dir() {
        model
    } else {
        model.parent()?
    };
    marker::read_complete(dir).map(|m| m.identity.revision)
}

fn default_served_name(model: &Path) -> String {
    let name = if model.is_file() {
        model.file_stem()
    } else {
        model.file_name()
    };
    name.map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
}
