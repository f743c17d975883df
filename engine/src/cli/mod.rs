//! The `modelfleet-engine` command line: flags parsed by clap into typed configuration.

pub mod bench;
pub mod generate;
pub mod model;
pub mod serve;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use modelfleet_contract::serve::{Backend, DEFAULT_BLOCK_SIZE, Dtype, ModelArgs};

#[derive(Debug, Parser)]
#[command(
    name = "modelfleet-engine",
    version,
    about = "ModelFleet's inference engine"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a continuation of a prompt and stream it to stdout.
    Generate(GenerateArgs),
    /// Measure prefill and decode throughput on a model (JSON lines on stdout).
    Bench(BenchArgs),
    /// Serve the model over gRPC and the OpenAI-compatible HTTP API until SIGTERM, then
    /// drain.
    Serve(ServeArgs),
    /// Fetch a model's files at a pinned revision into a directory (the pod's init container).
    Fetch(modelfleet_fetch::FetchArgs),
}

/// The engine's own tuning of a loaded model: how big its KV cache is, how many tokens a
/// step takes, which kernels run. Which model and how it is placed are the contract's
/// [`ModelArgs`], which the operator sets too.
#[derive(Debug, Clone, Args)]
pub struct TuningArgs {
    /// KV cache size in blocks (overrides --kv-cache-bytes).
    #[arg(long)]
    pub num_blocks: Option<usize>,
    /// KV cache budget in bytes.
    #[arg(long, default_value_t = 512 << 20)]
    pub kv_cache_bytes: usize,
    /// Most tokens fed to the model in one step.
    #[arg(long, default_value_t = 512)]
    pub max_num_batched_tokens: usize,
    /// Worker threads of the CPU backend (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Compute every prompt in full instead of reusing cached prefix blocks.
    #[arg(long)]
    pub no_prefix_caching: bool,
    /// Reuse cached prefix blocks (the default; accepted for vLLM-style argument lists).
    #[arg(long, conflicts_with = "no_prefix_caching")]
    pub enable_prefix_caching: bool,
    /// Precision of the KV cache: `auto` is float32 for float32 weights and float16
    /// otherwise.
    #[arg(long, value_enum, default_value_t = KvCacheDtypeArg::Auto)]
    pub kv_cache_dtype: KvCacheDtypeArg,
    /// The CPU backend's SIMD kernels: portable, avx2, avx-vnni or avx512-vnni (default:
    /// the best this CPU has).
    #[arg(long)]
    pub cpu_kernels: Option<modelfleet_engine::backend::cpu::simd::Isa>,
    /// Run every step as it comes, without recording decode steps as CUDA graphs.
    #[arg(long)]
    pub enforce_eager: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KvCacheDtypeArg {
    Auto,
    Float32,
    Bfloat16,
    Float16,
}

/// `serve`'s flags: the contract's [`modelfleet_contract::serve::ServeArgs`] (what the
/// operator sets, parsed by this same code) and the engine's own.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub serve: modelfleet_contract::serve::ServeArgs,
    #[command(flatten)]
    pub tuning: TuningArgs,
    /// Address both servers listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub host: std::net::IpAddr,
    /// Requests that may wait beyond the running batch before new ones are refused with
    /// RESOURCE_EXHAUSTED / 429.
    #[arg(long, default_value_t = 256)]
    pub max_queued_requests: usize,
    /// Seconds requests in flight may run after SIGTERM before they are cut off.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout_seconds: u64,
    /// Seconds a streaming response may wait for its client to read before the request is
    /// cancelled and its slot freed (a client that stopped reading cannot hold capacity).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub write_timeout_seconds: u64,
    /// Seconds between TCP keep-alive probes and HTTP/2 pings; a peer that does not answer
    /// a ping within as long is disconnected.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub keepalive_seconds: u64,
    /// Requests tokenised and chat-templated at once, off the request-handling threads
    /// (default: the machine's cores, at most 4).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub tokenizer_threads: Option<u64>,
    /// Breaks the engine on purpose (`fail-steps-after=N`, `panic-after=N`), to prove that
    /// a server whose engine died stops reporting healthy. Tests only.
    #[arg(long, hide = true, value_name = "FAULT")]
    pub inject_fault: Option<modelfleet_engine::engine::InjectedFault>,
}

#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub tuning: TuningArgs,
    /// The prompt, as plain text (no chat template applied).
    #[arg(long)]
    pub prompt: String,
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// 0 is greedy decoding.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// 0 keeps every token.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Seed of the sampler; fixed seed, fixed output.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop when the text contains this (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// A model directory or GGUF file.
    #[arg(long)]
    pub model: PathBuf,
    /// Worker threads of the CPU backend (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long, default_value_t = 128)]
    pub prompt_len: usize,
    #[arg(long, default_value_t = 32)]
    pub decode_tokens: usize,
    /// Comma-separated concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub concurrency: Vec<usize>,
    #[arg(long, default_value_t = DEFAULT_BLOCK_SIZE)]
    pub block_size: usize,
    /// Runs per concurrency level; the best figures are kept.
    #[arg(long, default_value_t = 2)]
    pub repeats: usize,
    #[arg(long, value_enum, default_value_t = Dtype::Auto)]
    pub dtype: Dtype,
    #[arg(long, value_enum, default_value_t = KvCacheDtypeArg::Auto)]
    pub kv_cache_dtype: KvCacheDtypeArg,
    #[arg(long)]
    pub cpu_kernels: Option<modelfleet_engine::backend::cpu::simd::Isa>,
    #[arg(long, value_enum, default_value_t = Backend::Cpu)]
    pub backend: Backend,
    #[arg(long, default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,
    /// Tokens per step (default: every level's prompts in one step).
    #[arg(long)]
    pub max_num_batched_tokens: Option<usize>,
    #[arg(long)]
    pub enforce_eager: bool,
}
