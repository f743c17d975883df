// Causal attention over the paged cache for chunks of several tokens: a prompt, one chunk
// of a long prompt (chunked prefill) or a prompt whose first blocks were prefix-cache hits.
// Every query sees the keys at positions up to its own, whether this step wrote them or an
// earlier one did.
//
// A thread block takes one tile (up to TILE_TOKENS consecutive tokens of one sequence) and
// one KV head: the tile's TILE_TOKENS * GROUP queries, PARTS threads each (a thread holds
// every PARTS-th dimension, so the threads of a query read adjacent words of shared memory).
// Keys and values stream through shared memory KEYS positions at a time, loaded once for
// every query of the tile, with an online softmax per query.
//
// Compiled with HEAD_DIM (a multiple of PARTS), GROUP and KV_DTYPE.
// Grid: (tiles, kv_heads). Block: THREADS threads.

#define THREADS 128
#define PARTS 4
#define QUERIES (THREADS / PARTS)
#define TILE_TOKENS (QUERIES / GROUP)
#define DIMS (HEAD_DIM / PARTS)
// Up to 32 KiB of keys and values in float32, and at most 64 scores a thread.
#define KEYS (4096 / HEAD_DIM < 64 ? 4096 / HEAD_DIM : 64)

extern "C" __global__ void __launch_bounds__(THREADS) attention_prefill(
    const float* __restrict__ qkv,          // [tokens, (heads + 2 * kv_heads) * HEAD_DIM], after RoPE
    const kv_t* __restrict__ key_cache,     // [blocks * block_size, kv_heads * HEAD_DIM]
    const kv_t* __restrict__ value_cache,
    const u32* __restrict__ tiles,          // [tiles, 3]: sequence, first token, tokens
    const u32* __restrict__ positions,      // [tokens]
    const u32* __restrict__ context_lens,   // [sequences]
    const u32* __restrict__ block_tables,   // [sequences, table_stride]
    int table_stride,
    int block_size,
    int num_heads,
    int num_kv_heads,
    float scale,
    u16* __restrict__ out) {                // [tokens, heads * HEAD_DIM] bfloat16
    __shared__ float keys[KEYS][HEAD_DIM];
    __shared__ float values[KEYS][HEAD_DIM];

    const u32 seq = tiles[3 * blockIdx.x];
    const u32 first = tiles[3 * blockIdx.x + 1];
    const int count = (int)tiles[3 * blockIdx.x + 2];
    const int kv_head = blockIdx.y;
    const int query = threadIdx.x / PARTS;
    const int part = threadIdx.x % PARTS;
    const int local_token = query / GROUP;
    const int g = query % GROUP;
    // Threads past the tile's queries still load keys and take part in the shuffles.
    const bool active = local_token < count;
    const u32 token = first + (active ? local_token : 0);
    const int position = active ? (int)positions[token] : -1;
    const int last_position = (int)positions[first + count - 1];
    const int context = (int)context_lens[seq];
    const int kv_width = num_kv_heads * HEAD_DIM;
    const int qkv_width = num_heads * HEAD_DIM + 2 * kv_width;
    const int head = kv_head * GROUP + g;
    const u32* table = block_tables + (u64)seq * table_stride;

    float q[DIMS];
    float acc[DIMS];
    const float* q_row = qkv + (u64)token * qkv_width + head * HEAD_DIM;
#pragma unroll
    for (int d = 0; d < DIMS; ++d) {
        q[d] = active ? q_row[part + PARTS * d] * scale : 0.0f;
        acc[d] = 0.0f;
    }
    float running_max = NEG_INF;
    float running_sum = 0.0f;

    for (int base = 0; base <= last_position; base += KEYS) {
        __syncthreads();  // the previous tile's keys have been used by every thread
        for (int e = threadIdx.x; e < KEYS * HEAD_DIM; e += THREADS) {
            const int j = e / HEAD_DIM;
            const int dim = e % HEAD_DIM;
            const int pos = base + j;
            float k = 0.0f;
            float v = 0.0f;
            if (pos < context) {
                const u64 slot = (u64)table[pos / block_size] * block_size + pos % block_size;
                const u64 at = slot * kv_width + kv_head * HEAD_DIM + dim;
                k = kv_load(key_cache[at]);
                v = kv_load(value_cache[at]);
            }
            keys[j][dim] = k;
            values[j][dim] = v;
        }
        __syncthreads();

        float scores[KEYS];
        float tile_max = NEG_INF;
#pragma unroll
        for (int j = 0; j < KEYS; ++j) {
            float dot = 0.0f;
#pragma unroll
            for (int d = 0; d < DIMS; ++d) dot += q[d] * keys[j][part + PARTS * d];
            // The PARTS threads of a query are adjacent lanes of one warp.
            dot += __shfl_xor_sync(0xffffffffu, dot, 1);
            dot += __shfl_xor_sync(0xffffffffu, dot, 2);
            scores[j] = base + j <= position ? dot : NEG_INF;
            tile_max = fmaxf(tile_max, scores[j]);
        }
        if (tile_max != NEG_INF) {
            const float new_max = fmaxf(running_max, tile_max);
            const float correction = expf(running_max - new_max);
            running_sum *= correction;
#pragma unroll
            for (int d = 0; d < DIMS; ++d) acc[d] *= correction;
#pragma unroll
            for (int j = 0; j < KEYS; ++j) {
                const float p = expf(scores[j] - new_max);
                running_sum += p;
#pragma unroll
                for (int d = 0; d < DIMS; ++d) acc[d] += p * values[j][part + PARTS * d];
            }
            running_max = new_max;
        }
    }

    if (active) {
        u16* o = out + (u64)token * num_heads * HEAD_DIM + head * HEAD_DIM;
#pragma unroll
        for (int d = 0; d < DIMS; ++d) {
            o[part + PARTS * d] = f32_to_bf16(running_sum > 0.0f ? acc[d] / running_sum : 0.0f);
        }
    }
}
