// Token selection on the device, one row of logits per block, so only the chosen token ids
// cross to the host. Mirrors the host sampler (crate::sampling::logits):
//
// - greedy: the arg max; the lowest index wins ties and NaNs never win.
// - sampled: temperature, then top-k, top-p and min-p, then the inverse of the kept
//   tokens' cumulative distribution, walked from most to least likely (lower index first
//   among equals), at the uniform number the host drew from the request's own stream.
//
// Instead of sorting the vocabulary, each cut-off is found by bisecting on the bits of a
// float (the order of non-negative floats is the order of their bits): a few dozen passes
// over the row, which stays in L2. Where the host keeps exactly k tokens among several
// equal to the k-th (or cuts top-p inside a run of equal probabilities), this keeps the
// whole run of equals.
//
// Grid: one block per row. Block: SELECT_THREADS threads.

#define SELECT_THREADS 1024

// A u32 whose order is the order of the float (for any sign).
__device__ __forceinline__ u32 ordered_bits(float f) {
    const u32 b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float from_ordered_bits(u32 b) {
    return __uint_as_float((b & 0x80000000u) ? (b & 0x7fffffffu) : ~b);
}

// The arg max of one row into *token. Every thread of the block calls it.
__device__ void argmax_row(const float* __restrict__ row, int vocab, u32* __restrict__ token) {
    __shared__ float best_values[SELECT_THREADS];
    __shared__ u32 best_indices[SELECT_THREADS];
    float best = NEG_INF;
    u32 index = 0xffffffffu;
    for (int i = threadIdx.x; i < vocab; i += SELECT_THREADS) {
        const float v = row[i];
        if (v > best) {  // strided ascending, so a later equal value never replaces
            best = v;
            index = i;
        }
    }
    best_values[threadIdx.x] = best;
    best_indices[threadIdx.x] = index;
    __syncthreads();
    for (int stride = SELECT_THREADS / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) {
            const float other = best_values[threadIdx.x + stride];
            const u32 other_index = best_indices[threadIdx.x + stride];
            const float mine = best_values[threadIdx.x];
            if (other > mine || (other == mine && other_index < best_indices[threadIdx.x])) {
                best_values[threadIdx.x] = other;
                best_indices[threadIdx.x] = other_index;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        // A row of NaNs or -inf: token 0, as the host's argmax.
        *token = best_indices[0] == 0xffffffffu ? 0 : best_indices[0];
    }
}

extern "C" __global__ void __launch_bounds__(SELECT_THREADS) argmax_rows(
    const float* __restrict__ logits,  // [rows, vocab]
    int vocab,
    u32* __restrict__ tokens) {        // [rows]
    argmax_row(logits + (u64)blockIdx.x * vocab, vocab, tokens + blockIdx.x);
}

// One sampled row's parameters, as the host packs them (5 words).
struct Pick {
    float temperature;  // 0: greedy
    u32 top_k;          // 0: every token
    float top_p;        // 1: no cut
    float min_p;        // 0: no cut
    float uniform;      // in [0, 1)
};

// The weight of token i once every cut-off so far applies: 0 if it is cut.
__device__ __forceinline__ float kept_weight(
    float logit, float max_logit, float inv_temperature, float min_logit, float min_weight) {
    if (!(logit >= min_logit)) return 0.0f;  // also drops NaN
    const float w = expf((logit - max_logit) * inv_temperature);
    return w >= min_weight ? w : 0.0f;
}

extern "C" __global__ void __launch_bounds__(SELECT_THREADS) sample_rows(
    const float* __restrict__ logits,  // [rows, vocab]
    int vocab,
    const Pick* __restrict__ picks,    // [rows]
    u32* __restrict__ tokens) {        // [rows]
    __shared__ float scratch[32];
    __shared__ u32 counts[SELECT_THREADS];
    const float* row = logits + (u64)blockIdx.x * vocab;
    const Pick pick = picks[blockIdx.x];
    if (!(pick.temperature > 0.0f)) {
        argmax_row(row, vocab, tokens + blockIdx.x);
        return;
    }
    const float inv_temperature = 1.0f / pick.temperature;

    float m = NEG_INF;
    for (int i = threadIdx.x; i < vocab; i += SELECT_THREADS) m = fmaxf(m, row[i]);
    const float max_logit = block_max(m, scratch);

    // top-k: the largest logit value with at least k logits at or above it.
    float min_logit = NEG_INF;
    if (pick.top_k > 0 && pick.top_k < (u32)vocab) {
        u32 lo = ordered_bits(NEG_INF);
        u32 hi = ordered_bits(max_logit);
        while (lo < hi) {
            const u32 mid = lo + (hi - lo + 1) / 2;
            const float x = from_ordered_bits(mid);
            float c = 0.0f;
            for (int i = threadIdx.x; i < vocab; i += SELECT_THREADS) c += row[i] >= x ? 1.0f : 0.0f;
            if (block_sum(c, scratch) >= (float)pick.top_k) lo = mid; else hi = mid - 1;
        }
        min_logit = from_ordered_bits(lo);
    }

    // min-p, relative to the most likely token (whose weight is 1).
    float min_weight = pick.min_p > 0.0f ? pick.min_p : 0.0f;
    float total = 0.0f;
    for (int i = threadIdx.x; i < vocab; i += SELECT_THREADS)
        total += kept_weight(row[i], max_logit, inv_temperature, min_logit, 0.0f);
    total = block_sum(total, scratch);

    // top-p: the largest weight w whose tokens of weight >= w hold top_p of the total.
    // (The host cuts top-p before min-p; min-p's threshold is relative to the top token,
    // which top-p always keeps, so the order does not change what either keeps.)
    if (pick.top_p < 1.0f) {
        u32 lo = 0;
        u32 hi = __float_as_uint(1.0f);
        while (lo < hi) {
            const u32 mid = lo + (hi - lo + 1) / 2;
            const float w = __uint_as_float(mid);
            float s = 0.0f;
            for (int i = threadIdx.x; i < vocab; i += SELECT_THREADS) {
                const float k = kept_weight(row[i], max_logit, inv_temperature, min_logit, 0.0f);
                s += k >= w ? k : 0.0f;
            }
            if (block_sum(s, scratch) >= pick.top_p * total) lo = mid; else hi = mid - 1;
        }
        min_weight = fmaxf(min_weight, __uint_as_float(lo));
    }

    float kept = 0.0f;
    for (int i = threadIdx.x; i < vocab; i += SELECT_THREADS)
        kept += kept_weight(row[i], max_logit, inv_temperature, min_logit, min_weight);
    kept = block_sum(kept, scratch);
    const float target = pick.uniform * kept;

    // The chosen weight: the largest w whose tokens of weight >= w pass the target.
    u32 lo = 0;
    u32 hi = __float_as_uint(1.0f);
    while (lo < hi) {
        const u32 mid = lo + (hi - lo + 1) / 2;
        const float w = __uint_as_float(mid);
        float s = 0.0f;
        for (int i = threadIdx.x; i < vocab; i += SELECT_THREADS) {
            const float k = kept_weight(row[i], max_logit, inv_temperature, min_logit, min_weight);
            s += k >= w ? k : 0.0f;
        }
        if (block_sum(s, scratch) > target) lo = mid; else hi = mid - 1;
    }
    const float chosen = __uint_as_float(lo);
    // Weight of the tokens before the run of `chosen`, and which of the run (in index
    // order) the target falls on.
    float above = 0.0f;
    for (int i = threadIdx.x; i < vocab; i += SELECT_THREADS) {
        const float k = kept_weight(row[i], max_logit, inv_temperature, min_logit, min_weight);
        above += k > chosen ? k : 0.0f;
    }
    above = block_sum(above, scratch);
    const u32 nth = chosen > 0.0f ? (u32)fmaxf(0.0f, floorf((target - above) / chosen)) : 0;

    // Count the run in contiguous spans per thread, then find the span holding the nth.
    const int span = (vocab + SELECT_THREADS - 1) / SELECT_THREADS;
    const int start = threadIdx.x * span;
    const int stop = min(vocab, start + span);
    u32 mine = 0;
    for (int i = start; i < stop; ++i) {
        mine += kept_weight(row[i], max_logit, inv_temperature, min_logit, min_weight) == chosen;
    }
    counts[threadIdx.x] = mine;
    __syncthreads();
    // Inclusive prefix sum (Hillis-Steele).
    for (int offset = 1; offset < SELECT_THREADS; offset <<= 1) {
        const u32 add = threadIdx.x >= offset ? counts[threadIdx.x - offset] : 0;
        __syncthreads();
        counts[threadIdx.x] += add;
        __syncthreads();
    }
    const u32 run = counts[SELECT_THREADS - 1];
    // Rounding leftovers fall on the run's last token, as the host's on its last candidate.
    const u32 target_rank = run == 0 ? 0 : min(nth, run - 1);
    const u32 before = counts[threadIdx.x] - mine;
    if (run == 0) {
        if (threadIdx.x == 0) tokens[blockIdx.x] = 0;  // no finite logit: token 0, as the host
        return;
    }
    if (target_rank >= before && target_rank < before + mine) {
        u32 seen = before;
        for (int i = start; i < stop; ++i) {
            if (kept_weight(row[i], max_logit, inv_temperature, min_logit, min_weight) == chosen) {
                if (seen == target_rank) {
                    tokens[blockIdx.x] = i;
                    return;
                }
                ++seen;
            }
        }
    }
}
