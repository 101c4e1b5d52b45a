// RandomNormal: N(0, 1) draws from the counter-based Philox4x32-10 generator (Salmon et al., SC'11)
// through Box-Muller. The generator state lives on the device, state = {seed, draw counter,
// blocks_done}: element group g of draw c uses Philox counter (g, c) under key seed, and the last
// block increments c. A replayed CUDA graph therefore draws fresh numbers on every replay.
#include "common.cuh"

namespace {

constexpr unsigned int kPhiloxM0 = 0xD2511F53u;
constexpr unsigned int kPhiloxM1 = 0xCD9E8D57u;
constexpr unsigned int kPhiloxW0 = 0x9E3779B9u;
constexpr unsigned int kPhiloxW1 = 0xBB67AE85u;

struct Words {
    unsigned int x, y, z, w;
};

__device__ __forceinline__ Words philox_round(Words c, unsigned int k0, unsigned int k1) {
    const unsigned int hi0 = __umulhi(kPhiloxM0, c.x);
    const unsigned int lo0 = kPhiloxM0 * c.x;
    const unsigned int hi1 = __umulhi(kPhiloxM1, c.z);
    const unsigned int lo1 = kPhiloxM1 * c.z;
    return Words{hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0};
}

__device__ __forceinline__ Words philox4x32_10(Words counter, unsigned int k0, unsigned int k1) {
    counter = philox_round(counter, k0, k1);
    for (int round = 1; round < 10; ++round) {
        k0 += kPhiloxW0;
        k1 += kPhiloxW1;
        counter = philox_round(counter, k0, k1);
    }
    return counter;
}

// A uniform in (0, 1): never 0, so the logarithm below is finite.
template <typename T>
__device__ __forceinline__ T open_uniform(unsigned int bits) {
    return (T)bits * (T)2.3283064365386963e-10 + (T)1.1641532182693481e-10;
}

__device__ __forceinline__ void sin_cos_pi(float x, float* s, float* c) { sincospif(x, s, c); }
__device__ __forceinline__ void sin_cos_pi(double x, double* s, double* c) { sincospi(x, s, c); }

}  // namespace

template <typename T>
__global__ void philox_normal(T* out, long long n, unsigned long long* state) {
    const unsigned long long seed = state[0];
    const unsigned long long draw = state[1];
    const long long groups = (n + 3) / 4;
    for (long long g = mocha::first_index(); g < groups; g += mocha::grid_stride()) {
        const Words bits = philox4x32_10(
            Words{(unsigned int)g, (unsigned int)((unsigned long long)g >> 32), (unsigned int)draw,
                  (unsigned int)(draw >> 32)},
            (unsigned int)seed, (unsigned int)(seed >> 32));
        T values[4];
        const unsigned int words[4] = {bits.x, bits.y, bits.z, bits.w};
        for (int pair = 0; pair < 2; ++pair) {
            const T radius = mocha::sqrt_((T)-2 * mocha::log_(open_uniform<T>(words[2 * pair])));
            T s, c;
            sin_cos_pi((T)2 * open_uniform<T>(words[2 * pair + 1]), &s, &c);
            values[2 * pair] = radius * c;
            values[2 * pair + 1] = radius * s;
        }
        for (int k = 0; k < 4 && 4 * g + k < n; ++k) {
            out[4 * g + k] = values[k];
        }
    }
    if (mocha::is_last_block(&state[2]) && threadIdx.x == 0) {
        state[1] = draw + 1;
    }
}
