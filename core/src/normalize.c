/*
 * normalize.c - row-wise L2 normalisation, the first step of every
 * normalised face-recognition head (features and class centres).
 */
#include "internal.h"
#include "elementwise_math.h"
#include <math.h>

int facet_tensor_l2_normalize(facet_tensor *out, facet_tensor *norms, const facet_tensor *x, float eps)
{
    static const char *fn = "facet_tensor_l2_normalize";
    int rc = facet_check_dtype(fn, "out", out, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_dtype(fn, "x", x, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_same_device(fn, out, x);
    if (!rc && norms) rc = facet_check_dtype(fn, "norms", norms, FACET_DTYPE_FLOAT32);
    if (!rc && norms) rc = facet_check_same_device(fn, norms, x);
    if (rc) return rc;
    if (x->ndim != 2 || !facet_same_shape(out, x) || !facet_contiguous(out))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: want 2-D x and a contiguous out of its shape; got x %s, out %s", fn,
                          facet_desc(x), facet_desc(out));
    int64_t rows = x->sizes[0], cols = x->sizes[1];
    if (norms && (facet_numel(norms) != rows || !facet_contiguous(norms)))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: norms %s must be contiguous with %lld elements", fn,
                          facet_desc(norms), (long long)rows);
    if (!(eps >= 0.0f)) return facet_fail(FACET_STATUS_ERR_ARG, "%s: eps %g must be >= 0", fn, (double)eps);
    facet_tensor *xc = NULL;
    rc = facet_contiguous_copy(&xc, x);
    if (rc) return rc;
    const float *xp = facet_ptr(xc);
    float *op = facet_ptr(out), *np = norms ? facet_ptr(norms) : NULL;
    if (x->device == FACET_DEVICE_CUDA) {
        rc = facet_cuda_l2_normalize_rows(op, np, xp, rows, cols, eps);
    } else {
        #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (rows * cols >= FACET_PARALLEL_GRAIN)
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = xp + r * cols;
            double ss = 0.0;
            for (int64_t c = 0; c < cols; c++) ss += (double)xr[c] * xr[c];
            float s = facet_l2_scale((float)ss, eps);
            for (int64_t c = 0; c < cols; c++) op[r * cols + c] = xr[c] * s;
            if (np) np[r] = sqrtf((float)ss);
        }
    }
    facet_tensor_free(xc);
    return rc;
}

static int check_vector(const char *fn, const char *name, const facet_tensor *t, int64_t n, const facet_tensor *like)
{
    int rc = facet_check_dtype(fn, name, t, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_same_device(fn, t, like);
    if (rc) return rc;
    if (facet_numel(t) != n || !facet_contiguous(t))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s must be contiguous with %lld values, got %s", fn, name, (long long)n,
                          facet_desc(t));
    return 0;
}

FACET_CLONES static void row_norms_cpu(float *op, const float *xp, int64_t rows, int64_t cols)
{
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (rows * cols >= FACET_PARALLEL_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = xp + r * cols;
        float ss = 0.0f;
        #pragma omp simd reduction(+:ss)
        for (int64_t c = 0; c < cols; c++) ss += xr[c] * xr[c];
        op[r] = sqrtf(ss);
    }
}

FACET_CLONES static void rows_axpy_cpu(float *o, const float *cp, const float *xp, int64_t rows, int64_t cols)
{
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (rows * cols >= FACET_PARALLEL_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        float a = cp[r];
        if (a == 0.0f) continue;
        #pragma omp simd
        for (int64_t c = 0; c < cols; c++) o[r * cols + c] += a * xp[r * cols + c];
    }
}

int facet_tensor_row_norms(facet_tensor *out, const facet_tensor *x)
{
    static const char *fn = "facet_tensor_row_norms";
    int rc = facet_check_matrix(fn, "x", x);
    if (!rc) rc = check_vector(fn, "out", out, x->sizes[0], x);
    if (rc) return rc;
    int64_t rows = x->sizes[0], cols = x->sizes[1];
    const float *xp = facet_ptr(x);
    float *op = facet_ptr(out);
    if (x->device == FACET_DEVICE_CUDA) return facet_cuda_row_norms(op, xp, rows, cols);
    row_norms_cpu(op, xp, rows, cols);
    return 0;
}

int facet_tensor_l2_normalize_backward(facet_tensor *dx, const facet_tensor *dy, const facet_tensor *y,
                                const facet_tensor *norms, float eps)
{
    static const char *fn = "facet_tensor_l2_normalize_backward";
    int rc = facet_check_matrix(fn, "dx", dx);
    if (!rc) rc = facet_check_matrix(fn, "dy", dy);
    if (!rc) rc = facet_check_matrix(fn, "y", y);
    if (!rc) rc = facet_check_same_device(fn, dx, dy);
    if (!rc) rc = facet_check_same_device(fn, dx, y);
    if (rc) return rc;
    if (!facet_same_shape(dx, dy) || !facet_same_shape(dx, y))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: shapes differ: dx %s, dy %s, y %s", fn, facet_desc(dx), facet_desc(dy),
                          facet_desc(y));
    rc = check_vector(fn, "norms", norms, dx->sizes[0], dx);
    if (rc) return rc;
    int64_t rows = dx->sizes[0], cols = dx->sizes[1];
    float *d = facet_ptr(dx);
    const float *g = facet_ptr(dy), *yp = facet_ptr(y), *np = facet_ptr(norms);
    if (dx->device == FACET_DEVICE_CUDA) return facet_cuda_l2_normalize_backward(d, g, yp, np, rows, cols, eps);
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (rows * cols >= FACET_PARALLEL_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *gr = g + r * cols, *yr = yp + r * cols;
        double dot = 0.0;
        for (int64_t c = 0; c < cols; c++) dot += (double)gr[c] * yr[c];
        float inv = 1.0f / fmaxf(np[r], eps), fd = (float)dot;
        /* a zero row has y = 0: the gradient is dy / eps, finite */
        for (int64_t c = 0; c < cols; c++) d[r * cols + c] = (gr[c] - fd * yr[c]) * inv;
    }
    return 0;
}

int facet_tensor_rows_axpy(facet_tensor *out, const facet_tensor *coef, const facet_tensor *x)
{
    static const char *fn = "facet_tensor_rows_axpy";
    int rc = facet_check_matrix(fn, "out", out);
    if (!rc) rc = facet_check_matrix(fn, "x", x);
    if (!rc) rc = facet_check_same_device(fn, out, x);
    if (rc) return rc;
    if (!facet_same_shape(out, x))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: shapes differ: out %s, x %s", fn, facet_desc(out), facet_desc(x));
    rc = check_vector(fn, "coef", coef, out->sizes[0], out);
    if (rc) return rc;
    int64_t rows = out->sizes[0], cols = out->sizes[1];
    float *o = facet_ptr(out);
    const float *cp = facet_ptr(coef), *xp = facet_ptr(x);
    if (out->device == FACET_DEVICE_CUDA) return facet_cuda_rows_axpy(o, cp, xp, rows, cols);
    rows_axpy_cpu(o, cp, xp, rows, cols);
    return 0;
}
