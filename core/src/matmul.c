/*
 * matmul.c - GEMM and batched GEMM through OpenBLAS (CPU) or cuBLAS (CUDA).
 * float16/bfloat16 operands run on cublasGemmStridedBatchedEx with float32 accumulation
 * (tensor cores) on CUDA, and on the CPU are widened to float32 for SGEMM.
 * A transposed view is fed to BLAS as a transposed operand instead of being
 * copied; only layouts BLAS cannot express are packed first.
 */
#include "internal.h"

/* a batched CPU product under this many flops runs one product a thread (matmul below) */
#define SMALL_GEMM_FLOPS 16777216.0

/* The last two dims of t as a BLAS operand: *trans flips when the matrix is
 * stored column-major; *ld is the leading dimension. 0 if expressible. */
static int blas_layout(const facet_tensor *t, int *trans, int64_t *ld)
{
    int r = t->ndim - 2, c = t->ndim - 1;
    int64_t rows = t->sizes[r], cols = t->sizes[c];
    int64_t sr = t->strides[r], sc = t->strides[c];
    if ((sc == 1 || cols == 1) && sr >= (cols > 1 ? cols : 1)) {
        *ld = sr > 0 ? sr : 1;
        if (*ld < cols) *ld = cols;
        return 0;
    }
    if ((sr == 1 || rows == 1) && sc >= (rows > 1 ? rows : 1)) {
        *trans = !*trans;
        *ld = sc > 0 ? sc : 1;
        if (*ld < rows) *ld = rows;
        return 0;
    }
    return -1;
}

static bool is_half(int dtype) { return dtype == FACET_DTYPE_FLOAT16 || dtype == FACET_DTYPE_BFLOAT16; }

/* a new contiguous float32 tensor with t's values (exact for 16-bit floats) */
static int widened(facet_tensor **out, const facet_tensor *t)
{
    int rc = facet_tensor_init(out, FACET_DTYPE_FLOAT32, t->device, t->ndim, t->sizes);
    if (!rc) rc = facet_tensor_copy(*out, t);
    return rc;
}

/* The CPU path of 16-bit operands: widen to float32, SGEMM, round the result
 * once into out (correctness, not speed). */
static int matmul_widened(facet_tensor *out, const facet_tensor *a, const facet_tensor *b, int ta, int tb, float alpha,
                          float beta)
{
    facet_tensor *wa = NULL, *wb = NULL, *wo = NULL;
    int rc = widened(&wa, a);
    if (!rc) rc = widened(&wb, b);
    if (!rc) rc = beta != 0.0f ? widened(&wo, out)
                               : facet_tensor_init(&wo, FACET_DTYPE_FLOAT32, out->device, out->ndim, out->sizes);
    if (!rc) rc = facet_tensor_matmul(wo, wa, wb, ta, tb, alpha, beta);
    if (!rc) rc = facet_tensor_copy(out, wo);
    facet_tensor_free(wa);
    facet_tensor_free(wb);
    facet_tensor_free(wo);
    return rc;
}

int facet_tensor_matmul(facet_tensor *out, const facet_tensor *a, const facet_tensor *b, int transpose_a,
                 int transpose_b, float alpha, float beta)
{
    static const char *fn = "facet_tensor_matmul";
    int rc = facet_check_tensor(fn, "out", out);
    if (!rc) rc = facet_check_tensor(fn, "a", a);
    if (!rc) rc = facet_check_tensor(fn, "b", b);
    if (rc) return rc;
    /* float32, or float16/bfloat16 a and b (one dtype) into out of their dtype or float32 */
    if ((a->dtype != FACET_DTYPE_FLOAT32 && !is_half(a->dtype)) || b->dtype != a->dtype ||
        (out->dtype != a->dtype && out->dtype != FACET_DTYPE_FLOAT32))
        return facet_fail(FACET_STATUS_ERR_ARG,
                          "%s: want float32 a, b, out, or float16/bfloat16 a and b of one dtype with out of that "
                          "dtype or float32; got a %s, b %s, out %s", fn, facet_desc(a), facet_desc(b), facet_desc(out));
    rc = facet_check_same_device(fn, out, a);
    if (!rc) rc = facet_check_same_device(fn, out, b);
    if (rc) return rc;
    if (a->ndim < 2 || a->ndim > 3 || b->ndim < 2 || b->ndim > 3 || out->ndim != a->ndim ||
        (b->ndim == 3 && a->ndim != 3))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: want 2-D a, b, out or 3-D a, out with 2-D/3-D b; got a %s, b %s, out %s",
                          fn, facet_desc(a), facet_desc(b), facet_desc(out));
    int batched = a->ndim == 3;
    int64_t batch = batched ? a->sizes[0] : 1;
    int ra = a->ndim - 2, rb = b->ndim - 2, ro = out->ndim - 2;
    int64_t m = transpose_a ? a->sizes[ra + 1] : a->sizes[ra];
    int64_t k = transpose_a ? a->sizes[ra] : a->sizes[ra + 1];
    int64_t kb = transpose_b ? b->sizes[rb + 1] : b->sizes[rb];
    int64_t n = transpose_b ? b->sizes[rb] : b->sizes[rb + 1];
    if (k != kb || out->sizes[ro] != m || out->sizes[ro + 1] != n ||
        (batched && (out->sizes[0] != batch || (b->ndim == 3 && b->sizes[0] != batch))))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: shapes do not match: a %s%s, b %s%s, out %s", fn, facet_desc(a),
                          transpose_a ? "^T" : "", facet_desc(b), transpose_b ? "^T" : "", facet_desc(out));
    if (out->strides[ro + 1] != 1 && n > 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: out %s must have contiguous rows", fn, facet_desc(out));
    if (out->storage == a->storage || out->storage == b->storage)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: out %s shares memory with an input", fn, facet_desc(out));
    if (m == 0 || n == 0 || batch == 0) return 0;
    /* k = 0: the product is empty, out = beta * out (an M x 0 operand has no
     * leading dimension BLAS would accept); beta 0 overwrites, as BLAS does */
    if (k == 0)
        return beta == 0.0f ? facet_tensor_fill(out, 0.0) : facet_tensor_unary(out, out, FACET_UNARY_MUL, beta, 0.0);
    bool half = is_half(a->dtype);
    if (half && out->device == FACET_DEVICE_CPU) return matmul_widened(out, a, b, transpose_a, transpose_b, alpha, beta);

    /* pack operands BLAS cannot take as they are */
    facet_tensor *pa = NULL, *pb = NULL;
    int ta = transpose_a, tb = transpose_b;
    int64_t lda, ldb, ldc = out->sizes[ro + 1] > 1 ? out->strides[ro] : (out->strides[ro] > 0 ? out->strides[ro] : 1);
    if (ldc < n) ldc = n;
    if (blas_layout(a, &ta, &lda) != 0) {
        rc = facet_contiguous_copy(&pa, a);
        if (rc) return rc;
        ta = transpose_a;
        blas_layout(pa, &ta, &lda);
    }
    if (!rc && blas_layout(b, &tb, &ldb) != 0) {
        rc = facet_contiguous_copy(&pb, b);
        if (!rc) {
            tb = transpose_b;
            blas_layout(pb, &tb, &ldb);
        }
    }
    const facet_tensor *A = pa ? pa : a, *B = pb ? pb : b;
    const float *ap = facet_ptr(A), *bp = facet_ptr(B);
    float *cp = facet_ptr(out);
    int64_t sa = batched ? A->strides[0] : 0, sb = B->ndim == 3 ? B->strides[0] : 0;
    int64_t sc = batched ? out->strides[0] : 0;
    if (!rc) {
        if (half) {     /* CUDA: tensor cores, float32 accumulation */
            rc = facet_cuda_gemm_ex(ta, tb, m, n, k, alpha, a->dtype, facet_ptr(A), lda, sa, facet_ptr(B), ldb, sb,
                                    beta, out->dtype, facet_ptr(out), ldc, sc, batch);
        } else if (out->device == FACET_DEVICE_CUDA) {
            rc = facet_cuda_sgemm(ta, tb, m, n, k, alpha, ap, lda, sa, bp, ldb, sb, beta, cp, ldc, sc, batch);
        } else {
            /* the first product alone: it checks what every one of them would */
            rc = facet_blas_sgemm(ta, tb, m, n, k, alpha, ap, lda, bp, ldb, beta, cp, ldc);
            /* many small products (a transformer's per-head attention): one
             * thread each, where OpenBLAS (its OpenMP build) runs
             * single-threaded inside the region; each product is the same
             * whole-k sum as alone. Large ones, or a BLAS that would start its
             * own threads in each, take the BLAS's threads one at a time. */
            const int nt = facet_threads();
            if (!rc && batch > 1 && nt > 1 && 2.0 * (double)m * (double)n * (double)k < SMALL_GEMM_FLOPS &&
                facet_blas_nests()) {
                #pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
                for (int64_t i = 1; i < batch; i++)
                    (void)facet_blas_sgemm(ta, tb, m, n, k, alpha, ap + i * sa, lda, bp + i * sb, ldb, beta,
                                           cp + i * sc, ldc);
            } else {
                for (int64_t i = 1; i < batch && !rc; i++)
                    rc = facet_blas_sgemm(ta, tb, m, n, k, alpha, ap + i * sa, lda, bp + i * sb, ldb, beta,
                                          cp + i * sc, ldc);
            }
        }
    }
    facet_tensor_free(pa);
    facet_tensor_free(pb);
    return rc;
}
