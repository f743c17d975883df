// x += bias on every row of a float32 matrix (Qwen2's Q, K and V biases).
//
// Grid-stride over rows * width elements.

extern "C" __global__ void add_bias(
    float* __restrict__ x,           // [rows, width]
    const float* __restrict__ bias,  // [width]
    int rows,
    int width) {
    const u64 total = (u64)rows * width;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (u64)gridDim.x * blockDim.x) {
        x[i] += bias[i % width];
    }
}
