// GaussianReconLoss fused with its gradients and reduction, in one launch (sigma a standard
// deviation, s = w / n):
//   loss   = 0.5 s sum [log 2pi + 2 log sigma + (x - mu)^2 / sigma^2]
//   dmu    = s (mu - x) / sigma^2
//   dsigma = s (1 - (x - mu)^2 / sigma^2) / sigma
// beta > 0 gives the beta-NLL gradients (Seitzer et al. 2022): both gradients are multiplied by
// sigma^(2 beta) = inv_var^(-beta), the loss is unchanged. mean_inv_var > 0 instead gives the
// mean's gradient at that fixed inverse variance, dmu = s (mu - x) mean_inv_var.
// Known noise and bad pixels (ivar and mask may each be null): a pixel is used where mask is 0
// and ivar > 0; unused pixels add nothing to the loss and get zero gradients. With
// noise_variance != 0 the variance is v = sigma^2 + 1/ivar instead of sigma^2 (x ~ N(mu, v)), and
// sigma^2 above reads v: dmu = s (mu - x) / v, dsigma = s sigma (1 - (x - mu)^2 / v) / v.
// No gradient flows into x. Null gradient pointers are skipped (test phase).
#include "common.cuh"

template <typename T>
__global__ void gaussian_recon_loss(const T* mu, const T* sigma, const T* x, T scale, T beta,
                                    T mean_inv_var, T* loss, T* dmu, T* dsigma, const T* ivar,
                                    const T* mask, int noise_variance, long long n,
                                    mocha::acc_t* partials, unsigned long long* blocks_done) {
    const mocha::acc_t log_2pi = 1.8378770664093453;
    mocha::acc_t sum = 0.0;
    for (long long i = mocha::first_index(); i < n; i += mocha::grid_stride()) {
        const bool used = (mask == nullptr || mask[i] == (T)0) && (ivar == nullptr || ivar[i] > (T)0);
        if (!used) {
            if (dmu != nullptr) {
                dmu[i] = (T)0;
            }
            if (dsigma != nullptr) {
                dsigma[i] = (T)0;
            }
            continue;
        }
        const T s = sigma[i];
        const T r = x[i] - mu[i];
        const T variance = noise_variance ? s * s + (T)1 / ivar[i] : s * s;
        const T inv_var = (T)1 / variance;
        const T weighted_square = r * r * inv_var;
        const mocha::acc_t log_variance = noise_variance ? mocha::log_((mocha::acc_t)variance)
                                                         : 2.0 * mocha::log_((mocha::acc_t)s);
        sum += log_2pi + log_variance + (mocha::acc_t)weighted_square;
        const T pixel_weight = beta == (T)0 ? (T)1 : mocha::pow_(inv_var, -beta);
        if (dmu != nullptr) {
            dmu[i] = mean_inv_var > (T)0 ? r * mean_inv_var * -scale
                                         : r * inv_var * -scale * pixel_weight;
        }
        if (dsigma != nullptr) {
            const T per_sd = noise_variance ? s * inv_var : (T)1 / s;
            dsigma[i] = ((T)1 - weighted_square) * per_sd * scale * pixel_weight;
        }
    }
    mocha::reduce_to_scalar(sum, partials, blocks_done, 0.5 * (mocha::acc_t)scale, loss);
}
