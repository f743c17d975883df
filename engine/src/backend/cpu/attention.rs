//! Causal attention over the paged cache on the CPU.
//!
//! Work is split by (sequence, KV head, up to 16 of the sequence's tokens). Within a piece,
//! the cache is walked block by block: each block's keys and values are read once and used
//! by every query head of the KV head's group for every token, with an online softmax
//! (running maximum and sum per query). A query sees exactly the keys up to its own
//! position, in block order, so its result is the same whether its token is decoded alone
//! or prefilled in a chunk with others.

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

use super::kv_cache::{CpuKvCache, Plane};
use super::simd::{Isa, Simd, simd_dispatch};
use crate::backend::kernels::AttentionShape;
use crate::backend::step::StepMetadata;

/// Tokens of one sequence a work item takes at most.
const TOKENS_PER_ITEM: usize = 16;

thread_local! {
    /// Softmax state of one work item, reused across items and steps.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
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
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        scratch.clear();
        scratch.resize(queries * (hd + 2) + bs, 0.0);
        let (max, rest) = scratch.split_at_mut(queries);
        let (sum, rest) = rest.split_at_mut(queries);
        let (acc, scores) = rest.split_at_mut(queries * hd);
        max.fill(f32::NEG_INFINITY);
        // SAFETY: block ids come from the step's validated tables, so every slot is inside
        // the cache planes (`num_blocks * block_size` slots of `num_kv_heads * hd` values);
        // query pointers stay inside `qkv` rows, accumulator pointers inside `acc`, and the
        // output writes inside `out`'s `tokens × q_width`; `hd` is a multiple of 8.
        unsafe {
            for (b, &block) in table.iter().enumerate().take(last_position / bs + 1) {
                let base = b * bs;
                for (ti, t) in item.tokens.clone().enumerate() {
                    let visible = (step.positions[t] as usize + 1)
                        .saturating_sub(base)
                        .min(bs);
                    if visible == 0 {
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
                            *score = S::sum(dot) * shape.scale;
                            block_max = block_max.max(*score);
                        }
                        let new_max = max[qi].max(block_max);
                        let correction = S::splat((max[qi] - new_max).exp());
                        sum[qi] *= (max[qi] - new_max).exp();
                        max[qi] = new_max;
                        let a = acc.as_mut_ptr().add(qi * hd);
                        for c in (0..hd).step_by(8) {
                            S::store(a.add(c), S::mul(S::load(a.add(c)), correction));
                        }
                        for (j, score) in scores[..visible].iter().enumerate() {
                            let p = (score - new_max).exp();
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
    });
}
