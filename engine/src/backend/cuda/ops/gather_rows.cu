// Row gather: out[i] = x[rows[i]], for the rows whose logits a step returns. Rows are moved
// as 32-bit words, so one kernel serves float32 rows and (an even number of) bf16 values.
//
// Grid: one block per output row. Block: any multiple of 32 threads.

extern "C" __global__ void gather_rows(
    const u32* __restrict__ x,     // [source rows, words]
    const u32* __restrict__ rows,  // [out rows] source row of each
    u32* __restrict__ out,         // [out rows, words]
    int words) {
    const u32* source = x + (u64)rows[blockIdx.x] * words;
    u32* o = out + (u64)blockIdx.x * words;
    for (int i = threadIdx.x; i < words; i += blockDim.x) {
        o[i] = source[i];
    }
}
