/*
 * sgd.c - the fused SGD update (facet_sgd_step in facet.h): one pass over the
 * parameter, its gradient and momentum, with an optional per-row gradient
 * correction and the row norms of the result, so a cosine head's W-norm and
 * radial-correction passes cost nothing extra; and the same update of a list
 * of parameters in one call (facet_sgd_step_list: on CUDA one launch per 48).
 */
#include "internal.h"
#include "sgd_math.h"
#include <math.h>
#include <stdio.h>

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

/* the settings shared by every parameter of an update */
static int check_settings(const char *fn, double lr, double momentum, double dampening, int flags)
{
    if (!(lr >= 0) || !(momentum >= 0) || !(dampening >= 0 && dampening <= 1))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: want lr, momentum >= 0 and dampening in [0, 1]; got %g, %g, %g",
                          fn, lr, momentum, dampening);
    if ((flags & FACET_SGD_FLAG_NESTEROV) && (momentum <= 0 || dampening != 0))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: Nesterov needs momentum > 0 and no dampening", fn);
    return 0;
}

/* param, grad and buf of one parameter (buf may be NULL without momentum) */
static int check_param(const char *fn, const facet_tensor *param, const facet_tensor *grad, const facet_tensor *buf,
                       double momentum)
{
    int rc = facet_check_dtype(fn, "param", param, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_dtype(fn, "grad", grad, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_same_device(fn, param, grad);
    if (rc) return rc;
    if (!facet_same_shape(param, grad) || !facet_contiguous(param) || !facet_contiguous(grad))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: param %s and grad %s must be contiguous with one shape", fn,
                          facet_desc(param), facet_desc(grad));
    if (buf) {
        rc = facet_check_dtype(fn, "buf", buf, FACET_DTYPE_FLOAT32);
        if (!rc) rc = facet_check_same_device(fn, param, buf);
        if (rc) return rc;
        if (!facet_same_shape(param, buf) || !facet_contiguous(buf))
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: buf %s must match param %s", fn, facet_desc(buf), facet_desc(param));
    } else if (momentum != 0.0) {
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: momentum %g needs a buffer", fn, momentum);
    }
    return 0;
}

static struct facet_sgd_params params_of(double lr, double momentum, double dampening, double weight_decay, int flags)
{
    struct facet_sgd_params p = { (float)lr, (float)momentum, (float)dampening, (float)weight_decay,
                                  (flags & FACET_SGD_FLAG_NESTEROV) != 0, (flags & FACET_SGD_FLAG_FIRST_STEP) != 0,
                                  (flags & FACET_SGD_FLAG_ZERO_GRAD) != 0 };
    return p;
}

int facet_sgd_step(facet_tensor *param, facet_tensor *grad, facet_tensor *buf, const facet_tensor *row_coef,
                   facet_tensor *row_norms, double lr, double momentum, double dampening, double weight_decay,
                   int flags)
{
    static const char *fn = "facet_sgd_step";
    int rc = check_param(fn, param, grad, buf, momentum);
    if (rc) return rc;
    int64_t rows = param->ndim == 2 ? param->sizes[0] : 1;
    int64_t cols = param->ndim == 2 ? param->sizes[1] : facet_numel(param);
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
    if (!(weight_decay >= 0))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: want weight_decay >= 0, got %g", fn, weight_decay);
    rc = check_settings(fn, lr, momentum, dampening, flags);
    if (rc) return rc;
    struct facet_sgd_params p = params_of(lr, momentum, dampening, weight_decay, flags);
    float *w = facet_ptr(param), *g = facet_ptr(grad), *b = buf ? facet_ptr(buf) : NULL;
    const float *coef = row_coef ? facet_ptr(row_coef) : NULL;
    float *norms = row_norms ? facet_ptr(row_norms) : NULL;
    if (param->device == FACET_DEVICE_CUDA) return facet_cuda_sgd_step(&p, w, g, b, coef, norms, rows, cols);
    sgd_rows(&p, w, g, b, coef, norms, rows, cols);
    return 0;
}

/* parameters handed to the CUDA backend per call (arrays on the stack): a
 * multiple of tensor_list.cuh's 48 tensors a launch, so no launch runs short */
enum { LIST_BATCH = 240 };

int facet_sgd_step_list(facet_tensor *const *params, facet_tensor *const *grads, facet_tensor *const *bufs,
                        const double *weight_decays, int n, double lr, double momentum, double dampening, int flags)
{
    static const char *fn = "facet_sgd_step_list";
    if (n < 0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: n is %d, want >= 0", fn, n);
    if (n > 0 && (!params || !grads || !weight_decays))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: params, grads and weight_decays must not be NULL", fn);
    if (!bufs && momentum != 0.0) return facet_fail(FACET_STATUS_ERR_ARG, "%s: momentum %g needs bufs", fn, momentum);
    int rc = check_settings(fn, lr, momentum, dampening, flags);
    if (rc) return rc;
    /* everything checked before any parameter is written */
    for (int k = 0; k < n; k++) {
        rc = facet_check_list_param(fn, check_param(fn, params[k], grads[k], bufs ? bufs[k] : NULL, momentum), params[k],
                                    params[0], weight_decays[k], k);
        if (rc) return rc;
    }
    struct facet_sgd_params p = params_of(lr, momentum, dampening, 0.0, flags);
    if (n > 0 && params[0]->device == FACET_DEVICE_CUDA) {
        float *w[LIST_BATCH], *g[LIST_BATCH], *b[LIST_BATCH], wd[LIST_BATCH];
        int64_t numel[LIST_BATCH];
        for (int k0 = 0; k0 < n && !rc; k0 += LIST_BATCH) {
            int m = n - k0 < LIST_BATCH ? n - k0 : LIST_BATCH;
            for (int j = 0; j < m; j++) {
                w[j] = facet_ptr(params[k0 + j]);
                g[j] = facet_ptr(grads[k0 + j]);
                b[j] = bufs && bufs[k0 + j] ? facet_ptr(bufs[k0 + j]) : NULL;
                wd[j] = (float)weight_decays[k0 + j];
                numel[j] = facet_numel(params[k0 + j]);
            }
            rc = facet_cuda_sgd_step_list(&p, w, g, b, wd, numel, m);
        }
        return rc;
    }
    for (int k = 0; k < n; k++) {
        const facet_tensor *w = params[k];
        p.weight_decay = (float)weight_decays[k];
        int64_t rows = w->ndim == 2 ? w->sizes[0] : 1;
        int64_t cols = w->ndim == 2 ? w->sizes[1] : facet_numel(w);
        sgd_rows(&p, facet_ptr(w), facet_ptr(grads[k]), bufs && bufs[k] ? facet_ptr(bufs[k]) : NULL, NULL, NULL, rows,
                 cols);
    }
    return 0;
}
