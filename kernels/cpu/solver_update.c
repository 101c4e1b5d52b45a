// One solver step over the elements [start, stop) of a net's flat parameter buffer on the CPU:
// kernels/solver_update.cu's arithmetic (regularization, then SGD / Nesterov / Adam), one pass
// over memory instead of NumPy's dozen, so threads can each take a part of the buffer.
//
// Segment s is bounds[s] <= i < bounds[s + 1], with coefficients {lr_mult, l2, l1} (l2 and l1
// include the solver's regu_coef); a segment with lr_mult 0 is frozen and left as it is, bit
// for bit (flushing would zero a frozen layer's subnormal weights). hyper = {momentum, beta1, beta2, epsilon}; step_lr is the
// learning rate, for Adam already bias-corrected: lr sqrt(1 - beta2^t) / (1 - beta1^t).
//
// Subnormal numbers are flushed to zero inside the update (x86: MXCSR's FTZ and DAZ bits, set for
// the call and restored after it). Weights that get no data gradient decay geometrically under
// L2 and Adam until they and Adam's moments are subnormal; x86 multiplies those a hundred times
// slower, so a long run's GEMMs slowed from 54 to 2.4 iterations/s. Flushed, they stay zero: the
// values differ from IEEE results only below 1.2e-38 (float) / 2.2e-308 (double).
#include <math.h>
#include <stdint.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#define FLUSH_SUBNORMALS_BEGIN                          \
    const unsigned int saved_csr = _mm_getcsr();        \
    _mm_setcsr(saved_csr | 0x8040u); /* FTZ | DAZ */
#define FLUSH_SUBNORMALS_END _mm_setcsr(saved_csr);
#else
#define FLUSH_SUBNORMALS_BEGIN
#define FLUSH_SUBNORMALS_END
#endif

enum SolverMethod { kSGD = 0, kNesterov = 1, kAdam = 2 };

#define DEFINE_SOLVER_UPDATE(NAME, T, SQRT)                                                     \
    void NAME(int method, T* restrict w, const T* restrict g, T* restrict state1,              \
              T* restrict state2, int64_t start, int64_t stop, const int64_t* bounds,           \
              const double* coefficients, int n_segments, const double* hyper,                  \
              double step_lr) {                                                                 \
        const T momentum = (T)hyper[0];                                                         \
        const T beta1 = (T)hyper[1];                                                            \
        const T beta2 = (T)hyper[2];                                                            \
        const T one_minus_beta1 = (T)(1.0 - hyper[1]);                                          \
        const T one_minus_beta2 = (T)(1.0 - hyper[2]);                                          \
        const T epsilon = (T)hyper[3];                                                          \
        FLUSH_SUBNORMALS_BEGIN                                                                  \
        for (int s = 0; s < n_segments; ++s) {                                                  \
            const int64_t first = bounds[s] > start ? bounds[s] : start;                        \
            const int64_t last = bounds[s + 1] < stop ? bounds[s + 1] : stop;                   \
            if (coefficients[3 * s] == 0.0) continue; /* frozen: weights and states kept */    \
            const T lr = (T)(step_lr * coefficients[3 * s]);                                    \
            const T l2 = (T)coefficients[3 * s + 1];                                            \
            const T l1 = (T)coefficients[3 * s + 2];                                            \
            if (method == kAdam) {                                                              \
                for (int64_t i = first; i < last; ++i) {                                        \
                    const T weight = w[i];                                                      \
                    const T sign = (T)((weight > (T)0) - (weight < (T)0));                      \
                    const T grad = g[i] + l2 * weight + l1 * sign;                              \
                    const T m = beta1 * state1[i] + one_minus_beta1 * grad;                     \
                    const T v = beta2 * state2[i] + one_minus_beta2 * (grad * grad);            \
                    state1[i] = m;                                                              \
                    state2[i] = v;                                                              \
                    w[i] = weight - lr * (m / (SQRT(v) + epsilon));                             \
                }                                                                               \
            } else {                                                                            \
                for (int64_t i = first; i < last; ++i) {                                        \
                    const T weight = w[i];                                                      \
                    const T sign = (T)((weight > (T)0) - (weight < (T)0));                      \
                    const T grad = g[i] + l2 * weight + l1 * sign;                              \
                    const T previous = state1[i];                                               \
                    const T velocity = momentum * previous - lr * grad;                         \
                    state1[i] = velocity;                                                       \
                    w[i] = method == kSGD                                                       \
                               ? weight + velocity                                              \
                               : (weight - momentum * previous) + ((T)1 + momentum) * velocity; \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        FLUSH_SUBNORMALS_END                                                                    \
    }

DEFINE_SOLVER_UPDATE(solver_update_float, float, sqrtf)
DEFINE_SOLVER_UPDATE(solver_update_double, double, sqrt)
