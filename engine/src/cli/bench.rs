//! `modelfleet-engine bench`: the engine side of the benchmarks (bench/engine_cpu.sh on the
//! CPU and scripts/gpu-check.sh on a GPU run transformers on the same workload and print
//! the ratios).
//!
//! For each concurrency c: c distinct prompts of P tokens arrive together and are prefilled
//! in one step; then every sequence decodes D more tokens greedily. Prefill throughput is
//! c·P over the time to the last first token; decode throughput is c·D over the rest.

use std::time::Instant;

use modelfleet_engine::engine::{Engine, EngineError, GenerationRequest, StopParams};
use modelfleet_engine::sampling::SamplingParams;
use modelfleet_loadgen::quantile;

/// Prompt `sequence` of the benchmark. Must match `prompt_ids` in
/// bench/engine_cpu_transformers.py: distinct per sequence, so no prefix is shared.
pub fn bench_prompt(sequence: usize, length: usize) -> Vec<u32> {
    (0..length)
        .map(|i| 1000 + ((i * 7919 + sequence * 104_729) % 40_000) as u32)
        .collect()
}

/// One concurrency level's figures.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct BenchResult {
    pub side: &'static str,
    pub concurrency: usize,
    pub prompt_len: usize,
    pub decode_tokens: usize,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// Every generated token (first tokens included) over the whole run.
    pub output_tokens_per_s: f64,
    /// Until the last request's first token.
    pub ttft_s: f64,
    /// Over the requests' own first tokens (they all arrive at the start).
    pub ttft_p50_s: f64,
    pub ttft_p99_s: f64,
}

/// A level's figures as printed, with what the engine read to reach them (the report's
/// bandwidth bounds use these).
#[derive(serde::Serialize)]
struct Record<'a> {
    #[serde(flatten)]
    figures: BenchResult,
    /// `cpu` or `cuda`.
    backend: &'a str,
    /// Bytes of the weights as placed: what a decode step reads.
    weight_bytes: usize,
    /// Bytes of one value in the KV cache.
    kv_bytes_per_element: usize,
    /// The kernels that ran: the CPU's SIMD path, or the GPU.
    kernels: &'a str,
}

/// Runs one concurrency level to completion on an idle engine.
pub fn run_level(
    engine: &mut Engine,
    concurrency: usize,
    prompt_len: usize,
    decode_tokens: usize,
    first_id: u64,
) -> Result<BenchResult, EngineError> {
    let start = Instant::now();
    for s in 0..concurrency {
        let request = GenerationRequest {
            prompt_token_ids: bench_prompt(s, prompt_len),
            sampling: SamplingParams::greedy(),
            stop: StopParams {
                max_tokens: decode_tokens + 1,
                ignore_eos: true,
                ..Default::default()
            },
        };
        engine.add_request(first_id + s as u64, request)?;
    }
    let mut first_tokens = Vec::with_capacity(concurrency);
    let mut generated = 0;
    let mut prefill_done = None;
    while engine.has_unfinished() {
        for output in engine.step()? {
            if output.usage.completion_tokens == 1 {
                first_tokens.push(start.elapsed().as_secs_f64());
            } else {
                generated += 1;
            }
        }
        if prefill_done.is_none() && first_tokens.len() == concurrency {
            prefill_done = Some(start.elapsed());
        }
    }
    let total = start.elapsed();
    let ttft = prefill_done.unwrap_or(total);
    let decode = total.saturating_sub(ttft).as_secs_f64();
    first_tokens.sort_by(f64::total_cmp);
    let quantile = |q| quantile(&first_tokens, q).unwrap_or(ttft.as_secs_f64());
    Ok(BenchResult {
        side: "modelfleet-engine",
        concurrency,
        prompt_len,
        decode_tokens,
        prefill_tokens_per_s: (concurrency * prompt_len) as f64 / ttft.as_secs_f64(),
        decode_tokens_per_s: if decode > 0.0 {
            generated as f64 / decode
        } else {
            0.0
        },
        output_tokens_per_s: (generated + first_tokens.len()) as f64 / total.as_secs_f64(),
        ttft_s: ttft.as_secs_f64(),
        ttft_p50_s: quantile(0.5),
        ttft_p99_s: quantile(0.99),
    })
}

/// The benchmark command: every level, best of `repeats`, one JSON line each.
pub fn run(args: &super::BenchArgs) -> anyhow::Result<()> {
    let max_concurrency = args.concurrency.iter().copied().max().unwrap_or(1).max(1);
    let per_sequence = (args.prompt_len + args.decode_tokens + 1).div_ceil(args.block_size.max(1));
    let longest = args.prompt_len + args.decode_tokens + 1;
    let model_args = modelfleet_contract::serve::ModelArgs {
        model: args.model.clone(),
        dtype: args.dtype,
        block_size: args.block_size,
        max_num_seqs: max_concurrency,
        backend: args.backend,
        gpu_memory_utilization: args.gpu_memory_utilization,
    };
    let tuning = super::TuningArgs {
        num_blocks: Some(max_concurrency * per_sequence),
        kv_cache_bytes: 0,
        // By default every level's prompts are prefilled in one step, as the baseline does.
        max_num_batched_tokens: args
            .max_num_batched_tokens
            .unwrap_or(max_concurrency * args.prompt_len),
        threads: args.threads,
        // Repeated runs reuse the same prompts: each must compute them again.
        no_prefix_caching: true,
        enable_prefix_caching: false,
        kv_cache_dtype: args.kv_cache_dtype,
        cpu_kernels: args.cpu_kernels,
        enforce_eager: args.enforce_eager,
    };
    let super::model::LoadedEngine {
        mut engine,
        backend,
        weight_bytes,
        kv_cache_dtype,
        kernels,
        ..
    } = super::model::LoadedEngine::load(&model_args, &tuning, Some(longest))?;
    let mut next_id = 0;
    let mut level = |engine: &mut Engine, c: usize| -> Result<BenchResult, EngineError> {
        let result = run_level(engine, c, args.prompt_len, args.decode_tokens, next_id);
        next_id += c as u64;
        result
    };
    level(&mut engine, 1)?; // warm-up
    for &c in &args.concurrency {
        let mut best: Option<BenchResult> = None;
        for _ in 0..args.repeats.max(1) {
            let r = level(&mut engine, c)?;
            best = Some(match best {
                None => r,
                Some(b) => BenchResult {
                    prefill_tokens_per_s: b.prefill_tokens_per_s.max(r.prefill_tokens_per_s),
                    decode_tokens_per_s: b.decode_tokens_per_s.max(r.decode_tokens_per_s),
                    output_tokens_per_s: b.output_tokens_per_s.max(r.output_tokens_per_s),
                    ttft_s: b.ttft_s.min(r.ttft_s),
                    ttft_p50_s: b.ttft_p50_s.min(r.ttft_p50_s),
                    ttft_p99_s: b.ttft_p99_s.min(r.ttft_p99_s),
                    ..b
                },
            });
        }
        if let Some(figures) = best {
            let record = Record {
                figures,
                backend,
                weight_bytes,
                kv_bytes_per_element: kv_cache_dtype.bytes(),
                kernels: &kernels,
            };
            println!("{}", serde_json::to_string(&record)?);
        }
    }
    Ok(())
}
