/* A stand-in libcublas for the CUDA emulation: the handle calls mochapy's CublasEngine makes, each
 * gemm handed to a Python callback (registered by cuda_emu) that computes it with NumPy or records
 * it into a stream capture. Built as libcublas.so.12 so the engine finds it as it finds the real
 * one, among the libraries mapped into the process. */
#include <stddef.h>
#include <stdlib.h>

typedef int (*gemm_callback)(int is_double, void* stream, int trans_a, int trans_b, int m, int n,
                             int k, const void* alpha, const void* a, int lda, const void* b,
                             int ldb, const void* beta, void* c, int ldc, void* workspace);

struct handle {
    void* stream;
    void* workspace;
    size_t workspace_bytes;
};

static gemm_callback callback = NULL;

void cuda_emu_set_gemm_callback(gemm_callback function) { callback = function; }

int cublasCreate_v2(struct handle** handle) {
    *handle = calloc(1, sizeof(struct handle));
    return *handle == NULL ? 3 : 0; /* CUBLAS_STATUS_ALLOC_FAILED */
}

int cublasDestroy_v2(struct handle* handle) {
    free(handle);
    return 0;
}

int cublasSetStream_v2(struct handle* handle, void* stream) {
    handle->stream = stream;
    return 0;
}

int cublasSetWorkspace_v2(struct handle* handle, void* workspace, size_t bytes) {
    handle->workspace = workspace;
    handle->workspace_bytes = bytes;
    return 0;
}

static int gemm(int is_double, struct handle* handle, int trans_a, int trans_b, int m, int n, int k,
                const void* alpha, const void* a, int lda, const void* b, int ldb,
                const void* beta, void* c, int ldc) {
    if (callback == NULL) {
        return 1; /* CUBLAS_STATUS_NOT_INITIALIZED */
    }
    return callback(is_double, handle->stream, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb,
                    beta, c, ldc, handle->workspace);
}

int cublasSgemm_v2(struct handle* handle, int trans_a, int trans_b, int m, int n, int k,
                   const float* alpha, const float* a, int lda, const float* b, int ldb,
                   const float* beta, float* c, int ldc) {
    return gemm(0, handle, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

int cublasDgemm_v2(struct handle* handle, int trans_a, int trans_b, int m, int n, int k,
                   const double* alpha, const double* a, int lda, const double* b, int ldb,
                   const double* beta, double* c, int ldc) {
    return gemm(1, handle, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
