/*
 * blas.cu - row-major, batched SGEMM on cuBLAS. cuBLAS is column-major, and
 * a row-major matrix read column-major is its transpose, so row-major
 * C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T:
 * the operands swap places, m and n swap, and the transpose flags and
 * leading dimensions pass through unchanged. One cuBLAS handle serves the
 * process (cuBLAS allows one handle on several host threads while its
 * settings stay fixed); it is created on first use under a mutex and bound
 * to the default stream, like every other kernel of the backend, with host
 * pointers for alpha and beta. facet_cuda_gemm_ex does the same for
 * float16/bfloat16 operands with float32 accumulation
 * (cublasGemmStridedBatchedEx, CUBLAS_COMPUTE_32F). Its handle's math mode
 * carries CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION: without it
 * cuBLAS may add split-K partial sums in a 16-bit C's type, and a 16-bit
 * result would no longer be the float32 sum rounded once. With TF32 on
 * (facet_cuda_tf32_set) float32 GEMMs run as CUBLAS_COMPUTE_32F_FAST_TF32;
 * the math mode is otherwise the default, so SGEMM stays float32.
 * k == 0 is done
 * here (C = beta C), since cuBLAS would reject the degenerate leading
 * dimensions callers may pass for an empty inner dimension.
 */
#include "cuda_common.cuh"
#include <limits.h>
#include <pthread.h>

static pthread_mutex_t handle_lock = PTHREAD_MUTEX_INITIALIZER;
static cublasHandle_t handle_shared = NULL;

static int get_handle(cublasHandle_t *out, const char *fn)
{
    int rc = FACET_STATUS_OK;
    pthread_mutex_lock(&handle_lock);
    if (!handle_shared) {
        cublasHandle_t h = NULL;
        rc = check_cublas(cublasCreate(&h), fn);
        if (rc == FACET_STATUS_OK) {
            /* set once, before any thread sees the handle, and never changed */
            rc = check_cublas(cublasSetMathMode(h, (cublasMath_t)(CUBLAS_DEFAULT_MATH |
                                                                   CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)),
                              fn);
            if (rc == FACET_STATUS_OK) handle_shared = h;  /* on failure the next call tries again */
            else cublasDestroy(h);
        }
    }
    *out = handle_shared;
    pthread_mutex_unlock(&handle_lock);
    return rc;
}

/* C = beta C over a batch of m x n row-major matrices; beta 0 overwrites,
 * so NaN or garbage in an uninitialised C does not survive. */
static __global__ void scale_kernel(float *c, float beta, int64_t m, int64_t n, int64_t ldc, int64_t stride_c,
                                    int64_t batch)
{
    FACET_CUDA_FOR(e, batch * m * n) {
        int64_t b = e / (m * n), r = (e / n) % m, j = e % n;
        float *p = c + b * stride_c + r * ldc + j;
        *p = beta == 0.0f ? 0.0f : beta * *p;
    }
}

static bool fits_int(int64_t v)
{
    return v >= 0 && v <= INT_MAX;
}

/* every size and leading dimension as cuBLAS's int */
static int check_ranges(const char *fn, int64_t m, int64_t n, int64_t k, int64_t batch, int64_t lda, int64_t ldb,
                        int64_t ldc)
{
    if (!fits_int(m) || !fits_int(n) || !fits_int(k) || !fits_int(batch) || !fits_int(lda) ||
        !fits_int(ldb) || !fits_int(ldc))
        return facet_fail(FACET_STATUS_ERR_ARG,
                          "%s: m=%lld n=%lld k=%lld batch=%lld lda=%lld ldb=%lld ldc=%lld "
                          "out of cuBLAS int range",
                          fn, (long long)m, (long long)n, (long long)k, (long long)batch, (long long)lda,
                          (long long)ldb, (long long)ldc);
    return FACET_STATUS_OK;
}

extern "C" int facet_cuda_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                                const float *a, int64_t lda, int64_t stride_a,
                                const float *b, int64_t ldb, int64_t stride_b, float beta,
                                float *c, int64_t ldc, int64_t stride_c, int64_t batch)
{
    const char *fn = "facet_cuda_sgemm";
    int rc = check_ranges(fn, m, n, k, batch, lda, ldb, ldc);
    if (rc) return rc;
    if (m == 0 || n == 0 || batch == 0) return FACET_STATUS_OK;

    if (k == 0) {
        if (beta == 1.0f) return FACET_STATUS_OK;
        scale_kernel<<<grid_blocks(batch * m * n), FACET_CUDA_THREADS>>>(c, beta, m, n, ldc, stride_c, batch);
        return check_launch(fn);
    }

    cublasHandle_t h;
    rc = get_handle(&h, fn);
    if (rc) return rc;
    cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasStatus_t s;
    if (facet_tf32_enabled())    /* inputs rounded to TF32 on the tensor cores, float32 sums */
        s = cublasGemmStridedBatchedEx(h, op_b, op_a, (int)n, (int)m, (int)k, &alpha,
                                       b, CUDA_R_32F, (int)ldb, (long long)stride_b,
                                       a, CUDA_R_32F, (int)lda, (long long)stride_a, &beta,
                                       c, CUDA_R_32F, (int)ldc, (long long)stride_c, (int)batch,
                                       CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT);
    else
        s = cublasSgemmStridedBatched(h, op_b, op_a, (int)n, (int)m, (int)k, &alpha,
                                      b, (int)ldb, (long long)stride_b,
                                      a, (int)lda, (long long)stride_a, &beta,
                                      c, (int)ldc, (long long)stride_c, (int)batch);
    rc = check_cublas(s, fn);
    if (rc) return rc;
    return check_launch(fn);
}

static cudaDataType_t cuda_type(int dtype)
{
    switch (dtype) {
    case FACET_DTYPE_FLOAT16: return CUDA_R_16F;
    case FACET_DTYPE_BFLOAT16: return CUDA_R_16BF;
    default: return CUDA_R_32F;
    }
}

/* float16/bfloat16 A and B, C of their dtype or float32, float32 accumulation
 * (CUBLAS_COMPUTE_32F: tensor cores, no reduced-precision sums). */
extern "C" int facet_cuda_gemm_ex(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                                  int ab_dtype, const void *a, int64_t lda, int64_t stride_a, const void *b,
                                  int64_t ldb, int64_t stride_b, float beta, int c_dtype, void *c, int64_t ldc,
                                  int64_t stride_c, int64_t batch)
{
    const char *fn = "facet_cuda_gemm_ex";
    if (ab_dtype != FACET_DTYPE_FLOAT16 && ab_dtype != FACET_DTYPE_BFLOAT16)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: A and B must be float16 or bfloat16, got %s", fn,
                          facet_dtype_name(ab_dtype));
    if (c_dtype != ab_dtype && c_dtype != FACET_DTYPE_FLOAT32)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: C must be %s or float32, got %s", fn,
                          facet_dtype_name(ab_dtype), facet_dtype_name(c_dtype));
    int rc = check_ranges(fn, m, n, k, batch, lda, ldb, ldc);
    if (rc) return rc;
    if (m == 0 || n == 0 || batch == 0) return FACET_STATUS_OK;
    if (k == 0)     /* facet_tensor_matmul does C = beta C itself */
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: k is 0 (an empty product is the caller's case)", fn);

    cublasHandle_t h;
    rc = get_handle(&h, fn);
    if (rc) return rc;
    cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cudaDataType_t tab = cuda_type(ab_dtype), tc = cuda_type(c_dtype);
    cublasStatus_t s = cublasGemmStridedBatchedEx(h, op_b, op_a, (int)n, (int)m, (int)k, &alpha,
                                                  b, tab, (int)ldb, (long long)stride_b,
                                                  a, tab, (int)lda, (long long)stride_a, &beta,
                                                  c, tc, (int)ldc, (long long)stride_c, (int)batch,
                                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    rc = check_cublas(s, fn);
    if (rc) return rc;
    return check_launch(fn);
}
