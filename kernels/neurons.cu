// Standalone neurons: y = f(x) and dx = f'(x) dy elementwise (x, y and dx may alias).
#include "neuron_math.cuh"

template <typename T>
__global__ void neuron_forward(int code, T parameter, T offset, const T* x, T* y, long long n) {
    for (long long i = mocha::first_index(); i < n; i += mocha::grid_stride()) {
        y[i] = mocha::neuron_value(code, parameter, offset, x[i]);
    }
}

template <typename T>
__global__ void neuron_backward(int code, T parameter, const T* x, const T* y, const T* dy, T* dx,
                                long long n) {
    for (long long i = mocha::first_index(); i < n; i += mocha::grid_stride()) {
        dx[i] = dy[i] * mocha::neuron_slope(code, parameter, x[i], y[i]);
    }
}
