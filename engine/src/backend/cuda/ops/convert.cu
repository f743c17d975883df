// Narrowing float32 activations to bfloat16, for a GEMM whose input was produced in float32
// (the kernels feeding the model's GEMMs write bf16 themselves; this covers the rest).
//
// Grid-stride over n elements.

extern "C" __global__ void f32_to_bf16_rows(
    const float* __restrict__ x,
    u16* __restrict__ out,
    u64 n) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (u64)gridDim.x * blockDim.x) {
        out[i] = f32_to_bf16(x[i]);
    }
}
