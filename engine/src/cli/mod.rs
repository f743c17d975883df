//! The `modelfleet-engine` command line: flags parsed by clap into typed configuration.

pub mod bench;
pub mod generate;
pub mod model;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// Serve gRPC and HTTP (not yet available).
    Serve,
    /// Fetch a model's files at a pinned revision into a directory (the pod's init container).
    Fetch(modelfleet_engine::fetch::FetchArgs),
}

/// Where the model is and how big its KV cache is.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A model directory (config.json, safetensors, tokenizer.json, or a GGUF file) or a
    /// GGUF file.
    #[arg(long)]
    pub model: PathBuf,
    /// Tokens per KV cache block.
    #[arg(long, default_value_t = modelfleet_engine::kv_cache::DEFAULT_BLOCK_SIZE)]
    pub block_size: usize,
    /// KV cache size in blocks (overrides --kv-cache-bytes).
    #[arg(long)]
    pub num_blocks: Option<usize>,
    /// KV cache budget in bytes.
    #[arg(long, default_value_t = 512 << 20)]
    pub kv_cache_bytes: usize,
    /// Most tokens fed to the model in one step.
    #[arg(long, default_value_t = 512)]
    pub max_num_batched_tokens: usize,
    /// Most sequences running at once.
    #[arg(long, default_value_t = 64)]
    pub max_num_seqs: usize,
    /// Worker threads of the CPU backend (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Compute every prompt in full instead of reusing cached prefix blocks.
    #[arg(long)]
    pub no_prefix_caching: bool,
}

#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
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
    #[arg(long, default_value_t = modelfleet_engine::kv_cache::DEFAULT_BLOCK_SIZE)]
    pub block_size: usize,
    /// Runs per concurrency level; the best figures are kept.
    #[arg(long, default_value_t = 2)]
    pub repeats: usize,
}
