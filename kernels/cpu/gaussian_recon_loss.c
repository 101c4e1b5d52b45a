// GaussianReconLoss on the CPU, forward and both gradients in one pass over the elements
// [start, stop) (kernels/gaussian_recon_loss.cu's arithmetic; s is weight / batch size):
//   block_sums[b] = sum over block b of log 2pi + 2 log sigma + (x - mu)^2 / sigma^2
//                   (blocks of `block` elements)
//   dmu = s (mu - x) / sigma^2,   dsigma = s (1 / sigma - (x - mu)^2 / sigma^3)
// each gradient times sigma^(2 beta) for beta-NLL (beta > 0); with mean_inv_var > 0 instead
// dmu = s (mu - x) mean_inv_var (the mean's gradient at a fixed sd). dmu and dsigma are both given
// or both NULL (the loss only). Each case has its own loop, so the common ones vectorise.
// Sums go per fixed block, so the loss does not depend on how threads split the elements.
// The sum of log sigma takes no log per element: sigma = 2^e m with m in [1, 2), so over a chunk
// of LOG_CHUNK elements sum log sigma = (sum e) ln 2 + log(prod m), the product (below 2^512) in
// double; a chunk with a sigma that is not a positive normal number (0, subnormal, negative, inf,
// NaN) takes libm's log of each element instead. A vectorised log in this loop (Cephes's) was
// slower than NumPy's AVX-512 log; the exponent and mantissa are a few integer operations.
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define LOG_CHUNK 512
static const double kLn2 = 0.69314718055994530942;
static const double kLog2Pi = 1.8378770664093453;

// SPLIT_T(value) adds value's unbiased exponent to `exponents`, multiplies `mantissas` by its
// mantissa in [1, 2), and sets `unusual` where value is not a positive normal number.
#define SPLIT_float(value)                                                     \
    {                                                                          \
        uint32_t bits;                                                         \
        memcpy(&bits, &(value), sizeof bits);                                  \
        exponents += (int64_t)(bits >> 23) - 127;                              \
        unusual |= (bits >> 23) - 1u >= 254u;                                  \
        const uint32_t one_bits = (bits & 0x007fffffu) | 0x3f800000u;          \
        float mantissa;                                                        \
        memcpy(&mantissa, &one_bits, sizeof mantissa);                         \
        mantissas *= (double)mantissa;                                         \
    }
#define SPLIT_double(value)                                                    \
    {                                                                          \
        uint64_t bits;                                                         \
        memcpy(&bits, &(value), sizeof bits);                                  \
        exponents += (int64_t)(bits >> 52) - 1023;                             \
        unusual |= (bits >> 52) - 1u >= 2046u;                                 \
        const uint64_t one_bits = (bits & 0x000fffffffffffffu) | 0x3ff0000000000000u; \
        double mantissa;                                                       \
        memcpy(&mantissa, &one_bits, sizeof mantissa);                         \
        mantissas *= mantissa;                                                 \
    }

// One block's loop, chunk by chunk: GRADIENTS is a statement run with z and inv_sd in scope.
#define RECON_BLOCK(T, GRADIENTS)                                                              \
    for (int64_t chunk = first; chunk < last; chunk += LOG_CHUNK) {                            \
        const int64_t end = chunk + LOG_CHUNK < last ? chunk + LOG_CHUNK : last;               \
        double squares = 0.0, mantissas = 1.0;                                                 \
        int64_t exponents = 0;                                                                 \
        int unusual = 0;                                                                       \
        _Pragma("omp simd reduction(+ : squares, exponents) reduction(* : mantissas) reduction(| : unusual)") \
        for (int64_t i = chunk; i < end; ++i) {                                                \
            const T inv_sd = (T)1 / sigma[i];                                                  \
            const T z = (x[i] - mu[i]) * inv_sd;                                               \
            squares += (double)(z * z);                                                        \
            SPLIT_##T(sigma[i]) GRADIENTS;                                                     \
        }                                                                                      \
        double log_sd = (double)exponents * kLn2 + log(mantissas);                             \
        if (unusual) {                                                                         \
            log_sd = 0.0;                                                                      \
            for (int64_t i = chunk; i < end; ++i) log_sd += log((double)sigma[i]);             \
        }                                                                                      \
        total += (double)(end - chunk) * kLog2Pi + 2.0 * log_sd + squares;                     \
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

// The same loss with known measurement noise and bad pixels. A pixel is used where mask (if given)
// is 0 and ivar (if given) is > 0; unused pixels add nothing to the sum and get zero gradients.
// The variance of a used pixel is v = sigma^2, or v = sigma^2 + 1 / ivar with noise_variance
// (x ~ N(mu, sigma^2 + 1/ivar): the model's variance on top of the measured noise). Here
// block_sums[b] is the sum over block b's used pixels of log 2pi + log v + (x - mu)^2 / v:
//   dmu = s (mu - x) / v,   dsigma = s sigma (1 - (x - mu)^2 / v) / v
// each times v^beta for beta-NLL; mean_inv_var > 0 gives dmu = s (mu - x) mean_inv_var instead.
#define DEFINE_GAUSSIAN_RECON_LOSS_MASKED(NAME, T, LOG, POW)                                     \
    void NAME(const T* restrict mu, const T* restrict sigma, const T* restrict x,                \
              const T* restrict ivar, const T* restrict mask, int noise_variance, int64_t start, \
              int64_t stop, int64_t block, double scale, double beta, double mean_inv_var,       \
              T* restrict dmu, T* restrict dsigma, double* restrict block_sums) {                \
        const double log_2pi = 1.8378770664093453;                                               \
        const T s = (T)scale;                                                                    \
        for (int64_t first = start; first < stop; first += block) {                              \
            const int64_t last = first + block < stop ? first + block : stop;                    \
            double total = 0.0;                                                                  \
            for (int64_t i = first; i < last; ++i) {                                             \
                const int used = (mask == NULL || mask[i] == (T)0) &&                            \
                                 (ivar == NULL || ivar[i] > (T)0);                               \
                if (!used) {                                                                     \
                    if (dmu != NULL) {                                                           \
                        dmu[i] = (T)0;                                                           \
                        dsigma[i] = (T)0;                                                        \
                    }                                                                            \
                    continue;                                                                    \
                }                                                                                \
                const T sd = sigma[i];                                                           \
                const T v = sd * sd + (noise_variance ? (T)1 / ivar[i] : (T)0);                  \
                const T inv_v = (T)1 / v;                                                        \
                const T r = x[i] - mu[i];                                                        \
                const T z2 = r * r * inv_v;                                                      \
                total += log_2pi + (double)LOG(v) + (double)z2;                                  \
                if (dmu != NULL) {                                                               \
                    const T w = beta == 0.0 ? s : s * POW(v, (T)beta);                           \
                    dmu[i] = mean_inv_var > 0.0 ? (T)(scale * mean_inv_var) * -r                 \
                                                : -w * r * inv_v;                                \
                    dsigma[i] = w * sd * ((T)1 - z2) * inv_v;                                    \
                }                                                                                \
            }                                                                                    \
            block_sums[first / block] = total;                                                   \
        }                                                                                        \
    }

DEFINE_GAUSSIAN_RECON_LOSS_MASKED(gaussian_recon_loss_masked_float, float, logf, powf)
DEFINE_GAUSSIAN_RECON_LOSS_MASKED(gaussian_recon_loss_masked_double, double, log, pow)
