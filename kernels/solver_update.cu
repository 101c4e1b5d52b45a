// One solver step over every parameter of a net in its flat buffer, in one launch.
//
// Parameters are cut into segments (bounds[s] <= i < bounds[s + 1]) with per-segment
// coefficients {lr_mult, l2, l1}, where l2 / l1 already include the solver's regu_coef:
//   grad = g + l2 w + l1 sign(w)                                        (regularization)
//   method 0, SGD:      v = mom v - lr lr_mult grad;  w += v
//   method 1, Nesterov: w -= mom v;  v = mom v - lr lr_mult grad;  w += (1 + mom) v
//   method 2, Adam:     m = b1 m + (1-b1) grad;  v = b2 v + (1-b2) grad^2;
//                       w -= lr_t lr_mult m / (sqrt(v) + eps),  lr_t = lr sqrt(1-b2^t) / (1-b1^t)
// Parameters and states below the smallest normal number are stored as zero, as the CPU backends
// store them (mocha::flush_subnormal). Hyperparameters come from a device buffer,
// hyper = {lr, momentum, beta1, beta2, epsilon}, and
// the step count from step_state = {t, blocks_done}: t counts finished updates and the last block
// increments it, so a replayed CUDA graph uses the right bias correction on every replay.
#include "common.cuh"

enum SolverMethod { kSGD = 0, kNesterov = 1, kAdam = 2 };

__device__ __forceinline__ int find_segment(const long long* bounds, int n_segments, long long i) {
    int low = 0;
    int high = n_segments - 1;
    while (low < high) {
        const int mid = (low + high + 1) / 2;
        if (bounds[mid] <= i) {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    return low;
}

template <typename T>
__global__ void solver_update(int method, T* w, const T* g, T* state1, T* state2, long long n,
                              const long long* bounds, const double* coefficients, int n_segments,
                              const double* hyper, unsigned long long* step_state) {
    __shared__ double step_lr;
    const unsigned long long t = step_state[0] + 1;
    if (threadIdx.x == 0) {
        step_lr = hyper[0];
        if (method == kAdam) {
            step_lr *= sqrt(1.0 - pow(hyper[3], (double)t)) / (1.0 - pow(hyper[2], (double)t));
        }
    }
    __syncthreads();
    const T momentum = (T)hyper[1];
    const T beta1 = (T)hyper[2];
    const T beta2 = (T)hyper[3];
    const T one_minus_beta1 = (T)(1.0 - hyper[2]);
    const T one_minus_beta2 = (T)(1.0 - hyper[3]);
    const T epsilon = (T)hyper[4];
    for (long long i = mocha::first_index(); i < n; i += mocha::grid_stride()) {
        const int s = find_segment(bounds, n_segments, i);
        if (coefficients[3 * s] == 0.0) continue;  // frozen (lr_mult 0): left bit for bit
        const T lr = (T)(step_lr * coefficients[3 * s]);
        const T l2 = (T)coefficients[3 * s + 1];
        const T l1 = (T)coefficients[3 * s + 2];
        const T weight = w[i];
        const T sign = (T)((weight > (T)0) - (weight < (T)0));
        const T grad = g[i] + l2 * weight + l1 * sign;
        if (method == kAdam) {
            const T m = beta1 * state1[i] + one_minus_beta1 * grad;
            const T v = beta2 * state2[i] + one_minus_beta2 * (grad * grad);
            state1[i] = mocha::flush_subnormal(m);
            state2[i] = mocha::flush_subnormal(v);
            w[i] = mocha::flush_subnormal(weight - lr * (m / (mocha::sqrt_(v) + epsilon)));
        } else {
            const T previous = state1[i];
            const T velocity = momentum * previous - lr * grad;
            state1[i] = mocha::flush_subnormal(velocity);
            w[i] = mocha::flush_subnormal(
                method == kSGD ? weight + velocity
                               : (weight - momentum * previous) + ((T)1 + momentum) * velocity);
        }
    }
    if (mocha::is_last_block(&step_state[1]) && threadIdx.x == 0) {
        step_state[0] = t;
    }
}
