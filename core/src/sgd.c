/*
 * sgd.c - the fused SGD update (facet_sgd_step in facet.h): one pass over the
 * parameter, its gradient and momentum, with an optional per-row gradient
 * correction and the row norms of the result, so a cosine head's W-norm and
 * radial-correction passes cost nothing extra.
 */
#include "internal.h"
#include "sgd_math.h"
#include <math.h>

FACET_CLONES static void sgd_rows(const struct facet_sgd_params *p, float *w, float *g, float *buf, const float *coef,
                                  float *norms, int64_t rows, int64_t cols)
{
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (rows * cols >= FACET_PARALLEL_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        float *wr = w + r * cols, *gr = g + r * cols, *br = buf ? buf + r * cols : NULL;
        float a = coef ? coef[r] : 0.0f, ss = 0.0f;
        if (br) {
            #pragma omp simd reduction(+:ss)
            for (int64_t c = 0; c < cols; c++) {
                float nw = facet_sgd_update_row(p, wr[c], gr[c], a, &br[c]);
                wr[c] = nw;
                ss += nw * nw;
                if (p->zero_grad) gr[c] = 0.0f;
            }
        } else {
            #pragma omp simd reduction(+:ss)
            for (int64_t c = 0; c < cols; c++) {
                float nw = facet_sgd_update_row(p, wr[c], gr[c], a, NULL);
                wr[c] = nw;
                ss += nw * nw;
                if (p->zero_grad) gr[c] = 0.0f;
            }
        }
        if (norms) norms[r] = sqrtf(ss);
    }
}

int facet_sgd_step(facet_tensor *param, facet_tensor *grad, facet_tensor *buf, const facet_tensor *row_coef,
                   facet_tensor *row_norms, double lr, double momentum, double dampening, double weight_decay,
                   int flags)
{
    static const char *fn = "facet_sgd_step";
    int rc = facet_check_dtype(fn, "param", param, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_dtype(fn, "grad", grad, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_same_device(fn, param, grad);
    if (rc) return rc;
    if (!facet_same_shape(param, grad) || !facet_contiguous(param) || !facet_contiguous(grad))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: param %s and grad %s must be contiguous with one shape", fn,
                          facet_desc(param), facet_desc(grad));
    int64_t rows = param->ndim == 2 ? param->sizes[0] : 1;
    int64_t cols = param->ndim == 2 ? param->sizes[1] : facet_numel(param);
    if (buf) {
        rc = facet_check_dtype(fn, "buf", buf, FACET_DTYPE_FLOAT32);
        if (!rc) rc = facet_check_same_device(fn, param, buf);
        if (rc) return rc;
        if (!facet_same_shape(param, buf) || !facet_contiguous(buf))
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: buf %s must match param %s", fn, facet_desc(buf), facet_desc(param));
    } else if (momentum != 0.0) {
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: momentum %g needs a buffer", fn, momentum);
    }
    const facet_tensor *vecs[2] = { row_coef, row_norms };
    for (int k = 0; k < 2; k++) {
        if (!vecs[k]) continue;
        rc = facet_check_dtype(fn, k ? "row_norms" : "row_coef", vecs[k], FACET_DTYPE_FLOAT32);
        if (!rc) rc = facet_check_same_device(fn, param, vecs[k]);
        if (rc) return rc;
        if (facet_numel(vecs[k]) != rows || !facet_contiguous(vecs[k]))
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s must have %lld values, got %s", fn, k ? "row_norms" : "row_coef",
                              (long long)rows, facet_desc(vecs[k]));
    }
    if (!(lr >= 0) || !(momentum >= 0) || !(dampening >= 0 && dampening <= 1) || !(weight_decay >= 0))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: want lr, momentum, weight_decay >= 0 and dampening in [0, 1]; got "
                          "%g, %g, %g, %g", fn, lr, momentum, weight_decay, dampening);
    if ((flags & FACET_SGD_FLAG_NESTEROV) && (momentum <= 0 || dampening != 0))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: Nesterov needs momentum > 0 and no dampening", fn);
    struct facet_sgd_params p = { (float)lr, (float)momentum, (float)dampening, (float)weight_decay,
                                  (flags & FACET_SGD_FLAG_NESTEROV) != 0, (flags & FACET_SGD_FLAG_FIRST_STEP) != 0,
                                  (flags & FACET_SGD_FLAG_ZERO_GRAD) != 0 };
    float *w = facet_ptr(param), *g = facet_ptr(grad), *b = buf ? facet_ptr(buf) : NULL;
    const float *coef = row_coef ? facet_ptr(row_coef) : NULL;
    float *norms = row_norms ? facet_ptr(row_norms) : NULL;
    if (param->device == FACET_DEVICE_CUDA) return facet_cuda_sgd_step(&p, w, g, b, coef, norms, rows, cols);
    sgd_rows(&p, w, g, b, coef, norms, rows, cols);
    return 0;
}
