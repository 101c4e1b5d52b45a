// ElementWise layer: y = a (op) b and its gradients, op codes 0 Add, 1 Subtract, 2 Multiply,
// 3 Divide (the order of ElementWiseConfig.operation). A null gradient pointer is skipped.
#include "common.cuh"

enum ElementWiseOp { kAdd = 0, kSubtract = 1, kMultiply = 2, kDivide = 3 };

template <typename T>
__global__ void elementwise_forward(int op, const T* a, const T* b, T* y, long long n) {
    for (long long i = mocha::first_index(); i < n; i += mocha::grid_stride()) {
        const T u = a[i];
        const T v = b[i];
        y[i] = op == kAdd ? u + v : op == kSubtract ? u - v : op == kMultiply ? u * v : u / v;
    }
}

template <typename T>
__global__ void elementwise_backward(int op, const T* a, const T* b, const T* y, const T* dy,
                                     T* da, T* db, long long n) {
    for (long long i = mocha::first_index(); i < n; i += mocha::grid_stride()) {
        const T g = dy[i];
        if (da != nullptr) {
            da[i] = op == kMultiply ? g * b[i] : op == kDivide ? g / b[i] : g;
        }
        if (db != nullptr) {
            // d(a / b) / db = -a / b^2 = -y / b
            db[i] = op == kAdd        ? g
                    : op == kSubtract ? -g
                    : op == kMultiply ? g * a[i]
                                      : -(g * y[i] / b[i]);
        }
    }
}
