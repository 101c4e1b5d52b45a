// InnerProduct's elementwise work around its GEMMs.
//   bias_neuron_forward:        pre += bias (row broadcast); y = f(pre).
//   neuron_backward_column_sum: dpre = f'(pre) dy and the bias gradient sum_rows(dpre), in one
//                               pass.
#include "neuron_math.cuh"

template <typename T>
__global__ void bias_neuron_forward(int code, T parameter, T offset, T* pre, const T* bias, T* y,
                                    int rows, int cols) {
    const long long n = (long long)rows * cols;
    for (long long i = mocha::first_index(); i < n; i += mocha::grid_stride()) {
        const T value = pre[i] + bias[i % cols];
        pre[i] = value;
        y[i] = mocha::neuron_value(code, parameter, offset, value);
    }
}

// Block (32, 8): 32 adjacent columns (coalesced), 8 row slices; slices are summed in a fixed order.
constexpr int kColumnTile = 32;
constexpr int kRowSlices = 8;

template <typename T>
__global__ void neuron_backward_column_sum(int code, T parameter, const T* x, const T* y,
                                           const T* dy, T* dx, T* column_sum, int rows, int cols) {
    __shared__ mocha::acc_t slice_sums[kRowSlices][kColumnTile + 1];
    const int col = blockIdx.x * kColumnTile + threadIdx.x;
    mocha::acc_t sum = 0.0;
    if (col < cols) {
        for (int row = threadIdx.y; row < rows; row += kRowSlices) {
            const long long i = (long long)row * cols + col;
            const T d = dy[i] * mocha::neuron_slope(code, parameter, x[i], y[i]);
            dx[i] = d;
            sum += d;
        }
    }
    slice_sums[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && col < cols) {
        mocha::acc_t total = 0.0;
        for (int s = 0; s < kRowSlices; ++s) {
            total += slice_sums[s][threadIdx.x];
        }
        column_sum[col] = (T)total;
    }
}
