// Embedding lookup: row t of the output is row token_ids[t] of the bf16 table, widened to
// float32 (the residual stream's precision).
//
// Grid: one block per token. Block: any multiple of 32 threads.

extern "C" __global__ void embedding(
    const u16* __restrict__ table,      // [vocab, hidden] bfloat16
    const u32* __restrict__ token_ids,  // [tokens]
    float* __restrict__ out,            // [tokens, hidden]
    int hidden) {
    const u16* row = table + (u64)token_ids[blockIdx.x] * hidden;
    float* o = out + (u64)blockIdx.x * hidden;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        o[i] = bf16_to_f32(row[i]);
    }
}
