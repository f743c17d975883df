// Paged attention for decode: one query token per sequence, over the sequence's cached keys
// and values read through its block table (NHD blocks: [blocks, block_size, kv_heads,
// head_dim], the CPU cache's layout).
//
// A thread block takes one (sequence, KV head, context partition): the GQA group's GROUP
// query heads share every key and value load. Each of the block's warps walks every
// WARPS-th position of the partition with an online softmax; lane l holds dimensions l,
// l + 32, ... of every query (lanes past a small head hold zeros). The warps' states are
// then merged in shared memory.
//
// Long contexts at small batch are split into `partitions` (flash-decoding): each
// partition writes its unnormalised state and attention_decode_combine merges them. With one
// partition the block writes the output itself.
//
// Compiled with HEAD_DIM, GROUP (query heads per KV head) and KV_DTYPE.
// Grid: (items, kv_heads, partitions). Block: WARPS * 32 threads.

#define WARPS 4
#define DIMS ((HEAD_DIM + 31) / 32)

extern "C" __global__ void __launch_bounds__(WARPS * 32) attention_decode(
    const float* __restrict__ qkv,          // [tokens, (heads + 2 * kv_heads) * HEAD_DIM], after RoPE
    const kv_t* __restrict__ key_cache,     // [blocks * block_size, kv_heads * HEAD_DIM]
    const kv_t* __restrict__ value_cache,
    const u32* __restrict__ items,          // [items, 2]: token, sequence
    const u32* __restrict__ context_lens,   // [sequences]
    const u32* __restrict__ block_tables,   // [sequences, table_stride]
    int table_stride,
    int block_size,
    int num_heads,
    int num_kv_heads,
    float scale,
    u16* __restrict__ out,                  // [tokens, heads * HEAD_DIM] bfloat16
    float* __restrict__ partial_acc,        // [items, heads, partitions, HEAD_DIM]
    float* __restrict__ partial_max_sum,    // [items, heads, partitions, 2]
    int partitions) {
    const int item = blockIdx.x;
    const int kv_head = blockIdx.y;
    const int partition = blockIdx.z;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const u32 token = items[2 * item];
    const u32 seq = items[2 * item + 1];
    const int context = (int)context_lens[seq];
    const int chunk = (context + partitions - 1) / partitions;
    const int begin = partition * chunk;
    const int end = min(context, begin + chunk);
    const int kv_width = num_kv_heads * HEAD_DIM;
    const int qkv_width = num_heads * HEAD_DIM + 2 * kv_width;

    float q[GROUP][DIMS];
    float acc[GROUP][DIMS];
    float running_max[GROUP];
    float running_sum[GROUP];
    const float* q_row = qkv + (u64)token * qkv_width + kv_head * GROUP * HEAD_DIM;
#pragma unroll
    for (int g = 0; g < GROUP; ++g) {
#pragma unroll
        for (int d = 0; d < DIMS; ++d) {
            const int dim = lane + 32 * d;
            q[g][d] = dim < HEAD_DIM ? q_row[g * HEAD_DIM + dim] * scale : 0.0f;
            acc[g][d] = 0.0f;
        }
        running_max[g] = NEG_INF;
        running_sum[g] = 0.0f;
    }

    const u32* table = block_tables + (u64)seq * table_stride;
    for (int pos = begin + warp; pos < end; pos += WARPS) {
        const u64 slot = (u64)table[pos / block_size] * block_size + pos % block_size;
        const kv_t* k = key_cache + slot * kv_width + kv_head * HEAD_DIM;
        const kv_t* v = value_cache + slot * kv_width + kv_head * HEAD_DIM;
        float key[DIMS];
        float value[DIMS];
#pragma unroll
        for (int d = 0; d < DIMS; ++d) {
            const int dim = lane + 32 * d;
            key[d] = dim < HEAD_DIM ? kv_load(k[dim]) : 0.0f;
            value[d] = dim < HEAD_DIM ? kv_load(v[dim]) : 0.0f;
        }
#pragma unroll
        for (int g = 0; g < GROUP; ++g) {
            float score = 0.0f;
#pragma unroll
            for (int d = 0; d < DIMS; ++d) score += q[g][d] * key[d];
            score = warp_sum(score);
            const float new_max = fmaxf(running_max[g], score);
            const float correction = expf(running_max[g] - new_max);
            const float p = expf(score - new_max);
            running_sum[g] = running_sum[g] * correction + p;
#pragma unroll
            for (int d = 0; d < DIMS; ++d) acc[g][d] = acc[g][d] * correction + p * value[d];
            running_max[g] = new_max;
        }
    }

    __shared__ float shared_max_sum[WARPS][GROUP][2];
    __shared__ float shared_acc[WARPS][GROUP][HEAD_DIM];
#pragma unroll
    for (int g = 0; g < GROUP; ++g) {
        if (lane == 0) {
            shared_max_sum[warp][g][0] = running_max[g];
            shared_max_sum[warp][g][1] = running_sum[g];
        }
#pragma unroll
        for (int d = 0; d < DIMS; ++d) {
            if (lane + 32 * d < HEAD_DIM) shared_acc[warp][g][lane + 32 * d] = acc[g][d];
        }
    }
    __syncthreads();

    for (int e = threadIdx.x; e < GROUP * HEAD_DIM; e += WARPS * 32) {
        const int g = e / HEAD_DIM;
        const int dim = e % HEAD_DIM;
        float m = NEG_INF;
#pragma unroll
        for (int w = 0; w < WARPS; ++w) m = fmaxf(m, shared_max_sum[w][g][0]);
        float sum = 0.0f;
        float value = 0.0f;
        if (m != NEG_INF) {
#pragma unroll
            for (int w = 0; w < WARPS; ++w) {
                const float f = expf(shared_max_sum[w][g][0] - m);
                sum += shared_max_sum[w][g][1] * f;
                value += shared_acc[w][g][dim] * f;
            }
        }
        const int head = kv_head * GROUP + g;
        if (partitions == 1) {
            // A padded row (no context) attends to nothing: zeros.
            out[(u64)token * num_heads * HEAD_DIM + head * HEAD_DIM + dim] =
                f32_to_bf16(sum > 0.0f ? value / sum : 0.0f);
        } else {
            const u64 at = ((u64)item * num_heads + head) * partitions + partition;
            partial_acc[at * HEAD_DIM + dim] = value;
            if (dim == 0) {
                partial_max_sum[2 * at] = m;
                partial_max_sum[2 * at + 1] = sum;
            }
        }
    }
}

// Merges the partitions' states of one (item, query head) into its output.
// Grid: (items, heads). Block: any multiple of 32 threads.
extern "C" __global__ void attention_decode_combine(
    const float* __restrict__ partial_acc,
    const float* __restrict__ partial_max_sum,
    const u32* __restrict__ items,
    int num_heads,
    int partitions,
    u16* __restrict__ out) {
    const int item = blockIdx.x;
    const int head = blockIdx.y;
    const u32 token = items[2 * item];
    const u64 base = ((u64)item * num_heads + head) * partitions;
    float m = NEG_INF;
    for (int p = 0; p < partitions; ++p) m = fmaxf(m, partial_max_sum[2 * (base + p)]);
    for (int dim = threadIdx.x; dim < HEAD_DIM; dim += blockDim.x) {
        float sum = 0.0f;
        float value = 0.0f;
        if (m != NEG_INF) {
            for (int p = 0; p < partitions; ++p) {
                const float f = expf(partial_max_sum[2 * (base + p)] - m);
                sum += partial_max_sum[2 * (base + p) + 1] * f;
                value += partial_acc[(base + p) * HEAD_DIM + dim] * f;
            }
        }
        out[(u64)token * num_heads * HEAD_DIM + head * HEAD_DIM + dim] =
            f32_to_bf16(sum > 0.0f ? value / sum : 0.0f);
    }
}
