// NoiseLevel's forward: each image's log pixel-noise sd from the absolute differences of pixels
// `lag` apart along each row, in one launch with one block per image:
//   pass 1: m = mean |d| over the image;  pass 2: mean of the |d| < clip * m (all of them are
//   dropped only when m = 0: then the mean is m);  out = log(max(mean / calibration, floor)).
// images (N, C*H rows, W), out (N). Sums in double with the fixed-order block sum.
#include "common.cuh"

template <typename T>
__global__ void noise_level(const T* images, int count, int rows, int width, T clip,
                            T calibration, T floor, int lag, T* out) {
    __shared__ mocha::acc_t mean_abs;
    const int image = blockIdx.x;
    if (image >= count) {
        return;
    }
    const T* x = images + (long long)image * rows * width;
    const long long span = width - lag, n = (long long)rows * span;

    mocha::acc_t sum = 0.0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        const long long r = i / span, c = i - r * span;
        const T d = x[r * width + c + lag] - x[r * width + c];
        sum += d < 0 ? -d : d;
    }
    sum = mocha::block_sum(sum);
    if (threadIdx.x == 0) {
        mean_abs = sum / (mocha::acc_t)n;
    }
    __syncthreads();
    const mocha::acc_t limit = (mocha::acc_t)clip * mean_abs;

    mocha::acc_t kept_sum = 0.0, kept_count = 0.0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        const long long r = i / span, c = i - r * span;
        const T d = x[r * width + c + lag] - x[r * width + c];
        const mocha::acc_t a = d < 0 ? -d : d;
        if (a < limit) {
            kept_sum += a;
            kept_count += 1.0;
        }
    }
    kept_sum = mocha::block_sum(kept_sum);
    kept_count = mocha::block_sum(kept_count);
    if (threadIdx.x == 0) {
        const mocha::acc_t kept = kept_count > 0 ? kept_sum / kept_count : mean_abs;
        const mocha::acc_t sd = kept / (mocha::acc_t)calibration;
        out[image] = (T)mocha::log_(sd > (mocha::acc_t)floor ? sd : (mocha::acc_t)floor);
    }
}
