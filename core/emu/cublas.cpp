/*
 * cublas.cpp - the emulator's cuBLAS GEMMs (docs/cuda-emulator.md). Each
 * call is checked when it is made, as cuBLAS checks it (sizes >= 0, leading dimensions at
 * least the stored rows, known operations and types), and every operand's
 * whole strided extent must lie inside one device allocation, which cuBLAS
 * itself never checks (a GPU would read or write past it). The product is
 * computed in stream order (queued like a kernel), in float32 through the core's BLAS: op(A) and op(B) are widened
 * into row-major scratch (TF32 compute rounds their mantissas to 10 bits, to
 * nearest with ties away, as the tensor cores take them), then
 * C = alpha AB + beta C is stored in C's type, rounded once; beta = 0 does
 * not read C.
 */
#include "cublas_v2.h"
#include "emu.h"

#include <algorithm>
#include <stdarg.h>
#include <stdio.h>
#include <vector>

extern "C" {
#include "internal.h"
}
#include "half_math.h"

struct cublasContext {
    int magic;
};

namespace {

const int MAGIC = 0x6375626c;

size_t type_bytes(cudaDataType_t t) { return t == CUDA_R_32F ? 4 : 2; }

float load(const void *p, cudaDataType_t t, int64_t i)
{
    switch (t) {
    case CUDA_R_16F: return facet_half_to_float(((const uint16_t *)p)[i]);
    case CUDA_R_16BF: return facet_bf16_to_float(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

void store(void *p, cudaDataType_t t, int64_t i, float v)
{
    switch (t) {
    case CUDA_R_16F: ((uint16_t *)p)[i] = facet_float_to_half(v); break;
    case CUDA_R_16BF: ((uint16_t *)p)[i] = facet_float_to_bf16(v); break;
    default: ((float *)p)[i] = v; break;
    }
}

/* float32 -> TF32 (10 mantissa bits), to nearest, ties away from zero */
float tf32(float v)
{
    uint32_t u = facet_f32_bits_u(v);
    if ((u & 0x7f800000u) == 0x7f800000u) return v;   /* inf, NaN */
    u = (u + 0x1000u) & 0xffffe000u;
    return facet_u_bits_f32(u);
}

bool known_type(cudaDataType_t t) { return t == CUDA_R_32F || t == CUDA_R_16F || t == CUDA_R_16BF; }

cublasStatus_t invalid(const char *fn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
cublasStatus_t invalid(const char *fn, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "facet-emu: %s: %s\n", fn, msg);
    return CUBLAS_STATUS_INVALID_VALUE;
}

/* The stored rows x cols matrices (leading dimension ld, batch stride) all
 * inside one device block. */
bool operand_ok(const char *fn, const char *name, const void *p, cudaDataType_t t, int64_t rows, int64_t cols,
                int64_t ld, long long stride, int64_t batch)
{
    if (rows == 0 || cols == 0) return true;
    int64_t last = (cols - 1) * ld + rows - 1 + (batch - 1) * (stride > 0 ? stride : 0);
    int64_t first = stride < 0 ? (batch - 1) * stride : 0;
    const char *base = (const char *)p + first * (int64_t)type_bytes(t);
    size_t bytes = (size_t)(last - first + 1) * type_bytes(t);
    if (facet_emu::device_range(base, bytes)) return true;
    invalid(fn, "%s (%p, %lld x %lld, ld %lld, stride %lld, batch %lld) is not inside one device allocation", name,
            p, (long long)rows, (long long)cols, (long long)ld, stride, (long long)batch);
    return false;
}

int compute_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha, const void *a,
                 cudaDataType_t at, int lda, long long sa, const void *b, cudaDataType_t bt, int ldb, long long sb,
                 float beta, void *c, cudaDataType_t ct, int ldc, long long sc, int batch, bool round_tf32);

cublasStatus_t gemm(const char *fn, cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                    int k, float alpha, const void *a, cudaDataType_t at, int lda, long long sa, const void *b,
                    cudaDataType_t bt, int ldb, long long sb, float beta, void *c, cudaDataType_t ct, int ldc,
                    long long sc, int batch, cublasComputeType_t compute)
{
    if (!h || h->magic != MAGIC) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (ta > CUBLAS_OP_C || tb > CUBLAS_OP_C || ta < 0 || tb < 0) return invalid(fn, "unknown operation");
    if (m < 0 || n < 0 || k < 0 || batch < 0)
        return invalid(fn, "m=%d n=%d k=%d batch=%d", m, n, k, batch);
    int64_t a_rows = ta == CUBLAS_OP_N ? m : k, b_rows = tb == CUBLAS_OP_N ? k : n;
    if (lda < (a_rows > 1 ? a_rows : 1) || ldb < (b_rows > 1 ? b_rows : 1) || ldc < (m > 1 ? m : 1))
        return invalid(fn, "lda=%d ldb=%d ldc=%d for m=%d n=%d k=%d, op(A) %s, op(B) %s", lda, ldb, ldc, m, n, k,
                       ta == CUBLAS_OP_N ? "N" : "T", tb == CUBLAS_OP_N ? "N" : "T");
    if (!known_type(at) || !known_type(bt) || !known_type(ct) || at != bt || (ct != at && ct != CUDA_R_32F))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (compute != CUBLAS_COMPUTE_32F && compute != CUBLAS_COMPUTE_32F_FAST_TF32) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
    int64_t a_cols = ta == CUBLAS_OP_N ? k : m, b_cols = tb == CUBLAS_OP_N ? n : k;
    if ((k > 0 && (!operand_ok(fn, "A", a, at, a_rows, a_cols, lda, sa, batch) ||
                   !operand_ok(fn, "B", b, bt, b_rows, b_cols, ldb, sb, batch))) ||
        !operand_ok(fn, "C", c, ct, m, n, ldc, sc, batch))
        return CUBLAS_STATUS_INVALID_VALUE;

    /* computed in stream order, with alpha and beta as they are now (host pointer mode) */
    facet_emu::enqueue([=]() {
        return compute_gemm(ta, tb, m, n, k, alpha, a, at, lda, sa, b, bt, ldb, sb, beta, c, ct, ldc, sc, batch,
                            compute == CUBLAS_COMPUTE_32F_FAST_TF32 && at == CUDA_R_32F);
    });
    return CUBLAS_STATUS_SUCCESS;
}

int compute_gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha, const void *a,
                 cudaDataType_t at, int lda, long long sa, const void *b, cudaDataType_t bt, int ldb, long long sb,
                 float beta, void *c, cudaDataType_t ct, int ldc, long long sc, int batch, bool round_tf32)
{
    std::vector<float> ra((size_t)m * k), rb((size_t)k * n), rc((size_t)m * n);
    for (int64_t q = 0; q < batch; q++) {
        const void *aq = (const char *)a + q * sa * (long long)type_bytes(at);
        const void *bq = (const char *)b + q * sb * (long long)type_bytes(bt);
        void *cq = (char *)c + q * sc * (long long)type_bytes(ct);
        /* column-major op(A)(i, p) into row-major ra[i][p], op(B)(p, j) into rb[p][j] */
        for (int64_t i = 0; i < m; i++)
            for (int64_t p = 0; p < k; p++) {
                float v = load(aq, at, ta == CUBLAS_OP_N ? i + p * lda : p + i * lda);
                ra[(size_t)(i * k + p)] = round_tf32 ? tf32(v) : v;
            }
        for (int64_t p = 0; p < k; p++)
            for (int64_t j = 0; j < n; j++) {
                float v = load(bq, bt, tb == CUBLAS_OP_N ? p + j * ldb : j + p * ldb);
                rb[(size_t)(p * n + j)] = round_tf32 ? tf32(v) : v;
            }
        if (k > 0) {
            if (facet_blas_sgemm(0, 0, m, n, k, 1.0f, ra.data(), k, rb.data(), n, 0.0f, rc.data(), n)) {
                facet_emu::fault("a cuBLAS GEMM: the host BLAS failed: %s", facet_last_error());
                return 1;
            }
        } else {
            std::fill(rc.begin(), rc.end(), 0.0f);
        }
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                int64_t e = i + j * ldc;
                float v = alpha * rc[(size_t)(i * n + j)];
                if (beta != 0.0f) v += beta * load(cq, ct, e);
                store(cq, ct, e, v);
            }
    }
    return 0;
}

float scalar(const void *p) { return *(const float *)p; }

}   /* namespace */

cublasStatus_t cublasCreate(cublasHandle_t *handle)
{
    *handle = new cublasContext{MAGIC};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle)
{
    if (!handle || handle->magic != MAGIC) return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->magic = 0;
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusString(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *a, cudaDataType_t atype, int lda, const void *b,
                            cudaDataType_t btype, int ldb, const void *beta, void *c, cudaDataType_t ctype, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo)
{
    (void)algo;
    return gemm("cublasGemmEx", h, ta, tb, m, n, k, scalar(alpha), a, atype, lda, 0, b, btype, ldb, 0, scalar(beta),
                c, ctype, ldc, 0, 1, compute);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void *alpha, const void *a, cudaDataType_t atype, int lda,
                                          long long stride_a, const void *b, cudaDataType_t btype, int ldb,
                                          long long stride_b, const void *beta, void *c, cudaDataType_t ctype,
                                          int ldc, long long stride_c, int batch, cublasComputeType_t compute,
                                          cublasGemmAlgo_t algo)
{
    (void)algo;
    return gemm("cublasGemmStridedBatchedEx", h, ta, tb, m, n, k, scalar(alpha), a, atype, lda, stride_a, b, btype,
                ldb, stride_b, scalar(beta), c, ctype, ldc, stride_c, batch, compute);
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                         int k, const float *alpha, const float *a, int lda, long long stride_a,
                                         const float *b, int ldb, long long stride_b, const float *beta, float *c,
                                         int ldc, long long stride_c, int batch)
{
    return gemm("cublasSgemmStridedBatched", h, ta, tb, m, n, k, *alpha, a, CUDA_R_32F, lda, stride_a, b, CUDA_R_32F,
                ldb, stride_b, *beta, c, CUDA_R_32F, ldc, stride_c, batch, CUBLAS_COMPUTE_32F);
}
