//! Each CUDA kernel against the CPU kernel (the reference) on random inputs, through the
//! kernel trait both implement. Both sides keep weights in bf16; the CUDA kernels that feed
//! a GEMM round their output to bf16 (the CPU's stay f32), so those compare within bf16's
//! rounding, 2⁻⁸ relative. Everything else agrees to f32 rounding.

use modelfleet_engine::backend::cpu::linear::WeightDtype;
use modelfleet_engine::backend::cpu::{CpuConfig, CpuKernels};
use modelfleet_engine::backend::cuda::workspace::ModelDims;
use modelfleet_engine::backend::cuda::{CudaConfig, CudaKernels};
use modelfleet_engine::backend::kernels::{
    AttentionShape, GatedActivation, Kernels, KvCacheDtype, KvCacheLayout, TokenPick,
};
use modelfleet_engine::backend::step::StepMetadata;
use modelfleet_engine::backend::{ForwardBatch, KvCacheShape, SequenceChunk};
use modelfleet_engine::weights::HostTensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::support::gpu_available;

/// bf16 keeps 8 significant bits: a rounded value is within 2⁻⁸ of its size.
const BF16_RELATIVE: f32 = 1.0 / 128.0;
/// A GEMM over bf16-rounded inputs: the rounding errors of `k` products partly cancel.
const GEMM_RELATIVE: f32 = 1e-2;
/// Both sides in f32, summing in different orders.
const F32_RELATIVE: f32 = 1e-4;

const BLOCK_SIZE: usize = 4;
const NUM_BLOCKS: usize = 40;

fn dims(num_heads: usize, num_kv_heads: usize, head_dim: usize) -> ModelDims {
    ModelDims {
        hidden: 256,
        intermediate: 320,
        num_heads,
        num_kv_heads,
        head_dim,
        vocab: 1000,
    }
}

fn config(kv: KvCacheDtype) -> CudaConfig {
    CudaConfig {
        device: 0,
        gpu_memory_utilization: 0.9,
        max_num_batched_tokens: 256,
        max_num_seqs: 16,
        max_model_len: NUM_BLOCKS * BLOCK_SIZE,
        block_size: BLOCK_SIZE,
        kv_cache_dtype: kv,
        cuda_graphs: false,
    }
}

/// The CPU reference (bf16 weights, as the GPU keeps them) and the GPU, or `None` (after
/// saying why) without a GPU.
fn pair(test: &str, dims: ModelDims, kv: KvCacheDtype) -> Option<(CpuKernels, CudaKernels)> {
    if !gpu_available(test) {
        return None;
    }
    let cpu = CpuKernels::new(CpuConfig {
        weight_dtype: WeightDtype::Bf16,
        ..CpuConfig::default()
    })
    .expect("cpu kernels");
    let cuda = CudaKernels::new(config(kv), dims).expect("cuda kernels");
    Some((cpu, cuda))
}

fn random(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Largest |ours - reference| ≤ `relative` × the reference's largest magnitude (at least 1).
fn assert_close(what: &str, ours: &[f32], reference: &[f32], relative: f32) {
    assert_eq!(ours.len(), reference.len(), "{what}: lengths");
    let scale = reference.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let (at, diff) = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| {
            if a.is_nan() || b.is_nan() {
                f32::INFINITY
            } else {
                (a - b).abs()
            }
        })
        .enumerate()
        .fold(
            (0, 0.0f32),
            |best, (i, d)| if d > best.1 { (i, d) } else { best },
        );
    assert!(
        diff <= relative * scale,
        "{what}: element {at} differs by {diff} ({} vs {}), more than {relative} × {scale}",
        ours[at],
        reference[at]
    );
}

fn step(chunks: Vec<SequenceChunk>, vocab: usize) -> StepMetadata {
    let shape = KvCacheShape {
        num_blocks: NUM_BLOCKS,
        block_size: BLOCK_SIZE,
    };
    StepMetadata::build(&ForwardBatch { chunks }, shape, vocab).expect("valid step")
}

fn chunk(tokens: usize, start: usize, table: &[u32]) -> SequenceChunk {
    SequenceChunk {
        token_ids: (0..tokens as u32).map(|t| (t * 37 + 5) % 1000).collect(),
        start_position: start,
        block_table: table.to_vec(),
        needs_logits: true,
        every_token_logits: false,
    }
}

/// Runs `f` on both devices with the same inputs and returns both results.
fn both<T>(
    cpu: &CpuKernels,
    cuda: &CudaKernels,
    f_cpu: impl FnOnce(&CpuKernels) -> T,
    f_cuda: impl FnOnce(&CudaKernels) -> T,
) -> (T, T) {
    (f_cpu(cpu), f_cuda(cuda))
}

#[test]
fn embedding_rows_equal_the_cpu_rows_exactly() {
    let d = dims(8, 2, 32);
    let Some((cpu, cuda)) = pair("embedding", d, KvCacheDtype::Bf16) else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(1);
    let table = HostTensor::from_f32(
        "embed",
        d.vocab,
        d.hidden,
        &random(&mut rng, d.vocab * d.hidden, 1.0),
    );
    let meta = step(vec![chunk(5, 0, &[0, 1]), chunk(1, 3, &[2])], d.vocab);
    fn run<K: Kernels>(
        k: &K,
        table: &HostTensor<'_>,
        meta: &StepMetadata,
        hidden: usize,
    ) -> Vec<f32> {
        let table = k.place_linear(std::slice::from_ref(table)).expect("placed");
        let s = k.upload_step(meta).expect("uploaded");
        let mut out = k.activations(meta.num_tokens(), hidden).expect("out");
        k.embedding(&table, &s, &mut out).expect("embedding");
        k.read(&out).expect("read")
    }
    let (a, b) = both(
        &cpu,
        &cuda,
        |k| run(k, &table, &meta, d.hidden),
        |k| run(k, &table, &meta, d.hidden),
    );
    assert_eq!(b, a);
}

#[test]
fn rms_norm_silu_mul_and_bias_equal_the_cpu_within_bf16_rounding() {
    let d = dims(8, 2, 32);
    let Some((cpu, cuda)) = pair("rms_norm/silu_mul/bias", d, KvCacheDtype::Bf16) else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(2);
    let rows = 7;
    let x = random(&mut rng, rows * d.hidden, 3.0);
    let gain = HostTensor::from_f32("norm", 1, d.hidden, &random(&mut rng, d.hidden, 1.0));
    let gate_up = random(&mut rng, rows * 2 * d.intermediate, 6.0);
    let bias = HostTensor::from_f32("bias", 1, d.hidden, &random(&mut rng, d.hidden, 1.0));
    let meta = step(vec![chunk(1, 0, &[0])], d.vocab);
    fn run<K: Kernels>(
        k: &K,
        meta: &StepMetadata,
        (x, gain, gate_up, bias): (&[f32], &HostTensor<'_>, &[f32], &HostTensor<'_>),
        (rows, hidden, intermediate): (usize, usize, usize),
    ) -> [Vec<f32>; 3] {
        let _s = k.upload_step(meta).expect("uploaded");
        let xs = k.activations_from(rows, hidden, x).expect("x");
        let gain = k.place_vector(gain).expect("gain");
        let mut normed = k.activations(rows, hidden).expect("normed");
        k.rms_norm(&xs, &gain, 1e-5, &mut normed).expect("rms_norm");
        let gu = k
            .activations_from(rows, 2 * intermediate, gate_up)
            .expect("gate_up");
        let mut act = k.activations(rows, intermediate).expect("act");
        k.gated_activation(&gu, GatedActivation::Silu, &mut act)
            .expect("silu_mul");
        let mut biased = k.activations_from(rows, hidden, x).expect("x");
        k.add_bias(&mut biased, &k.place_vector(bias).expect("bias"))
            .expect("add_bias");
        [
            k.read(&normed).expect("read"),
            k.read(&act).expect("read"),
            k.read(&biased).expect("read"),
        ]
    }
    let inputs = (&x[..], &gain, &gate_up[..], &bias);
    let sizes = (rows, d.hidden, d.intermediate);
    let (reference, ours) = both(
        &cpu,
        &cuda,
        |k| run(k, &meta, inputs, sizes),
        |k| run(k, &meta, inputs, sizes),
    );
    assert_close("rms_norm", &ours[0], &reference[0], BF16_RELATIVE);
    assert_close("silu_mul", &ours[1], &reference[1], BF16_RELATIVE);
    assert_close("add_bias", &ours[2], &reference[2], F32_RELATIVE);
}

#[test]
fn linear_and_the_residual_folded_into_it_equal_the_cpu_gemm() {
    let d = dims(8, 2, 32);
    let Some((cpu, cuda)) = pair("linear", d, KvCacheDtype::Bf16) else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(3);
    let (rows, out_features) = (9, 384);
    // Two parts stacked along the output, as fused QKV is.
    let w1 = HostTensor::from_f32("w1", 256, d.hidden, &random(&mut rng, 256 * d.hidden, 0.1));
    let w2 = HostTensor::from_f32("w2", 128, d.hidden, &random(&mut rng, 128 * d.hidden, 0.1));
    let x = random(&mut rng, rows * d.hidden, 1.0);
    let residual = random(&mut rng, rows * out_features, 1.0);
    let meta = step(vec![chunk(1, 0, &[0])], d.vocab);
    fn run<K: Kernels>(
        k: &K,
        meta: &StepMetadata,
        parts: &[HostTensor<'_>],
        x: &[f32],
        residual: &[f32],
        (rows, hidden, out_features): (usize, usize, usize),
    ) -> [Vec<f32>; 2] {
        let _s = k.upload_step(meta).expect("uploaded");
        let w = k.place_linear(parts).expect("placed");
        let xs = k.activations_from(rows, hidden, x).expect("x");
        let mut y = k.activations(rows, out_features).expect("y");
        k.linear(&xs, &w, &mut y).expect("linear");
        let mut r = k
            .activations_from(rows, out_features, residual)
            .expect("residual");
        k.add_linear(&mut r, &xs, &w).expect("add_linear");
        [k.read(&y).expect("read"), k.read(&r).expect("read")]
    }
    let parts = [w1, w2];
    let sizes = (rows, d.hidden, out_features);
    let (reference, ours) = both(
        &cpu,
        &cuda,
        |k| run(k, &meta, &parts, &x, &residual, sizes),
        |k| run(k, &meta, &parts, &x, &residual, sizes),
    );
    assert_close("linear", &ours[0], &reference[0], GEMM_RELATIVE);
    assert_close("add_linear", &ours[1], &reference[1], GEMM_RELATIVE);
}

/// Two steps over a scattered cache: first two prompts (one long enough for several
/// tiles), then a decode of the first, a chunk of the second after its cached prefix, a new
/// one-token prompt and, after a copy-on-write of the first prompt's first block, a
/// sequence reading the copy. Each step's rotated queries and attention output are
/// compared.
fn attention_steps() -> (Vec<StepMetadata>, Vec<(u32, u32)>) {
    let a_table = [9, 3, 17, 0, 5, 30];
    let first = step(vec![chunk(21, 0, &a_table), chunk(3, 0, &[12])], 1000);
    let second = step(
        vec![
            chunk(1, 21, &a_table),
            chunk(6, 3, &[12, 7, 8]),
            chunk(1, 0, &[1]),
            // Positions 0..=3 are block 9's four slots, copied to 20.
            chunk(1, 3, &[20]),
        ],
        1000,
    );
    (vec![first, second], vec![(9, 20)])
}

fn run_attention<K: Kernels>(
    k: &K,
    shape: &AttentionShape,
    dtype: KvCacheDtype,
    seed: u64,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    let (steps, copies) = attention_steps();
    let layout = KvCacheLayout {
        shape: KvCacheShape {
            num_blocks: NUM_BLOCKS,
            block_size: BLOCK_SIZE,
        },
        num_layers: 2,
        num_kv_heads: shape.num_kv_heads,
        head_dim: shape.head_dim,
        dtype,
    };
    let mut cache = k.new_kv_cache(&layout).expect("cache");
    let inv_freq: Vec<f32> = (0..shape.head_dim / 2)
        .map(|i| 10000f32.powf(-2.0 * i as f32 / shape.head_dim as f32))
        .collect();
    let rope = k.place_rope(&inv_freq).expect("rope");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut results = Vec::new();
    for (i, meta) in steps.iter().enumerate() {
        if i == 1 {
            k.copy_blocks(&mut cache, &copies).expect("copy_blocks");
        }
        for layer in 0..2 {
            let s = k.upload_step(meta).expect("uploaded");
            let values = random(&mut rng, meta.num_tokens() * shape.qkv_width(), 2.0);
            let mut qkv = k
                .activations_from(meta.num_tokens(), shape.qkv_width(), &values)
                .expect("qkv");
            k.rope_and_cache_kv(&mut qkv, shape, &rope, layer, &s, &mut cache)
                .expect("rope");
            let mut out = k
                .activations(meta.num_tokens(), shape.q_width())
                .expect("out");
            k.paged_attention(&qkv, shape, layer, &s, &cache, &mut out)
                .expect("attention");
            results.push((k.read(&qkv).expect("read"), k.read(&out).expect("read")));
        }
    }
    results
}

#[test]
fn rope_with_the_cache_write_and_paged_attention_equal_the_cpu_for_prefill_decode_and_prefix_hits()
{
    // Llama-3-8B's heads, Llama-3.2-1B's, Qwen2's group of 7, the test models' 16-wide heads.
    for (heads, kv_heads, head_dim) in [(32, 8, 128), (32, 8, 64), (14, 2, 128), (4, 2, 16)] {
        for dtype in [KvCacheDtype::Bf16, KvCacheDtype::F16, KvCacheDtype::F32] {
            let d = dims(heads, kv_heads, head_dim);
            let Some((cpu, cuda)) = pair("attention", d, dtype) else {
                return;
            };
            let shape = AttentionShape {
                num_heads: heads,
                num_kv_heads: kv_heads,
                head_dim,
                scale: 1.0 / (head_dim as f32).sqrt(),
                sliding_window: None,
                logit_softcap: None,
            };
            let reference = run_attention(&cpu, &shape, dtype, 4);
            let ours = run_attention(&cuda, &shape, dtype, 4);
            for (i, ((q_ref, out_ref), (q, out))) in reference.iter().zip(&ours).enumerate() {
                let what = format!(
                    "{heads}x{kv_heads}x{head_dim} {dtype:?} step {} layer {}",
                    i / 2,
                    i % 2
                );
                assert_close(&format!("{what}: rotated qkv"), q, q_ref, F32_RELATIVE);
                assert_close(&format!("{what}: attention"), out, out_ref, BF16_RELATIVE);
            }
        }
    }
}

#[test]
fn logits_rows_are_gathered_exactly() {
    let d = dims(8, 2, 32);
    let Some((cpu, cuda)) = pair("gather", d, KvCacheDtype::Bf16) else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(5);
    let mut middle = chunk(4, 0, &[3]);
    middle.needs_logits = false;
    let meta = step(vec![chunk(3, 0, &[0]), middle, chunk(2, 0, &[1])], d.vocab);
    let x = random(&mut rng, meta.num_tokens() * d.hidden, 1.0);
    fn run<K: Kernels>(k: &K, meta: &StepMetadata, x: &[f32], hidden: usize) -> Vec<f32> {
        let s = k.upload_step(meta).expect("uploaded");
        let xs = k.activations_from(meta.num_tokens(), hidden, x).expect("x");
        let mut out = k.activations(meta.logits_rows.len(), hidden).expect("out");
        k.gather_logits_rows(&xs, &s, &mut out).expect("gather");
        k.read(&out).expect("read")
    }
    let (a, b) = both(
        &cpu,
        &cuda,
        |k| run(k, &meta, &x, d.hidden),
        |k| run(k, &meta, &x, d.hidden),
    );
    assert_eq!(b, a);
    assert_eq!(a.len(), 2 * d.hidden);
}

#[test]
fn tokens_picked_on_the_gpu_equal_the_host_samplers_picks() {
    let d = dims(8, 2, 32);
    let Some((_cpu, cuda)) = pair("pick_tokens", d, KvCacheDtype::Bf16) else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(6);
    let vocab = 32_000;
    let rows = 96;
    let mut logits = random(&mut rng, rows * vocab, 8.0);
    // Ties for the arg max: the lowest index wins; a row of -inf picks token 0.
    logits[vocab + 10] = 100.0;
    logits[vocab + 20] = 100.0;
    for v in &mut logits[2 * vocab..3 * vocab] {
        *v = f32::NEG_INFINITY;
    }
    let sample = |temperature, top_k, top_p, min_p, uniform| TokenPick::Sample {
        temperature,
        top_k,
        top_p,
        min_p,
        uniform,
    };
    // Rows 0-2 and every sixth are greedy; the rest cycle through the filters.
    let picks: Vec<TokenPick> = (0..rows)
        .map(|r| match r % 6 {
            _ if r < 3 => TokenPick::Greedy,
            0 => TokenPick::Greedy,
            1 => sample(1.0, 0, 1.0, 0.0, rng.random()),
            2 => sample(0.7, 50, 1.0, 0.0, rng.random()),
            3 => sample(1.3, 0, 0.9, 0.0, rng.random()),
            4 => sample(1.0, 0, 1.0, 0.1, rng.random()),
            _ => sample(0.8, 200, 0.95, 0.02, rng.random()),
        })
        .collect();
    let meta = step(vec![chunk(1, 0, &[0])], 1000);
    let _s = cuda.upload_step(&meta).expect("uploaded");
    let on_device = cuda.activations_from(rows, vocab, &logits).expect("logits");
    let ours = cuda.pick_tokens(&on_device, &picks).expect("picked");
    let host: Vec<u32> = logits
        .chunks_exact(vocab)
        .zip(&picks)
        .map(|(row, p)| p.pick(row))
        .collect();
    assert_eq!(ours[1], 10, "ties go to the lowest index");
    assert_eq!(ours[2], 0, "a row of -inf picks token 0");
    let greedy_rows: Vec<usize> = (0..rows)
        .filter(|&r| picks[r] == TokenPick::Greedy)
        .collect();
    for &r in &greedy_rows {
        assert_eq!(ours[r], host[r], "greedy row {r}");
    }
    // Sampled rows agree with the host except where the draw falls within float rounding
    // of a boundary between two tokens (the host sums in f64, the GPU in f32).
    let disagreements: Vec<usize> = (0..rows).filter(|&r| ours[r] != host[r]).collect();
    eprintln!(
        "pick_tokens: {} of {rows} rows differ from the host: {disagreements:?}",
        disagreements.len()
    );
    assert!(disagreements.len() <= rows / 50, "{disagreements:?}");
    // Positive control: sampling really spreads over tokens.
    let sampled: std::collections::HashSet<u32> = (0..rows)
        .filter(|r| !greedy_rows.contains(r))
        .map(|r| ours[r])
        .collect();
    assert!(sampled.len() > rows / 4);
}
