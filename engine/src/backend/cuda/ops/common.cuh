// What every kernel shares: fixed-width integer names, 16-bit float conversions, the cache
// element type and block-wide reductions. Written out rather than included so that NVRTC
// compiles the kernels with no include path: no CUDA headers are needed where they run.
//
// Prepended by the host to each kernel source, after the kernel's specialisation #defines.

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

// Negative infinity (math.h's INFINITY is not available without headers).
#define NEG_INF __int_as_float(0xff800000)

// A cache slot that a padded row of a recorded decode step writes to: none.
#define SKIP_SLOT 0xffffffffu

__device__ __forceinline__ float bf16_to_f32(u16 h) {
    return __uint_as_float(((u32)h) << 16);
}

// Round to nearest, ties to even (as the host's half::bf16::from_f32).
__device__ __forceinline__ u16 f32_to_bf16(float f) {
    u16 r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
}

__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 f32_to_f16(float f) {
    u16 r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(f));
    return r;
}

// The paged KV cache's element: KV_DTYPE 0 is float32, 1 float16, 2 bfloat16 (the host's
// KvCacheDtype). Kernels that touch the cache are compiled with it defined.
#ifdef KV_DTYPE
#if KV_DTYPE == 0
typedef float kv_t;
__device__ __forceinline__ float kv_load(kv_t v) { return v; }
__device__ __forceinline__ kv_t kv_store(float v) { return v; }
#elif KV_DTYPE == 1
typedef u16 kv_t;
__device__ __forceinline__ float kv_load(kv_t v) { return f16_to_f32(v); }
__device__ __forceinline__ kv_t kv_store(float v) { return f32_to_f16(v); }
#elif KV_DTYPE == 2
typedef u16 kv_t;
__device__ __forceinline__ float kv_load(kv_t v) { return bf16_to_f32(v); }
__device__ __forceinline__ kv_t kv_store(float v) { return f32_to_bf16(v); }
#else
#error "KV_DTYPE must be 0 (float32), 1 (float16) or 2 (bfloat16)"
#endif
#endif

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    }
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    }
    return v;
}

// The sum of `v` over the whole block, returned to every thread. `scratch` holds 32 floats;
// blockDim.x is a multiple of 32. Every thread of the block must call it.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : NEG_INF;
    return warp_max(v);
}
