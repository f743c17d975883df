// Root-mean-square normalisation of each float32 row, scaled by the norm's gain, written
// as bfloat16: its one reader is a GEMM, which takes bf16 inputs.
//
//   out = x / sqrt(mean(x^2) + eps) * weight
//
// Grid: one block per row. Block: a multiple of 32 threads, at most 1024.

extern "C" __global__ void rms_norm(
    const float* __restrict__ x,       // [rows, width]
    const float* __restrict__ weight,  // [width]
    u16* __restrict__ out,             // [rows, width] bfloat16
    int width,
    float eps) {
    __shared__ float scratch[32];
    const float* row = x + (u64)blockIdx.x * width;
    u16* o = out + (u64)blockIdx.x * width;
    float sum_squares = 0.0f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        const float v = row[i];
        sum_squares += v * v;
    }
    sum_squares = block_sum(sum_squares, scratch);
    const float scale = 1.0f / sqrtf(sum_squares / (float)width + eps);
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        o[i] = f32_to_bf16(row[i] * scale * weight[i]);
    }
}
