// Tiled GEMM for when cuBLAS cannot be captured into a CUDA graph: out (m x n) = op(a) op(b),
// row-major. a is (m x k), or stored (k x m) when kTransA; b is (k x n), or stored (n x k) when
// kTransB. Block tiles of 64 x 64 with a k-step of 16 in shared memory, 256 threads each computing
// 4 x 4 outputs. blockIdx.z selects a slice of k of length k_chunk (split-K, for the net's
// (100 x 4761) x (4761 x 128) products, whose output alone fills only a few blocks): with several
// slices each writes its partial product to out + z m n and gemm_sum_splits adds them in slice
// order (deterministic, no atomics).
#include "common.cuh"

constexpr int kTileM = 64;
constexpr int kTileN = 64;
constexpr int kTileK = 16;
constexpr int kGemmThreads = 256;
constexpr int kThreadsPerRow = 16;  // 16 x 16 threads, each owning a 4 x 4 strided micro-tile

template <typename T, bool kTransA, bool kTransB>
__global__ void __launch_bounds__(kGemmThreads)
    gemm_tiled(const T* a, const T* b, T* out, int m, int n, int k, int k_chunk) {
    __shared__ T a_tile[kTileK][kTileM + 1];
    __shared__ T b_tile[kTileK][kTileN + 1];
    const int tid = threadIdx.x;
    const int ty = tid / kThreadsPerRow;
    const int tx = tid % kThreadsPerRow;
    const int row0 = blockIdx.y * kTileM;
    const int col0 = blockIdx.x * kTileN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = min(k, k_begin + k_chunk);
    T acc[4][4];
    for (int i = 0; i < 4; ++i) {
        for (int j = 0; j < 4; ++j) {
            acc[i][j] = (T)0;
        }
    }
    for (int k0 = k_begin; k0 < k_end; k0 += kTileK) {
        // Consecutive threads read consecutive addresses of whichever layout a and b have.
        for (int e = tid; e < kTileM * kTileK; e += kGemmThreads) {
            const int mm = kTransA ? e % kTileM : e / kTileK;
            const int kk = kTransA ? e / kTileM : e % kTileK;
            const int gm = row0 + mm;
            const int gk = k0 + kk;
            T value = (T)0;
            if (gm < m && gk < k_end) {
                value = kTransA ? a[(long long)gk * m + gm] : a[(long long)gm * k + gk];
            }
            a_tile[kk][mm] = value;
        }
        for (int e = tid; e < kTileN * kTileK; e += kGemmThreads) {
            const int nn = kTransB ? e / kTileK : e % kTileN;
            const int kk = kTransB ? e % kTileK : e / kTileN;
            const int gn = col0 + nn;
            const int gk = k0 + kk;
            T value = (T)0;
            if (gn < n && gk < k_end) {
                value = kTransB ? b[(long long)gn * k + gk] : b[(long long)gk * n + gn];
            }
            b_tile[kk][nn] = value;
        }
        __syncthreads();
        for (int kk = 0; kk < kTileK; ++kk) {
            T a_frag[4];
            T b_frag[4];
            for (int i = 0; i < 4; ++i) {
                a_frag[i] = a_tile[kk][ty + kThreadsPerRow * i];
                b_frag[i] = b_tile[kk][tx + kThreadsPerRow * i];
            }
            for (int i = 0; i < 4; ++i) {
                for (int j = 0; j < 4; ++j) {
                    acc[i][j] += a_frag[i] * b_frag[j];
                }
            }
        }
        __syncthreads();
    }
    T* c = out + (long long)blockIdx.z * m * n;
    for (int i = 0; i < 4; ++i) {
        const int row = row0 + ty + kThreadsPerRow * i;
        for (int j = 0; j < 4; ++j) {
            const int col = col0 + tx + kThreadsPerRow * j;
            if (row < m && col < n) {
                c[(long long)row * n + col] = acc[i][j];
            }
        }
    }
}

template <typename T>
__global__ void gemm_sum_splits(const T* partials, int splits, long long size, T* out) {
    for (long long i = mocha::first_index(); i < size; i += mocha::grid_stride()) {
        mocha::acc_t total = 0.0;
        for (int z = 0; z < splits; ++z) {
            total += partials[(long long)z * size + i];
        }
        out[i] = (T)total;
    }
}
