// NoiseLevel's forward: each image's log pixel-noise sd from the absolute differences of
// horizontally adjacent pixels, in one launch with one block per image:
//   pass 1: m = mean |d| over the image;  pass 2: mean of the |d| < clip * m (all of them are
//   dropped only when m = 0: then the mean is m);  out = log(max(mean / calibration, floor)).
// images (N, C*H rows, W), out (N). Sums in double with the fixed-order block sum.
#include "common.cuh"

template <typename T>
__global__ void noise_level(const T* images, int count, int rows, int width, T clip,
                            T calibration, T floor, T* out) {
    __shared__ mocha::acc_t mean_abs;
    const int image = blockIdx.x;
    if (image >= count) {
        return;
    }
    const T* x = images + (long long)image * rows * width;
    const long long n = (long long)rows * (width - 1);

    mocha::acc_t sum = 0.0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) {
        const long long r = i / (width - 1), c = i - r * (width - 1);
        const T d = x[r * width + c + 1] - x[r * width + c];
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
        const long long r = i / (width - 1), c = i - r * (width - 1);
        const T d = x[r * width + c + 1] - x[r * width + c];
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
