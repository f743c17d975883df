//! Causal attention over the paged cache on the CPU.
//!
//! Work is split by (sequence, KV head, up to 16 of the sequence's tokens). Within a piece,
//! the cache is walked block by block: each block's keys and values are read once and used
//! by every query head of the KV head's group for every token, with an online softmax
//! (running maximum and sum per query). A query sees exactly the keys up to its own
//! position, in block order, so its result is the same whether its token is decoded alone
//! or prefilled in a chunk with others.

use std::cell::Cell;
use std::ops::Range;

use rayon::prelude::*;

use super::kv_cache::{CpuKvCache, Plane};
use super::simd::math::exp;
use super::simd::{Isa, Simd, simd_dispatch};
use crate::backend::kernels::AttentionShape;
use crate::backend::step::StepMetadata;

/// Tokens of one sequence a work item takes at most.
const TOKENS_PER_ITEM: usize = 16;

thread_local! {
    /// Softmax state of one work item, reused across items and steps.
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: work items write disjoint (token, head) slices of the output, and
// `paged_attention` returns only after all of them.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

struct Item<'a> {
    qkv: &'a [f32],
    shape: &'a AttentionShape,
    step: &'a StepMetadata,
    keys: &'a Plane,
    values: &'a Plane,
    out: OutPtr,
    seq: usize,
    kv_head: usize,
    tokens: Range<usize>,
}

/// `out[t, h] = softmax(q[t, h] · K[0..=pos_t]ᵀ · scale) · V[0..=pos_t]` for every token
/// `t` of the step and query head `h`; `qkv` rows are fused QKV rows after RoPE, and the
/// step's keys and values are already in `cache`.
pub(super) fn paged_attention(
    isa: Isa,
    qkv: &[f32],
    shape: &AttentionShape,
    layer: usize,
    step: &StepMetadata,
    cache: &CpuKvCache,
    out: &mut [f32],
) {
    assert_eq!(
        qkv.len(),
        step.num_tokens() * shape.qkv_width(),
        "attention: qkv shape"
    );
    assert_eq!(
        out.len(),
        step.num_tokens() * shape.q_width(),
        "attention: output shape"
    );
    let out = OutPtr(out.as_mut_ptr());
    let mut items = Vec::new();
    for seq in 0..step.num_seqs() {
        let tokens = step.tokens_of(seq);
        for start in tokens.clone().step_by(TOKENS_PER_ITEM) {
            for kv_head in 0..shape.num_kv_heads {
                items.push(Item {
                    qkv,
                    shape,
                    step,
                    keys: &cache.keys[layer],
                    values: &cache.values[layer],
                    out,
                    seq,
                    kv_head,
                    tokens: start..(start + TOKENS_PER_ITEM).min(tokens.end),
                });
            }
        }
    }
    items.par_iter().for_each(|item| attend_item(isa, item));
}

simd_dispatch!(fn attend_item(item: &Item<'_>) => attend);

/// How a cache plane's values widen to f32.
trait Element {
    type Raw: Copy;
    /// # Safety
    /// `p` must point at 8 readable values.
    unsafe fn load<S: Simd>(p: *const Self::Raw) -> S::Floats;
}

struct F32Values;
struct F16Values;
struct Bf16Values;

impl Element for F32Values {
    type Raw = f32;
    #[inline(always)]
    unsafe fn load<S: Simd>(p: *const f32) -> S::Floats {
        // SAFETY: the caller's contract.
        unsafe { S::load(p) }
    }
}

impl Element for F16Values {
    type Raw = u16;
    #[inline(always)]
    unsafe fn load<S: Simd>(p: *const u16) -> S::Floats {
        // SAFETY: the caller's contract.
        unsafe { S::load_f16(p) }
    }
}

impl Element for Bf16Values {
    type Raw = u16;
    #[inline(always)]
    unsafe fn load<S: Simd>(p: *const u16) -> S::Floats {
        // SAFETY: the caller's contract.
        unsafe { S::load_bf16(p) }
    }
}

#[inline(always)]
fn attend<S: Simd>(item: &Item<'_>) {
    match (item.keys, item.values) {
        (Plane::F32(k), Plane::F32(v)) => attend_over::<S, F32Values>(item, k.as_ptr(), v.as_ptr()),
        (Plane::F16(k), Plane::F16(v)) => attend_over::<S, F16Values>(item, k.as_ptr(), v.as_ptr()),
        (Plane::Bf16(k), Plane::Bf16(v)) => {
            attend_over::<S, Bf16Values>(item, k.as_ptr(), v.as_ptr())
        }
        _ => unreachable!("keys and values share a precision"),
    }
}

#[inline(always)]
fn attend_over<S: Simd, E: Element>(item: &Item<'_>, keys: *const E::Raw, values: *const E::Raw) {
    let shape = item.shape;
    let step = item.step;
    let (hd, group) = (shape.head_dim, shape.group_size());
    let (bs, qkv_width) = (step.block_size, shape.qkv_width());
    let table = step.block_table(item.seq);
    let queries = item.tokens.len() * group;
    let last_position = step.positions[item.tokens.end - 1] as usize;
    // The first key each token sees: its window's start (0 without a sliding window).
    let first_visible = |t: usize| match shape.sliding_window {
        Some(window) => (step.positions[t] as usize + 1).saturating_sub(window),
        None => 0,
    };
    let first_block = first_visible(item.tokens.start) / bs;
    // The buffer moves out of the thread-local and back: the kernel itself must not run in
    // a closure, which would not inherit the SIMD path's target features.
    let mut scratch = SCRATCH.take();
    {
        scratch.clear();
        scratch.resize(queries * (hd + 2) + bs.next_multiple_of(8), 0.0);
        let (max, rest) = scratch.split_at_mut(queries);
        let (sum, rest) = rest.split_at_mut(queries);
        let (acc, scores) = rest.split_at_mut(queries * hd);
        max.fill(f32::NEG_INFINITY);
        // SAFETY: block ids come from the step's validated tables, so every slot is inside
        // the cache planes (`num_blocks * block_size` slots of `num_kv_heads * hd` values);
        // query pointers stay inside `qkv` rows, accumulator pointers inside `acc`, and the
        // output writes inside `out`'s `tokens × q_width`; `hd` is a multiple of 8.
        unsafe {
            for (b, &block) in table
                .iter()
                .enumerate()
                .take(last_position / bs + 1)
                .skip(first_block)
            {
                let base = b * bs;
                for (ti, t) in item.tokens.clone().enumerate() {
                    let visible = (step.positions[t] as usize + 1)
                        .saturating_sub(base)
                        .min(bs);
                    // Keys before `hidden` in this block are outside the token's window.
                    let hidden = first_visible(t).saturating_sub(base).min(visible);
                    if visible == hidden {
                        continue;
                    }
                    for g in 0..group {
                        let qi = ti * group + g;
                        let q = item
                            .qkv
                            .as_ptr()
                            .add(t * qkv_width + (item.kv_head * group + g) * hd);
                        let mut block_max = f32::NEG_INFINITY;
                        for (j, score) in scores[..visible].iter_mut().enumerate() {
                            let slot = block as usize * bs + j;
                            let k = keys.add((slot * shape.num_kv_heads + item.kv_head) * hd);
                            let mut dot = S::zero();
                            for c in (0..hd).step_by(8) {
                                dot = S::fma(S::load(q.add(c)), E::load::<S>(k.add(c)), dot);
                            }
                            *score = if j < hidden {
                                f32::NEG_INFINITY
                            } else {
                                soft_capped(S::sum(dot) * shape.scale, shape.logit_softcap)
                            };
                            block_max = block_max.max(*score);
                        }
                        let new_max = max[qi].max(block_max);
                        let shrink = (max[qi] - new_max).exp();
                        let correction = S::splat(shrink);
                        sum[qi] *= shrink;
                        max[qi] = new_max;
                        // The block's weights, 8 at a time (the padding past `visible` is
                        // computed and never read).
                        for c in (0..visible).step_by(8) {
                            let s = scores.as_mut_ptr().add(c);
                            S::store(s, exp::<S>(S::add(S::load(s), S::splat(-new_max))));
                        }
                        let a = acc.as_mut_ptr().add(qi * hd);
                        for c in (0..hd).step_by(8) {
                            S::store(a.add(c), S::mul(S::load(a.add(c)), correction));
                        }
                        for (j, &p) in scores[..visible].iter().enumerate().skip(hidden) {
                            sum[qi] += p;
                            let slot = block as usize * bs + j;
                            let v = values.add((slot * shape.num_kv_heads + item.kv_head) * hd);
                            let p = S::splat(p);
                            for c in (0..hd).step_by(8) {
                                S::store(
                                    a.add(c),
                                    S::fma(p, E::load::<S>(v.add(c)), S::load(a.add(c))),
                                );
                            }
                        }
                    }
                }
            }
            for (ti, t) in item.tokens.clone().enumerate() {
                for g in 0..group {
                    let qi = ti * group + g;
                    let inverse = S::splat(1.0 / sum[qi]);
                    let a = acc.as_ptr().add(qi * hd);
                    let o = item
                        .out
                        .0
                        .add(t * shape.q_width() + (item.kv_head * group + g) * hd);
                    for c in (0..hd).step_by(8) {
                        S::store(o.add(c), S::mul(S::load(a.add(c)), inverse));
                    }
                }
            }
        }
    }
    SCRATCH.set(scratch);
}

/// `cap · tanh(score / cap)`, or the score itself without a cap.
#[inline(always)]
fn soft_capped(score: f32, cap: Option<f32>) -> f32 {
    match cap {
        Some(cap) => cap * (score / cap).tanh(),
        None => score,
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::backend::kernels::{KvCacheDtype, KvCacheLayout};
    use crate::backend::{ForwardBatch, KvCacheShape, SequenceChunk};

    const SHAPE: AttentionShape = AttentionShape {
        num_heads: 6,
        num_kv_heads: 2,
        head_dim: 16,
        scale: 0.25,
        sliding_window: None,
        logit_softcap: None,
    };
    const CACHE: KvCacheShape = KvCacheShape {
        num_blocks: 12,
        block_size: 4,
    };

    /// A prefill chunk of 20 tokens continuing a cached prefix of 3 (so it spans several
    /// work items), and a decode at position 9, over scattered blocks.
    fn step() -> StepMetadata {
        let batch = ForwardBatch {
            chunks: vec![
                SequenceChunk {
                    token_ids: vec![1; 20],
                    start_position: 3,
                    block_table: vec![7, 2, 9, 0, 4, 11],
                    needs_logits: true,
                    every_token_logits: false,
                },
                SequenceChunk {
                    token_ids: vec![1],
                    start_position: 9,
                    block_table: vec![5, 1, 8],
                    needs_logits: true,
                    every_token_logits: false,
                },
            ],
        };
        StepMetadata::build(&batch, CACHE, 10).expect("valid")
    }

    /// Per sequence, per position: the key and value rows written there.
    type Contents = Vec<Vec<(Vec<f32>, Vec<f32>)>>;

    /// A cache holding random keys and values at every position of both sequences.
    fn cache(dtype: KvCacheDtype, rng: &mut StdRng) -> (CpuKvCache, Contents) {
        let layout = KvCacheLayout {
            shape: CACHE,
            num_layers: 1,
            num_kv_heads: SHAPE.num_kv_heads,
            head_dim: SHAPE.head_dim,
            dtype,
        };
        let mut cache = CpuKvCache::new(&layout);
        let step = step();
        let mut contents = Vec::new();
        for seq in 0..step.num_seqs() {
            let table = step.block_table(seq);
            let mut positions = Vec::new();
            for p in 0..step.context_lens[seq] as usize {
                let slot = table[p / 4] as usize * 4 + p % 4;
                let kv: Vec<f32> = (0..2 * SHAPE.kv_width())
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect();
                let (k, v) = kv.split_at(SHAPE.kv_width());
                cache.write(0, slot, k, v);
                // What the cache holds, after rounding to its precision.
                let round = |x: &[f32]| -> Vec<f32> {
                    match dtype {
                        KvCacheDtype::F32 => x.to_vec(),
                        KvCacheDtype::F16 => {
                            x.iter().map(|v| half::f16::from_f32(*v).to_f32()).collect()
                        }
                        KvCacheDtype::Bf16 => x
                            .iter()
                            .map(|v| half::bf16::from_f32(*v).to_f32())
                            .collect(),
                    }
                };
                positions.push((round(k), round(v)));
            }
            contents.push(positions);
        }
        (cache, contents)
    }

    fn run(isa: Isa, qkv: &[f32], cache: &CpuKvCache) -> Vec<f32> {
        run_shape(isa, &SHAPE, qkv, cache)
    }

    fn run_shape(isa: Isa, shape: &AttentionShape, qkv: &[f32], cache: &CpuKvCache) -> Vec<f32> {
        let step = step();
        let mut out = vec![0.0; step.num_tokens() * shape.q_width()];
        paged_attention(isa, qkv, shape, 0, &step, cache, &mut out);
        out
    }

    #[test]
    fn attention_equals_a_direct_softmax_and_every_simd_path_agrees_exactly() {
        check_against_a_direct_softmax(&SHAPE, 1);
    }

    #[test]
    fn a_sliding_window_and_a_soft_cap_equal_a_direct_softmax_over_the_window() {
        // A window of 6 keys that starts mid-block, and scores capped well inside their range.
        let shape = AttentionShape {
            sliding_window: Some(6),
            logit_softcap: Some(0.5),
            ..SHAPE
        };
        check_against_a_direct_softmax(&shape, 3);
    }

    fn check_against_a_direct_softmax(shape: &AttentionShape, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let step = step();
        let qkv: Vec<f32> = (0..step.num_tokens() * shape.qkv_width())
            .map(|_| rng.random_range(-2.0..2.0))
            .collect();
        for dtype in [KvCacheDtype::F32, KvCacheDtype::F16, KvCacheDtype::Bf16] {
            let (cache, contents) = cache(dtype, &mut rng);
            let ours = run_shape(Isa::Portable, shape, &qkv, &cache);
            for isa in Isa::supported() {
                assert_eq!(
                    run_shape(isa, shape, &qkv, &cache),
                    ours,
                    "{isa}, {} cache",
                    dtype.name()
                );
            }
            let (hd, group) = (shape.head_dim, shape.group_size());
            for (seq, written) in contents.iter().enumerate() {
                for t in step.tokens_of(seq) {
                    let position = step.positions[t] as usize;
                    for h in 0..shape.num_heads {
                        let q = &qkv[t * shape.qkv_width() + h * hd..][..hd];
                        let kv_head = h / group;
                        let first = shape
                            .sliding_window
                            .map_or(0, |w| (position + 1).saturating_sub(w));
                        let visible = &written[first..=position];
                        let scores: Vec<f64> = visible
                            .iter()
                            .map(|(k, _)| {
                                let k = &k[kv_head * hd..][..hd];
                                let score = q
                                    .iter()
                                    .zip(k)
                                    .map(|(a, b)| *a as f64 * *b as f64)
                                    .sum::<f64>()
                                    * shape.scale as f64;
                                match shape.logit_softcap {
                                    Some(cap) => cap as f64 * (score / cap as f64).tanh(),
                                    None => score,
                                }
                            })
                            .collect();
                        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                        let total: f64 = weights.iter().sum();
                        for d in 0..hd {
                            let expected: f64 = weights
                                .iter()
                                .zip(visible)
                                .map(|(w, (_, v))| w * v[kv_head * hd + d] as f64)
                                .sum::<f64>()
                                / total;
                            let got = ours[t * shape.q_width() + h * hd + d] as f64;
                            assert!(
                                (got - expected).abs() <= 1e-5,
                                "{} cache, token {t} head {h} dim {d}: {got} vs {expected}",
                                dtype.name()
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_tokens_attention_does_not_depend_on_the_chunk_it_is_in() {
        let mut rng = StdRng::seed_from_u64(2);
        let step = step();
        let qkv: Vec<f32> = (0..step.num_tokens() * SHAPE.qkv_width())
            .map(|_| rng.random_range(-2.0..2.0))
            .collect();
        let (cache, _) = cache(KvCacheDtype::F16, &mut rng);
        let whole = run(Isa::detect(), &qkv, &cache);
        // Token 13 of the chunk (position 16) decoded alone, over the same cache.
        let alone = ForwardBatch {
            chunks: vec![SequenceChunk {
                token_ids: vec![1],
                start_position: 16,
                block_table: vec![7, 2, 9, 0, 4],
                needs_logits: true,
                every_token_logits: false,
            }],
        };
        let alone = StepMetadata::build(&alone, CACHE, 10).expect("valid");
        let row = &qkv[13 * SHAPE.qkv_width()..14 * SHAPE.qkv_width()];
        let mut out = vec![0.0; SHAPE.q_width()];
        paged_attention(Isa::detect(), row, &SHAPE, 0, &alone, &cache, &mut out);
        assert_eq!(out, whole[13 * SHAPE.q_width()..14 * SHAPE.q_width()]);
    }
}
