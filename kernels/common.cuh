// Shared device helpers for every kernel file: the block size the reductions assume, float/double
// math overloads (NVRTC has no <cmath>), a deterministic block sum and the last-block handshake
// that lets one launch finish a reduction or advance a device counter without a second kernel.
#pragma once

namespace mocha {

// Every kernel that reduces is launched with exactly this many threads per block.
constexpr int kBlock = 256;

// Reductions accumulate in double: losses sum ~10^5 terms and must not depend on the order.
typedef double acc_t;

__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }
__device__ __forceinline__ float log_(float x) { return logf(x); }
__device__ __forceinline__ double log_(double x) { return log(x); }
__device__ __forceinline__ float sqrt_(float x) { return sqrtf(x); }
__device__ __forceinline__ double sqrt_(double x) { return sqrt(x); }
__device__ __forceinline__ float tanh_(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_(double x) { return tanh(x); }
__device__ __forceinline__ float pow_(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double pow_(double x, double y) { return pow(x, y); }

// Zero for magnitudes below the smallest normal number, as x86's flush-to-zero stores them: the
// solver update keeps no subnormal parameter or state, on every backend (the CPU's matrix products
// run a hundred times slower on subnormals; GPUs do not, but the backends' results agree).
__device__ __forceinline__ float flush_subnormal(float x) {
    return fabsf(x) < 1.17549435e-38f ? 0.0f : x;
}
__device__ __forceinline__ double flush_subnormal(double x) {
    return fabs(x) < 2.2250738585072014e-308 ? 0.0 : x;
}

// Grid-stride index range: every kernel works for any grid size the host picks.
__device__ __forceinline__ long long first_index() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long grid_stride() {
    return (long long)blockDim.x * gridDim.x;
}

// Sum of one value per thread over the block (blockDim.x == kBlock). The result is valid in thread
// 0. Warp shuffles in a fixed pattern, so the same inputs always give the same bits.
__device__ __forceinline__ acc_t block_sum(acc_t value) {
    __shared__ acc_t warp_sums[kBlock / 32];
    for (int offset = 16; offset > 0; offset >>= 1) {
        value += __shfl_down_sync(0xffffffffu, value, offset);
    }
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    __syncthreads();  // warp_sums may still be read by a previous call
    if (lane == 0) {
        warp_sums[warp] = value;
    }
    __syncthreads();
    value = threadIdx.x < kBlock / 32 ? warp_sums[threadIdx.x] : 0.0;
    if (warp == 0) {
        for (int offset = 16; offset > 0; offset >>= 1) {
            value += __shfl_down_sync(0xffffffffu, value, offset);
        }
    }
    return value;
}

// True in exactly one block: the last to get here. Each block must call it once, after its
// global writes. The winner resets the ticket so the next launch (or graph replay) starts at 0.
__device__ __forceinline__ bool is_last_block(unsigned long long* blocks_done) {
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned long long blocks = (unsigned long long)gridDim.x * gridDim.y * gridDim.z;
        last = atomicAdd(blocks_done, 1ull) == blocks - 1;
        if (last) {
            *blocks_done = 0;
        }
    }
    __syncthreads();
    return last;
}

// Two-pass deterministic reduction in one launch: each block stores its partial sum, the last
// block adds the partials in block order and writes scale * total to *out.
template <typename T>
__device__ __forceinline__ void reduce_to_scalar(acc_t thread_value, acc_t* partials,
                                                 unsigned long long* blocks_done, acc_t scale,
                                                 T* out) {
    const acc_t block_total = block_sum(thread_value);
    if (threadIdx.x == 0) {
        partials[blockIdx.x] = block_total;
    }
    if (is_last_block(blocks_done)) {
        const volatile acc_t* finished = partials;
        acc_t value = 0.0;
        for (unsigned int b = threadIdx.x; b < gridDim.x; b += blockDim.x) {
            value += finished[b];
        }
        const acc_t total = block_sum(value);
        if (threadIdx.x == 0) {
            *out = (T)(scale * total);
        }
    }
}

}  // namespace mocha
