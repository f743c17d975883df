// Copy-on-write of shared KV blocks: for every (source, destination) pair, the whole block
// is copied in every layer's key and value planes.
//
// Grid: (pairs, 2 * layers). Block: any number of threads. A block is moved as 16-byte
// words; the host checks that a block is a whole number of them.

extern "C" __global__ void copy_blocks(
    const u64* __restrict__ planes,  // [2 * layers] base address of each key / value plane
    const u32* __restrict__ pairs,   // [pairs, 2] source and destination block ids
    u64 block_words) {               // 16-byte words per block in one plane
    const uint4* plane = (const uint4*)planes[blockIdx.y];
    uint4* dst_plane = (uint4*)planes[blockIdx.y];
    const u64 source = (u64)pairs[2 * blockIdx.x] * block_words;
    const u64 destination = (u64)pairs[2 * blockIdx.x + 1] * block_words;
    for (u64 i = threadIdx.x; i < block_words; i += blockDim.x) {
        dst_plane[destination + i] = plane[source + i];
    }
}
