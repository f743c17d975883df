// RoPE fused with the paged-KV write: each token's query and key heads are rotated by its
// position (Hugging Face's layout: a head's first half pairs with its second half), in
// place in the fused QKV row, then its key and value heads are stored at its cache slot.
//
// Compiled with KV_DTYPE (see common.cuh).
// Grid: one block per token. Block: a multiple of 32 threads.

extern "C" __global__ void rope_and_cache_kv(
    float* __restrict__ qkv,             // [tokens, (heads + 2 * kv_heads) * head_dim]
    const float* __restrict__ inv_freq,  // [head_dim / 2]
    const u32* __restrict__ positions,   // [tokens]
    const u32* __restrict__ slots,       // [tokens] cache slot, or SKIP_SLOT
    kv_t* __restrict__ key_cache,        // [blocks * block_size, kv_heads * head_dim]
    kv_t* __restrict__ value_cache,
    int num_heads,
    int num_kv_heads,
    int head_dim) {
    const int half = head_dim / 2;
    const int kv_width = num_kv_heads * head_dim;
    float* row = qkv + (u64)blockIdx.x * (num_heads * head_dim + 2 * kv_width);
    const float position = (float)positions[blockIdx.x];
    const int pairs = (num_heads + num_kv_heads) * half;
    for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
        const int head = p / half;
        const int i = p % half;
        float s, c;
        // The angle in float32, as the CPU kernels compute it, so both rotate alike.
        sincosf(position * inv_freq[i], &s, &c);
        float* h = row + head * head_dim;
        const float x1 = h[i];
        const float x2 = h[i + half];
        h[i] = x1 * c - x2 * s;
        h[i + half] = x2 * c + x1 * s;
    }
    const u32 slot = slots[blockIdx.x];
    if (slot == SKIP_SLOT) return;
    // The rotated keys are read back by other threads of the block.
    __syncthreads();
    const float* key = row + num_heads * head_dim;
    const float* value = key + kv_width;
    kv_t* k = key_cache + (u64)slot * kv_width;
    kv_t* v = value_cache + (u64)slot * kv_width;
    for (int j = threadIdx.x; j < kv_width; j += blockDim.x) {
        k[j] = kv_store(key[j]);
        v[j] = kv_store(value[j]);
    }
}
