// GaussianReconLoss on the CPU, forward and both gradients in one pass over the elements
// [start, stop) (kernels/gaussian_recon_loss.cu's arithmetic; s is weight / batch size):
//   block_sums[b] = sum over block b of (x - mu)^2 / sigma^2      (blocks of `block` elements)
//   dmu = s (mu - x) / sigma^2,   dsigma = s (1 / sigma - (x - mu)^2 / sigma^3)
// each gradient times sigma^(2 beta) for beta-NLL (beta > 0); with mean_inv_var > 0 instead
// dmu = s (mu - x) mean_inv_var (the mean's gradient at a fixed sd). dmu and dsigma are both given
// or both NULL (the loss only). Each case has its own loop, so the common ones vectorise.
// Sums go per fixed block, so the loss does not depend on how threads split the elements.
// The sum of log sigma stays in NumPy, whose vectorised log is faster than libm's.
#include <math.h>
#include <stddef.h>
#include <stdint.h>

// One block's loop: GRADIENTS is a statement run with z and inv_sd in scope.
#define RECON_BLOCK(T, GRADIENTS)                                  \
    _Pragma("omp simd reduction(+ : total)")                       \
    for (int64_t i = first; i < last; ++i) {                       \
        const T inv_sd = (T)1 / sigma[i];                          \
        const T z = (x[i] - mu[i]) * inv_sd;                       \
        total += (double)(z * z);                                  \
        GRADIENTS;                                                 \
    }

#define DEFINE_GAUSSIAN_RECON_LOSS(NAME, T, POW)                                                 \
    void NAME(const T* restrict mu, const T* restrict sigma, const T* restrict x, int64_t start, \
              int64_t stop, int64_t block, double scale, double beta, double mean_inv_var,       \
              T* restrict dmu, T* restrict dsigma, double* restrict block_sums) {                \
        const T s = (T)scale;                                                                    \
        const T s_mean = (T)(scale * mean_inv_var);                                              \
        const T two_beta = (T)(2.0 * beta);                                                      \
        for (int64_t first = start; first < stop; first += block) {                              \
            const int64_t last = first + block < stop ? first + block : stop;                    \
            double total = 0.0;                                                                  \
            if (dmu == NULL) {                                                                   \
                RECON_BLOCK(T, (void)0)                                                          \
            } else if (mean_inv_var > 0.0) {                                                     \
                RECON_BLOCK(T, dmu[i] = s_mean * (mu[i] - x[i]);                                 \
                               dsigma[i] = s * ((T)1 - z * z) * inv_sd)                          \
            } else if (beta == 0.0) {                                                            \
                RECON_BLOCK(T, dmu[i] = -s * z * inv_sd;                                         \
                               dsigma[i] = s * ((T)1 - z * z) * inv_sd)                          \
            } else {                                                                             \
                RECON_BLOCK(T, const T w = s * POW(sigma[i], two_beta);                          \
                               dmu[i] = -w * z * inv_sd;                                         \
                               dsigma[i] = w * ((T)1 - z * z) * inv_sd)                          \
            }                                                                                    \
            block_sums[first / block] = total;                                                   \
        }                                                                                        \
    }

DEFINE_GAUSSIAN_RECON_LOSS(gaussian_recon_loss_float, float, powf)
DEFINE_GAUSSIAN_RECON_LOSS(gaussian_recon_loss_double, double, pow)
