// InnerProduct's elementwise work on the CPU, fused so each pass over an (N, out) matrix is one:
//   bias_neuron_forward:          pre += bias (per column); y = neuron(pre)      (rows [start, stop))
//   neuron_backward_column_sum:   dpre = neuron'(pre) dy; bias_grad = column sums of dpre
//                                 (columns [start, stop), so each thread owns its bias entries)
// Exponential's parameter is its input cap, and its offset a shift added to the output (an sd
// floor: y = exp(min(pre, cap)) + offset); its slope is exp(pre) recomputed from pre (y - offset
// would lose the digits of a small exp), so its backward does not read y.
// kernels/bias.cu's arithmetic, with NumPy's order of operations so the two paths agree to
// float32 rounding. Codes match mochapy.neurons (and kernels/neuron_math.cuh): 0 Identity,
// 1 ReLU(epsilon), 2 Exponential(cap), 3 Sigmoid, 4 Tanh. NaN inputs stay NaN. One loop per
// neuron, so the common ones vectorise; float Exponential uses exp_float below, since libm's
// scalar expf would cost more than the matrix product before it.
#include <math.h>
#include <stdint.h>

enum NeuronCode { kIdentity = 0, kReLU = 1, kExponential = 2, kSigmoid = 3, kTanh = 4 };

// exp(x) = 2^n e^r with n = round(x / ln 2), |r| <= ln 2 / 2: Cephes's polynomial for e^r (within
// 2 ulp of the exact value), 2^n applied as two factors so results near overflow and in the
// subnormal range come out as the true exp's. Written without calls so loops over it vectorise.
static inline float exp_float(float x) {
    const float high = 88.72283935546875f;  // largest x with a finite exp in float
    const float low = -103.972084045410f;   // exp below this rounds to 0
    float c = x > low ? x : low;  // NaN becomes low here and is restored at the end
    c = c < high ? c : high;
    const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
    const float n = (c * 1.44269504088896341f + shifter) - shifter;
    const float r = (c - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const int32_t whole = (int32_t)n;
    const int32_t half = whole >> 1;
    const union { int32_t bits; float value; } scale_a = {(half + 127) << 23},
                                                 scale_b = {(whole - half + 127) << 23};
    float result = (p * scale_a.value) * scale_b.value;
    result = x < low ? 0.0f : result;
    result = x > high ? INFINITY : result;
    return x != x ? x : result;
}

static inline double exp_double(double x) { return exp(x); }

// One elementwise loop per neuron over i in [first, last): VALUE is written with v (pre + bias).
#define FORWARD_LOOP(T, VALUE)                                        \
    _Pragma("omp simd")                                               \
    for (int64_t i = first; i < last; ++i) {                          \
        const T v = pre[i] + bias[i - row_first];                     \
        pre[i] = v;                                                   \
        y[i] = (VALUE);                                               \
    }

#define DEFINE_BIAS_NEURON_FORWARD(T, SUFFIX, EXP, TANH)                                        \
    void bias_neuron_forward_##SUFFIX(int code, double parameter, double offset, T* pre,         \
                                      const T* restrict bias, T* y, int64_t start, int64_t stop, \
                                      int64_t cols) {                                           \
        const T p = (T)parameter, o = (T)offset;                                                \
        for (int64_t row = start; row < stop; ++row) {                                          \
            const int64_t row_first = row * cols, first = row_first, last = row_first + cols;   \
            switch (code) {                                                                     \
                case kReLU:                                                                     \
                    FORWARD_LOOP(T, v < p ? p : v)                                              \
                    break;                                                                      \
                case kExponential:                                                              \
                    FORWARD_LOOP(T, EXP(v > p ? p : v) + o)                                     \
                    break;                                                                      \
                case kSigmoid:                                                                  \
                    FORWARD_LOOP(T, (TANH(v * (T)0.5) + (T)1) * (T)0.5)                         \
                    break;                                                                      \
                case kTanh:                                                                     \
                    FORWARD_LOOP(T, TANH(v))                                                    \
                    break;                                                                      \
                default:                                                                        \
                    FORWARD_LOOP(T, v)                                                          \
            }                                                                                   \
        }                                                                                       \
    }

// One row's loop over the columns [start, stop): SLOPE_TIMES_DY is written with x, out, d.
// dpre == dy (an Identity neuron in place) skips the store.
#define BACKWARD_LOOP(T, SLOPE_TIMES_DY)                                            \
    if (dpre == dy) {                                                              \
        _Pragma("omp simd")                                                        \
        for (int64_t c = start; c < stop; ++c) {                                   \
            const T x = pre[offset + c], out = y[offset + c], d = dy[offset + c];  \
            (void)x;                                                               \
            (void)out;                                                             \
            bias_grad[c] += (SLOPE_TIMES_DY);                                      \
        }                                                                          \
    } else {                                                                       \
        _Pragma("omp simd")                                                        \
        for (int64_t c = start; c < stop; ++c) {                                   \
            const T x = pre[offset + c], out = y[offset + c], d = dy[offset + c];  \
            (void)x;                                                               \
            (void)out;                                                             \
            const T g = (SLOPE_TIMES_DY);                                          \
            dpre[offset + c] = g;                                                  \
            bias_grad[c] += g;                                                     \
        }                                                                          \
    }

#define DEFINE_NEURON_BACKWARD_COLUMN_SUM(T, SUFFIX, EXP)                                        \
    void neuron_backward_column_sum_##SUFFIX(int code, double parameter, const T* pre,           \
                                             const T* y, const T* dy, T* dpre,                   \
                                             T* restrict bias_grad, int64_t rows, int64_t cols,  \
                                             int64_t start, int64_t stop) {                      \
        const T p = (T)parameter;                                                                \
        for (int64_t c = start; c < stop; ++c) bias_grad[c] = (T)0;                              \
        for (int64_t row = 0; row < rows; ++row) {                                               \
            const int64_t offset = row * cols;                                                   \
            switch (code) {                                                                      \
                case kReLU:                                                                      \
                    BACKWARD_LOOP(T, d * (T)(x > p))                                             \
                    break;                                                                       \
                case kExponential:                                                               \
                    BACKWARD_LOOP(T, x > p ? (T)0 : d * EXP(x))                                  \
                    break;                                                                       \
                case kSigmoid:                                                                   \
                    BACKWARD_LOOP(T, d * (out * ((T)1 - out)))                                   \
                    break;                                                                       \
                case kTanh:                                                                      \
                    BACKWARD_LOOP(T, d * ((T)1 - out * out))                                     \
                    break;                                                                       \
                default:                                                                         \
                    BACKWARD_LOOP(T, d)                                                          \
            }                                                                                    \
        }                                                                                        \
    }

DEFINE_BIAS_NEURON_FORWARD(float, float, exp_float, tanhf)
DEFINE_BIAS_NEURON_FORWARD(double, double, exp_double, tanh)
DEFINE_NEURON_BACKWARD_COLUMN_SUM(float, float, exp_float)
DEFINE_NEURON_BACKWARD_COLUMN_SUM(double, double, exp_double)
