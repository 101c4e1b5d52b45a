// GaussianKLLoss, KL(N(mu, sigma^2) || N(0, 1)), fused with its gradients and reduction (s = w/n):
//   loss = 0.5 s sum [mu^2 + sigma^2 - 2 log sigma - 1],
//   dmu = s mu,  dsigma = s (sigma - 1/sigma).
// Null gradient pointers are skipped (test phase).
#include "common.cuh"

template <typename T>
__global__ void gaussian_kl_loss(const T* mu, const T* sigma, T scale, T* loss, T* dmu, T* dsigma,
                                 long long n, mocha::acc_t* partials,
                                 unsigned long long* blocks_done) {
    mocha::acc_t sum = 0.0;
    for (long long i = mocha::first_index(); i < n; i += mocha::grid_stride()) {
        const T m = mu[i];
        const T s = sigma[i];
        sum += (mocha::acc_t)m * m + (mocha::acc_t)s * s - 2.0 * mocha::log_((mocha::acc_t)s) - 1.0;
        if (dmu != nullptr) {
            dmu[i] = m * scale;
        }
        if (dsigma != nullptr) {
            dsigma[i] = (s - (T)1 / s) * scale;
        }
    }
    mocha::reduce_to_scalar(sum, partials, blocks_done, 0.5 * (mocha::acc_t)scale, loss);
}
