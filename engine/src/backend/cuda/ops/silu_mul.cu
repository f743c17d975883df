// SwiGLU: out = silu(gate) * up over rows of [gate | up] (float32, a GEMM's output),
// written as bfloat16 for the down projection's GEMM.
//
// Grid-stride over rows * width elements; any launch shape covers it.

extern "C" __global__ void silu_mul(
    const float* __restrict__ gate_up,  // [rows, 2 * width]
    u16* __restrict__ out,              // [rows, width] bfloat16
    int rows,
    int width) {
    const u64 total = (u64)rows * width;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (u64)gridDim.x * blockDim.x) {
        const u64 row = i / width;
        const u64 col = i % width;
        const float g = gate_up[row * 2 * width + col];
        const float u = gate_up[row * 2 * width + width + col];
        out[i] = f32_to_bf16(g / (1.0f + expf(-g)) * u);
    }
}
