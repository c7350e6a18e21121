/*
 * dropout.c - dropout forward and backward. The mask is drawn with Philox
 * (facet_dropout_keep in activation_math.h), so a seed and offset fix it on
 * any device and thread count. x / out and grad_out / grad_x are float32,
 * float16 or bfloat16 (one dtype per call): a 16-bit result is the float32
 * one rounded once (half_layers.h), on the CPU and the GPU.
 */
#include "internal.h"
#include "activation_math.h"
#include "half_layers.h"

int facet_dropout_forward(facet_tensor *out, facet_tensor *mask, const facet_tensor *x, double p, uint64_t seed,
                          uint64_t offset)
{
    static const char *fn = "facet_dropout_forward";
    int rc = facet_check_act_pair(fn, "out", out, "x", x);
    if (!rc) rc = facet_check_dtype(fn, "mask", mask, FACET_DTYPE_UINT8);
    if (!rc) rc = facet_check_same_device(fn, mask, x);
    if (rc) return rc;
    if (facet_numel(mask) != facet_numel(x) || !facet_contiguous(mask))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: mask %s must match x %s", fn, facet_desc(mask), facet_desc(x));
    if (!(p >= 0.0 && p < 1.0)) return facet_fail(FACET_STATUS_ERR_ARG, "%s: p must be in [0, 1), got %g", fn, p);
    int64_t n = facet_numel(x);
    float scale = (float)(1.0 / (1.0 - p)), pf = (float)p;
    unsigned char *m = facet_ptr(mask);
    if (x->device == FACET_DEVICE_CUDA)
        return facet_cuda_dropout_forward(x->dtype, facet_ptr(out), m, facet_ptr(x), n, pf, scale, seed, offset);
    int ok = 1;
    facet_half_begin(x->dtype);
    const float *xp = facet_half_in(fn, x, 0, &ok);
    float *o = ok ? facet_half_out(fn, out, 1, &ok) : NULL;
    if (ok) {
        #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (n >= FACET_PARALLEL_GRAIN)
        for (int64_t i = 0; i < n; i++) {
            m[i] = facet_dropout_keep(seed, offset + (uint64_t)i, pf);
            o[i] = m[i] ? xp[i] * scale : 0.0f;
        }
    }
    return facet_half_finish(x->dtype, out, o, ok, 0);
}

int facet_dropout_backward(facet_tensor *grad_x, const facet_tensor *grad_out, const facet_tensor *mask, double p)
{
    static const char *fn = "facet_dropout_backward";
    int rc = facet_check_act_pair(fn, "grad_x", grad_x, "grad_out", grad_out);
    if (!rc) rc = facet_check_dtype(fn, "mask", mask, FACET_DTYPE_UINT8);
    if (!rc) rc = facet_check_same_device(fn, mask, grad_out);
    if (rc) return rc;
    if (facet_numel(mask) != facet_numel(grad_out) || !facet_contiguous(mask))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: mask %s must match %s", fn, facet_desc(mask), facet_desc(grad_out));
    if (!(p >= 0.0 && p < 1.0)) return facet_fail(FACET_STATUS_ERR_ARG, "%s: p must be in [0, 1), got %g", fn, p);
    int64_t n = facet_numel(grad_out);
    float scale = (float)(1.0 / (1.0 - p));
    const unsigned char *m = facet_ptr(mask);
    if (grad_out->device == FACET_DEVICE_CUDA)
        return facet_cuda_dropout_backward(grad_out->dtype, facet_ptr(grad_x), facet_ptr(grad_out), m, n, scale);
    int ok = 1;
    facet_half_begin(grad_out->dtype);
    const float *g = facet_half_in(fn, grad_out, 0, &ok);
    float *gx = ok ? facet_half_out(fn, grad_x, 1, &ok) : NULL;
    if (ok) {
        #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (n >= FACET_PARALLEL_GRAIN)
        for (int64_t i = 0; i < n; i++) gx[i] = m[i] ? g[i] * scale : 0.0f;
    }
    return facet_half_finish(grad_out->dtype, grad_x, gx, ok, 0);
}
