/*
 * normalize.c - row-wise L2 normalisation, the first step of every
 * normalised face-recognition head (features and class centres).
 */
#include "internal.h"
#include "elementwise_math.h"
#include <math.h>

int facet_l2_normalize_rows(facet_tensor *out, facet_tensor *norms, const facet_tensor *x, float eps)
{
    static const char *fn = "facet_l2_normalize_rows";
    int rc = facet_check_dtype(fn, "out", out, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_dtype(fn, "x", x, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_same_device(fn, out, x);
    if (!rc && norms) rc = facet_check_dtype(fn, "norms", norms, FACET_DTYPE_FLOAT32);
    if (!rc && norms) rc = facet_check_same_device(fn, norms, x);
    if (rc) return rc;
    if (x->ndim != 2 || !facet_same_shape(out, x) || !facet_contiguous(out))
        return facet_fail(FACET_ERR_ARG, "%s: want 2-D x and a contiguous out of its shape; got x %s, out %s", fn,
                          facet_desc(x), facet_desc(out));
    int64_t rows = x->sizes[0], cols = x->sizes[1];
    if (norms && (facet_numel(norms) != rows || !facet_contiguous(norms)))
        return facet_fail(FACET_ERR_ARG, "%s: norms %s must be contiguous with %lld elements", fn,
                          facet_desc(norms), (long long)rows);
    if (!(eps >= 0.0f)) return facet_fail(FACET_ERR_ARG, "%s: eps %g must be >= 0", fn, (double)eps);
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
