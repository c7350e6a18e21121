/*
 * layernorm.c - LayerNorm over the last dim (the Vision Transformer's norm1,
 * norm2 and final norm) and its backward, float32. A row's mean and
 * variance are summed in double and rounded once; the per-element formulas
 * are layernorm_math.h's, which core/cuda/layernorm.cu shares. The weight and
 * bias gradients are column sums over the rows, taken in a fixed order (row
 * blocks of LN_ROW_BLOCK in turn), so they do not depend on the threads.
 */
#include "internal.h"
#include "layernorm_math.h"
#include <stdlib.h>

enum { LN_COL_BLOCK = 64 };     /* columns a thread sums in the parameter gradients */

/* rows x cols of a contiguous float32 tensor of at least one dim */
static int row_layout(const char *fn, const char *name, const facet_tensor *t, int64_t *rows, int64_t *cols)
{
    int rc = facet_check_dtype(fn, name, t, FACET_DTYPE_FLOAT32);
    if (rc) return rc;
    if (t->ndim < 1 || !facet_contiguous(t))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s %s must be contiguous with at least one dim", fn, name,
                          facet_desc(t));
    *cols = t->sizes[t->ndim - 1];
    *rows = *cols > 0 ? facet_numel(t) / *cols : 0;
    return 0;
}

/* a contiguous float32 vector of n values on x's device; NULL passes when optional */
static int check_vec(const char *fn, const char *name, const facet_tensor *t, int64_t n, const facet_tensor *x)
{
    int rc = facet_check_dtype(fn, name, t, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_same_device(fn, t, x);
    if (rc) return rc;
    if (facet_numel(t) != n || !facet_contiguous(t))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s %s must be contiguous with %lld values for x %s", fn, name,
                          facet_desc(t), (long long)n, facet_desc(x));
    return 0;
}

FACET_CLONES static void ln_forward_cpu(float *o, float *sm, float *si, const float *xp, const float *w,
                                        const float *b, int64_t rows, int64_t cols, double eps)
{
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (rows * cols >= FACET_PARALLEL_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = xp + r * cols;
        float *orow = o + r * cols;
        double s = 0.0;
        for (int64_t c = 0; c < cols; c++) s += xr[c];
        double mean = s / (double)cols, ss = 0.0;
        for (int64_t c = 0; c < cols; c++) ss += ((double)xr[c] - mean) * ((double)xr[c] - mean);
        float m = (float)mean, inv = facet_ln_invstd(ss / (double)cols, eps);
        if (w) {
            #pragma omp simd
            for (int64_t c = 0; c < cols; c++) orow[c] = facet_ln_out(xr[c], m, inv, w[c], b[c]);
        } else {
            #pragma omp simd
            for (int64_t c = 0; c < cols; c++) orow[c] = facet_ln_out(xr[c], m, inv, 1.0f, 0.0f);
        }
        if (sm) sm[r] = m;
        if (si) si[r] = inv;
    }
}

int facet_layernorm_forward(facet_tensor *out, facet_tensor *save_mean, facet_tensor *save_invstd,
                            const facet_tensor *x, const facet_tensor *weight, const facet_tensor *bias, double eps)
{
    static const char *fn = "facet_layernorm_forward";
    int64_t rows = 0, cols = 0;
    int rc = row_layout(fn, "x", x, &rows, &cols);
    if (!rc) rc = facet_check_float_pair(fn, "out", out, "x", x);
    if (!rc && save_mean) rc = check_vec(fn, "save_mean", save_mean, rows, x);
    if (!rc && save_invstd) rc = check_vec(fn, "save_invstd", save_invstd, rows, x);
    if (rc) return rc;
    if ((weight == NULL) != (bias == NULL))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: weight and bias must both be given or both be NULL", fn);
    if (weight) {
        rc = check_vec(fn, "weight", weight, cols, x);
        if (!rc) rc = check_vec(fn, "bias", bias, cols, x);
        if (rc) return rc;
    }
    if (!(eps >= 0.0 && eps <= 1e30))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: eps %g must be finite and >= 0", fn, eps);
    if (rows == 0 || cols == 0) return 0;
    const float *w = weight ? facet_ptr(weight) : NULL, *b = bias ? facet_ptr(bias) : NULL;
    float *sm = save_mean ? facet_ptr(save_mean) : NULL, *si = save_invstd ? facet_ptr(save_invstd) : NULL;
    if (x->device == FACET_DEVICE_CUDA)
        return facet_cuda_layernorm_forward(facet_ptr(out), sm, si, facet_ptr(x), w, b, rows, cols, eps);
    ln_forward_cpu(facet_ptr(out), sm, si, facet_ptr(x), w, b, rows, cols, eps);
    return 0;
}

FACET_CLONES static void ln_grad_x_cpu(float *gx, const float *g, const float *xp, const float *sm, const float *si,
                                       const float *w, int64_t rows, int64_t cols)
{
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (rows * cols >= FACET_PARALLEL_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *gr = g + r * cols, *xr = xp + r * cols;
        float m = sm[r], inv = si[r];
        double s1 = 0.0, s2 = 0.0;
        for (int64_t c = 0; c < cols; c++) {
            float gw = gr[c] * (w ? w[c] : 1.0f);
            s1 += gw;
            s2 += (double)gw * ((xr[c] - m) * inv);
        }
        float m1 = (float)(s1 / (double)cols), m2 = (float)(s2 / (double)cols);
        float *d = gx + r * cols;
        for (int64_t c = 0; c < cols; c++)
            d[c] = facet_ln_grad_x(gr[c] * (w ? w[c] : 1.0f), (xr[c] - m) * inv, inv, m1, m2);
    }
}

/* column sums over the rows: gw[c] += sum g * xhat, gb[c] += sum g; each
 * thread owns LN_COL_BLOCK columns and walks the rows in order */
FACET_CLONES static void ln_grad_params_cpu(float *gw, float *gb, const float *g, const float *xp, const float *sm,
                                            const float *si, int64_t rows, int64_t cols)
{
    int64_t blocks = (cols + LN_COL_BLOCK - 1) / LN_COL_BLOCK;
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (rows * cols >= FACET_PARALLEL_GRAIN)
    for (int64_t cb = 0; cb < blocks; cb++) {
        int64_t c0 = cb * LN_COL_BLOCK, n = cols - c0 < LN_COL_BLOCK ? cols - c0 : LN_COL_BLOCK;
        double aw[LN_COL_BLOCK] = { 0 }, ab[LN_COL_BLOCK] = { 0 };
        for (int64_t r = 0; r < rows; r++) {
            const float *gr = g + r * cols + c0, *xr = xp + r * cols + c0;
            float m = sm[r], inv = si[r];
            for (int64_t k = 0; k < n; k++) {
                aw[k] += (double)gr[k] * ((xr[k] - m) * inv);
                ab[k] += gr[k];
            }
        }
        for (int64_t k = 0; k < n; k++) {
            if (gw) gw[c0 + k] += (float)aw[k];
            if (gb) gb[c0 + k] += (float)ab[k];
        }
    }
}

int facet_layernorm_backward(facet_tensor *grad_x, facet_tensor *grad_weight, facet_tensor *grad_bias,
                             const facet_tensor *grad_out, const facet_tensor *x, const facet_tensor *save_mean,
                             const facet_tensor *save_invstd, const facet_tensor *weight)
{
    static const char *fn = "facet_layernorm_backward";
    int64_t rows = 0, cols = 0;
    int rc = row_layout(fn, "x", x, &rows, &cols);
    if (!rc) rc = facet_check_float_pair(fn, "grad_out", grad_out, "x", x);
    if (!rc && grad_x) rc = facet_check_float_pair(fn, "grad_x", grad_x, "x", x);
    if (!rc) rc = check_vec(fn, "save_mean", save_mean, rows, x);
    if (!rc) rc = check_vec(fn, "save_invstd", save_invstd, rows, x);
    if (!rc && weight) rc = check_vec(fn, "weight", weight, cols, x);
    if (!rc && grad_weight) rc = check_vec(fn, "grad_weight", grad_weight, cols, x);
    if (!rc && grad_bias) rc = check_vec(fn, "grad_bias", grad_bias, cols, x);
    if (rc) return rc;
    if ((grad_weight || grad_bias) && !weight)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: grad_weight and grad_bias need the affine weight", fn);
    if (rows == 0 || cols == 0) return 0;
    const float *g = facet_ptr(grad_out), *xp = facet_ptr(x), *sm = facet_ptr(save_mean);
    const float *si = facet_ptr(save_invstd), *w = weight ? facet_ptr(weight) : NULL;
    float *gw = grad_weight ? facet_ptr(grad_weight) : NULL, *gb = grad_bias ? facet_ptr(grad_bias) : NULL;
    float *gx = grad_x ? facet_ptr(grad_x) : NULL;
    if (x->device == FACET_DEVICE_CUDA)
        return facet_cuda_layernorm_backward(gx, gw, gb, g, xp, sm, si, w, rows, cols);
    /* the parameter sums first: grad_x may be grad_out's storage */
    if (gw || gb) ln_grad_params_cpu(gw, gb, g, xp, sm, si, rows, cols);
    if (gx) ln_grad_x_cpu(gx, g, xp, sm, si, w, rows, cols);
    return 0;
}
