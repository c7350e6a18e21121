/*
 * reduce.c - sum, mean, max, min, argmax, argmin and sum of squares over
 * all elements or one dim. The input is viewed as [outer, n, inner]; sums
 * accumulate in double. float16/bfloat16 inputs are widened to float32
 * first; their out may be float32 or their own dtype. NaN wins max/min (the first NaN for the arg ops),
 * and ties go to the first index, as in NumPy (reduce_math.h).
 */
#include "internal.h"
#include "reduce_math.h"
#include <stdio.h>
#include <math.h>
#include <stdlib.h>

/* The accumulator is reduce_math.h's, shared with reduce.cu: a sequential
 * scan, the threads' partials merged in order, and the GPU's trees agree. */
static void reduce_cpu(void *out, const float *x, int op, int64_t outer, int64_t n, int64_t inner, int base)
{
    int threads = outer * n * inner >= FACET_PARALLEL_GRAIN ? facet_threads() : 1;
    if (inner == 1 && outer < threads) {
        /* few long rows (e.g. everything): split each row over the threads */
        for (int64_t o = 0; o < outer; o++) {
            const float *row = x + o * n;
            struct facet_racc part[64];
            int parts = threads < 64 ? threads : 64;
            int64_t chunk = (n + parts - 1) / parts;
            #pragma omp parallel for schedule(static) num_threads(threads)
            for (int p = 0; p < parts; p++) {
                struct facet_racc a = facet_racc_init(op);
                int64_t end = (p + 1) * chunk < n ? (p + 1) * chunk : n;
                for (int64_t j = p * chunk; j < end; j++) a = facet_racc_add(op, a, row[j], j);
                part[p] = a;
            }
            struct facet_racc a = part[0];
            for (int p = 1; p < parts; p++) a = facet_racc_merge(op, a, part[p]);
            facet_racc_store(out, op, o, a, n, base);
        }
        return;
    }
    /* tasks of up to 64 adjacent outputs, walked row by row for locality */
    enum { W = 64 };
    int64_t blocks = (inner + W - 1) / W, tasks = outer * blocks;
    #pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t o = t / blocks, c0 = (t % blocks) * W;
        int64_t w = inner - c0 < W ? inner - c0 : W;
        struct facet_racc a[W];
        for (int64_t c = 0; c < w; c++) a[c] = facet_racc_init(op);
        const float *base_p = x + o * n * inner + c0;
        for (int64_t j = 0; j < n; j++)
            for (int64_t c = 0; c < w; c++) a[c] = facet_racc_add(op, a[c], base_p[j * inner + c], j);
        for (int64_t c = 0; c < w; c++) facet_racc_store(out, op, o * inner + c0 + c, a[c], n, base);
    }
}

static bool is_half(int dtype) { return dtype == FACET_DTYPE_FLOAT16 || dtype == FACET_DTYPE_BFLOAT16; }

/* a new contiguous float32 tensor holding t's values (exact for 16-bit floats) */
static int widened(facet_tensor **out, const facet_tensor *t)
{
    int rc = facet_tensor_init(out, FACET_DTYPE_FLOAT32, t->device, t->ndim, t->sizes);
    if (!rc) rc = facet_tensor_copy(*out, t);
    if (rc) {
        facet_tensor_free(*out);
        *out = NULL;
    }
    return rc;
}

int facet_tensor_reduce(facet_tensor *out, const facet_tensor *x, int op, int dim, int index_base)
{
    static const char *fn = "facet_tensor_reduce";
    int rc = facet_check_tensor(fn, "out", out);
    if (!rc) rc = facet_check_tensor(fn, "x", x);
    if (rc) return rc;
    if (x->dtype != FACET_DTYPE_FLOAT32 && !is_half(x->dtype))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: x must be float32, float16 or bfloat16, got %s", fn,
                          facet_desc(x));
    rc = facet_check_same_device(fn, out, x);
    if (rc) return rc;
    if (op < 0 || op >= FACET_REDUCE_COUNT) return facet_fail(FACET_STATUS_ERR_ARG, "%s: unknown op %d", fn, op);
    int arg = op == FACET_REDUCE_ARGMAX || op == FACET_REDUCE_ARGMIN;
    if (arg ? out->dtype != FACET_DTYPE_INT64 : (out->dtype != FACET_DTYPE_FLOAT32 && out->dtype != x->dtype))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: out %s must be %s", fn, facet_desc(out),
                          arg ? "int64" : (x->dtype == FACET_DTYPE_FLOAT32 ? "float32" : "float32 or x's dtype"));
    if (dim < -1 || dim >= (x->ndim > 0 ? x->ndim : 1))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: dim %d out of range for %s: want -1 (all) or 0 to %d (0-based here)",
                          fn, dim, facet_desc(x), (x->ndim > 0 ? x->ndim : 1) - 1);
    int64_t outer = 1, n = facet_numel(x), inner = 1;
    if (dim >= 0 && x->ndim > 0) {
        n = x->sizes[dim];
        for (int d = 0; d < dim; d++) outer *= x->sizes[d];
        for (int d = dim + 1; d < x->ndim; d++) inner *= x->sizes[d];
    }
    if (facet_numel(out) != outer * inner || !facet_contiguous(out)) {
        char what[32] = "every dim";
        if (dim >= 0) snprintf(what, sizeof what, "dim %d", dim + 1);      /* counted from 1 */
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: out %s must be contiguous with %lld elements (reducing %s of %s)",
                          fn, facet_desc(out), (long long)(outer * inner), what, facet_desc(x));
    }
    if (n == 0 && op != FACET_REDUCE_SUM && op != FACET_REDUCE_SUMSQ)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: reducing an empty dim of %s has no value", fn, facet_desc(x));
    if (outer * inner == 0) return 0;
    /* 16-bit floats: reduced from a float32 copy (exact), accumulating as
     * float32 does; a 16-bit out gets the float32 result rounded once */
    facet_tensor *xc = NULL, *oc = NULL;
    rc = is_half(x->dtype) ? widened(&xc, x) : facet_contiguous_copy(&xc, x);
    if (!rc && is_half(out->dtype)) rc = facet_tensor_init(&oc, FACET_DTYPE_FLOAT32, out->device, out->ndim, out->sizes);
    facet_tensor *dst = oc ? oc : out;
    if (!rc) {
        if (x->device == FACET_DEVICE_CUDA)
            rc = facet_cuda_reduce(facet_ptr(dst), facet_ptr(xc), op, outer, n, inner, index_base);
        else
            reduce_cpu(facet_ptr(dst), facet_ptr(xc), op, outer, n, inner, index_base);
    }
    if (!rc && oc) rc = facet_tensor_copy(out, oc);
    facet_tensor_free(xc);
    facet_tensor_free(oc);
    return rc;
}

/* ---- sums of squares of a list (facet_tensor_sumsq_list) ---------------------------- */

/* tensors handed to the CUDA backend per call (arrays on the stack): a
 * multiple of tensor_list.cuh's 48 tensors a launch, so no launch runs short */
enum { LIST_BATCH = 240 };

/* The square sum of the complete gradient x + coef_r * w_r over rows x cols,
 * in parts over the threads merged in order, as reduce_cpu's long rows. */
static float sumsq_rows_cpu(const float *x, const float *coef, const float *w, int64_t rows, int64_t cols)
{
    const int op = FACET_REDUCE_SUMSQ;
    int threads = rows * cols >= FACET_PARALLEL_GRAIN ? facet_threads() : 1;
    struct facet_racc part[64];
    int parts = threads < 64 ? threads : 64;
    if (parts > rows) parts = (int)rows;
    if (parts < 1) parts = 1;
    int64_t chunk = (rows + parts - 1) / parts;
    #pragma omp parallel for schedule(static) num_threads(threads) if (parts > 1)
    for (int p = 0; p < parts; p++) {
        struct facet_racc a = facet_racc_init(op);
        int64_t end = (p + 1) * chunk < rows ? (p + 1) * chunk : rows;
        for (int64_t r = p * chunk; r < end; r++)
            for (int64_t c = 0; c < cols; c++) {
                int64_t e = r * cols + c;
                a = facet_racc_add(op, a, facet_madd_rn(coef[r], w[e], x[e]), e);
            }
        part[p] = a;
    }
    struct facet_racc a = part[0];
    for (int p = 1; p < parts; p++) a = facet_racc_merge(op, a, part[p]);
    float v;
    facet_racc_store(&v, op, 0, a, rows * cols, 0);
    return v;
}

/* list element name[k] as an error unless it is a live float32 contiguous
 * tensor on `device`; the name is only formatted on failure */
static int check_listed(const char *fn, const char *name, int k, const facet_tensor *t, int device)
{
    if (t && !facet_check_tensor(fn, name, t) && t->dtype == FACET_DTYPE_FLOAT32 && facet_contiguous(t) &&
        t->device == device)
        return 0;
    char what[48];
    snprintf(what, sizeof what, "%s[%d]", name, k);
    int rc = facet_check_tensor(fn, what, t);
    if (rc) return rc;
    return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s %s must be contiguous float32 on the device of out", fn, what,
                      facet_desc(t));
}

/* rows of a parameter as the SGD update sees them: a 2-D tensor's, else one */
static int64_t rows_of(const facet_tensor *t) { return t->ndim == 2 ? t->sizes[0] : 1; }

int facet_tensor_sumsq_list(facet_tensor *out, facet_tensor *const *xs, facet_tensor *const *row_coefs,
                            facet_tensor *const *params, int n)
{
    static const char *fn = "facet_tensor_sumsq_list";
    int rc = facet_check_dtype(fn, "out", out, FACET_DTYPE_FLOAT32);
    if (rc) return rc;
    if (n < 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: n is %d, want >= 0", fn, n);
    if (n > 0 && !xs) return facet_fail(FACET_STATUS_ERR_ARG, "%s: xs is NULL", fn);
    if (row_coefs && !params) return facet_fail(FACET_STATUS_ERR_ARG, "%s: row_coefs without params", fn);
    if (facet_numel(out) != n || !facet_contiguous(out))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: out %s must be contiguous with n = %d elements", fn,
                          facet_desc(out), n);
    /* everything checked before anything is written */
    for (int k = 0; k < n; k++) {
        const facet_tensor *x = xs[k];
        if ((rc = check_listed(fn, "xs", k, x, out->device)) != 0) return rc;
        if (x->storage == out->storage)
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: out %s shares memory with xs[%d]", fn, facet_desc(out), k);
        const facet_tensor *coef = row_coefs ? row_coefs[k] : NULL;
        if (!coef) continue;
        const facet_tensor *w = params[k];
        if ((rc = check_listed(fn, "row_coefs", k, coef, out->device)) != 0) return rc;
        if ((rc = check_listed(fn, "params", k, w, out->device)) != 0) return rc;
        if (!facet_same_shape(w, x))
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: params[%d] %s and xs[%d] %s differ in shape", fn, k,
                              facet_desc(w), k, facet_desc(x));
        if (facet_numel(coef) != rows_of(w))
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: row_coefs[%d] %s must have one value per row of params[%d] "
                              "%s (%lld)", fn, k, facet_desc(coef), k, facet_desc(w), (long long)rows_of(w));
        if (coef->storage == out->storage)
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: out %s shares memory with row_coefs[%d]", fn,
                              facet_desc(out), k);
        if (w->storage == out->storage)
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: out %s shares memory with params[%d]", fn, facet_desc(out), k);
    }
    float *o = facet_ptr(out);
    if (n > 0 && out->device == FACET_DEVICE_CUDA) {
        const float *xp[LIST_BATCH], *cp[LIST_BATCH], *wp[LIST_BATCH];
        int64_t numel[LIST_BATCH], cols[LIST_BATCH];
        for (int k0 = 0; k0 < n && !rc; k0 += LIST_BATCH) {
            int m = n - k0 < LIST_BATCH ? n - k0 : LIST_BATCH;
            for (int j = 0; j < m; j++) {
                const facet_tensor *x = xs[k0 + j], *coef = row_coefs ? row_coefs[k0 + j] : NULL;
                xp[j] = facet_ptr(x);
                numel[j] = facet_numel(x);
                cp[j] = coef ? facet_ptr(coef) : NULL;
                wp[j] = coef ? facet_ptr(params[k0 + j]) : NULL;
                cols[j] = coef && numel[j] > 0 ? numel[j] / rows_of(params[k0 + j]) : 1;
            }
            rc = facet_cuda_sumsq_list(o + k0, xp, cp, wp, numel, cols, m);
        }
        return rc;
    }
    for (int k = 0; k < n; k++) {
        const facet_tensor *x = xs[k], *coef = row_coefs ? row_coefs[k] : NULL;
        int64_t numel = facet_numel(x);
        if (numel == 0) {
            o[k] = 0.0f;
        } else if (coef) {
            int64_t rows = rows_of(params[k]);
            o[k] = sumsq_rows_cpu(facet_ptr(x), facet_ptr(coef), facet_ptr(params[k]), rows, numel / rows);
        } else {
            /* the path of facet_tensor_reduce(..., FACET_REDUCE_SUMSQ, -1): the same bits */
            reduce_cpu(o + k, facet_ptr(x), FACET_REDUCE_SUMSQ, 1, numel, 1, 0);
        }
    }
    return 0;
}
