// Power layer: y = (scale x + shift)^power; dx = power scale base^(power - 1) dy. The base is kept
// for the backward pass.
#include "common.cuh"

template <typename T>
__global__ void power_forward(const T* x, T scale, T shift, T power, T* base, T* y, long long n) {
    for (long long i = mocha::first_index(); i < n; i += mocha::grid_stride()) {
        const T b = x[i] * scale + shift;
        base[i] = b;
        y[i] = mocha::pow_(b, power);
    }
}

template <typename T>
__global__ void power_backward(const T* base, T scale, T power, const T* dy, T* dx, long long n) {
    for (long long i = mocha::first_index(); i < n; i += mocha::grid_stride()) {
        dx[i] = mocha::pow_(base[i], power - (T)1) * (power * scale) * dy[i];
    }
}
