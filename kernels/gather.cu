// Data batch from a device-resident dataset: out[b, :] = dataset[rows[b], :]. The index buffer is
// filled from the host before each step, so a captured step gathers the batch of its replay.
#include "common.cuh"

template <typename T>
__global__ void gather_rows(const T* dataset, const long long* rows, T* out, int batch,
                            long long row_size) {
    const long long n = batch * row_size;
    for (long long i = mocha::first_index(); i < n; i += mocha::grid_stride()) {
        const long long b = i / row_size;
        out[i] = dataset[rows[b] * row_size + (i - b * row_size)];
    }
}
