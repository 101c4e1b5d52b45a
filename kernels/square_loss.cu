// SquareLoss fused with its gradients and reduction, in one launch:
//   loss = 0.5 s sum (pred - label)^2,  dpred = s (pred - label),  dlabel = -dpred   (s = w / n).
// Null gradient pointers are skipped. partials/blocks_done: the reduction workspace.
#include "common.cuh"

template <typename T>
__global__ void square_loss(const T* pred, const T* label, T scale, T* loss, T* dpred, T* dlabel,
                            long long n, mocha::acc_t* partials,
                            unsigned long long* blocks_done) {
    mocha::acc_t sum = 0.0;
    for (long long i = mocha::first_index(); i < n; i += mocha::grid_stride()) {
        const T r = pred[i] - label[i];
        sum += (mocha::acc_t)r * r;
        if (dpred != nullptr) {
            dpred[i] = r * scale;
        }
        if (dlabel != nullptr) {
            dlabel[i] = r * -scale;
        }
    }
    mocha::reduce_to_scalar(sum, partials, blocks_done, 0.5 * (mocha::acc_t)scale, loss);
}
