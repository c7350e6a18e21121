/*
 * softmax.c - softmax over the last dim (multi-head attention's scores) and
 * its backward, float32. Per row the maximum, then the numerators
 * exp(x - max) and their sum (in double, rounded once), then each numerator
 * times 1 / sum: layernorm_math.h's per-element formulas, which
 * core/cuda/softmax.cu shares.
 */
#include "internal.h"
#include "layernorm_math.h"

/* rows x cols of two contiguous float32 tensors of one shape (ndim >= 1) */
static int pair_rows(const char *fn, const char *an, const facet_tensor *a, const char *bn, const facet_tensor *b,
                     int64_t *rows, int64_t *cols)
{
    int rc = facet_check_float_pair(fn, an, a, bn, b);
    if (rc) return rc;
    if (b->ndim < 1) return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s %s must have at least one dim", fn, bn, facet_desc(b));
    *cols = b->sizes[b->ndim - 1];
    *rows = *cols > 0 ? facet_numel(b) / *cols : 0;
    return 0;
}

/* each numerator is computed once, stored, and scaled when the sum is known
 * (out may be x: a row is read before its first store) */
FACET_CLONES static void softmax_cpu(float *o, const float *xp, int64_t rows, int64_t cols)
{
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (rows * cols >= FACET_PARALLEL_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = xp + r * cols;
        float *orow = o + r * cols;
        float mx = xr[0];
        for (int64_t c = 1; c < cols; c++) mx = xr[c] > mx ? xr[c] : mx;
        double s = 0.0;
        #pragma omp simd reduction(+:s)
        for (int64_t c = 0; c < cols; c++) {
            float e = facet_softmax_exp(xr[c], mx);
            orow[c] = e;
            s += e;
        }
        float inv = (float)(1.0 / s);
        #pragma omp simd
        for (int64_t c = 0; c < cols; c++) orow[c] = facet_softmax_out(orow[c], inv);
    }
}

FACET_CLONES static void softmax_backward_cpu(float *gx, const float *g, const float *y, int64_t rows, int64_t cols)
{
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (rows * cols >= FACET_PARALLEL_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *gr = g + r * cols, *yr = y + r * cols;
        double dot = 0.0;
        #pragma omp simd reduction(+:dot)
        for (int64_t c = 0; c < cols; c++) dot += (double)gr[c] * yr[c];
        float d = (float)dot;
        float *o = gx + r * cols;
        #pragma omp simd
        for (int64_t c = 0; c < cols; c++) o[c] = facet_softmax_grad_x(gr[c], yr[c], d);
    }
}

int facet_softmax_forward(facet_tensor *out, const facet_tensor *x)
{
    static const char *fn = "facet_softmax_forward";
    int64_t rows = 0, cols = 0;
    int rc = pair_rows(fn, "out", out, "x", x, &rows, &cols);
    if (rc) return rc;
    if (rows == 0 || cols == 0) return 0;
    if (x->device == FACET_DEVICE_CUDA) return facet_cuda_softmax_forward(facet_ptr(out), facet_ptr(x), rows, cols);
    softmax_cpu(facet_ptr(out), facet_ptr(x), rows, cols);
    return 0;
}

int facet_softmax_backward(facet_tensor *grad_x, const facet_tensor *grad_out, const facet_tensor *out)
{
    static const char *fn = "facet_softmax_backward";
    int64_t rows = 0, cols = 0;
    int rc = pair_rows(fn, "grad_out", grad_out, "out", out, &rows, &cols);
    if (!rc) rc = facet_check_float_pair(fn, "grad_x", grad_x, "out", out);
    if (rc) return rc;
    if (rows == 0 || cols == 0) return 0;
    if (out->device == FACET_DEVICE_CUDA)
        return facet_cuda_softmax_backward(facet_ptr(grad_x), facet_ptr(grad_out), facet_ptr(out), rows, cols);
    softmax_backward_cpu(facet_ptr(grad_x), facet_ptr(grad_out), facet_ptr(out), rows, cols);
    return 0;
}
