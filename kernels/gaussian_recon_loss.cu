// GaussianReconLoss fused with its gradients and reduction, in one launch (sigma a standard
// deviation, s = w / n):
//   loss   = 0.5 s sum [log 2pi + 2 log sigma + (x - mu)^2 / sigma^2]
//   dmu    = s (mu - x) / sigma^2
//   dsigma = s (1 - (x - mu)^2 / sigma^2) / sigma
// beta > 0 gives the beta-NLL gradients (Seitzer et al. 2022): both gradients are multiplied by
// sigma^(2 beta) = inv_var^(-beta), the loss is unchanged. mean_inv_var > 0 instead gives the
// mean's gradient at that fixed inverse variance, dmu = s (mu - x) mean_inv_var.
// No gradient flows into x. Null gradient pointers are skipped (test phase).
#include "common.cuh"

template <typename T>
__global__ void gaussian_recon_loss(const T* mu, const T* sigma, const T* x, T scale, T beta,
                                    T mean_inv_var, T* loss, T* dmu, T* dsigma, long long n,
                                    mocha::acc_t* partials, unsigned long long* blocks_done) {
    const mocha::acc_t log_2pi = 1.8378770664093453;
    mocha::acc_t sum = 0.0;
    for (long long i = mocha::first_index(); i < n; i += mocha::grid_stride()) {
        const T s = sigma[i];
        const T r = x[i] - mu[i];
        const T inv_var = (T)1 / (s * s);
        const T weighted_square = r * r * inv_var;
        sum += 2.0 * mocha::log_((mocha::acc_t)s) + (mocha::acc_t)weighted_square;
        const T pixel_weight = beta == (T)0 ? (T)1 : mocha::pow_(inv_var, -beta);
        if (dmu != nullptr) {
            dmu[i] = mean_inv_var > (T)0 ? r * mean_inv_var * -scale
                                         : r * inv_var * -scale * pixel_weight;
        }
        if (dsigma != nullptr) {
            dsigma[i] = ((T)1 - weighted_square) / s * scale * pixel_weight;
        }
    }
    // n log 2pi is added once here rather than n times in the loop.
    const bool adds_constant = blockIdx.x == 0 && threadIdx.x == 0;
    mocha::reduce_to_scalar(sum + (adds_constant ? (mocha::acc_t)n * log_2pi : 0.0), partials,
                            blocks_done, 0.5 * (mocha::acc_t)scale, loss);
}
