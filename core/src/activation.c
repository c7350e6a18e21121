/*
 * activation.c - ReLU, sigmoid, tanh and per-channel PReLU with their
 * gradients, and dropout (Philox masks, so a seed fixes them on any device
 * and thread count). The per-element math is activation_math.h.
 */
#include "internal.h"
#include "activation_math.h"
#include <stdlib.h>

/* channel count and inner size for per-channel slopes: N x C [x H x W] */
static void channel_layout(const facet_tensor *x, int64_t *channels, int64_t *inner)
{
    *channels = x->ndim >= 2 ? x->sizes[1] : 1;
    *inner = 1;
    for (int d = 2; d < x->ndim; d++) *inner *= x->sizes[d];
}

static int check_same(const char *fn, const char *an, const facet_tensor *a, const char *bn, const facet_tensor *b)
{
    int rc = facet_check_dtype(fn, an, a, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_dtype(fn, bn, b, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_same_device(fn, a, b);
    if (rc) return rc;
    if (!facet_same_shape(a, b) || !facet_contiguous(a) || !facet_contiguous(b))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s %s and %s %s must be contiguous with one shape", fn, an,
                          facet_desc(a), bn, facet_desc(b));
    return 0;
}

static int check_slope(const char *fn, const facet_tensor *slope, const facet_tensor *x, int64_t channels)
{
    int rc = facet_check_dtype(fn, "slope", slope, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_same_device(fn, slope, x);
    if (rc) return rc;
    int64_t n = facet_numel(slope);
    if ((n != channels && n != 1) || !facet_contiguous(slope))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: slope %s must have 1 or %lld values for x %s", fn, facet_desc(slope),
                          (long long)channels, facet_desc(x));
    return 0;
}

/* Plane by plane (one channel of one sample): the slope is constant along the
 * contiguous inner loop, which vectorises with no index arithmetic. */
FACET_CLONES static void act_forward_cpu(float *o, const float *xp, int64_t n, int act, const float *sp, int64_t ns,
                                         int64_t channels, int64_t inner)
{
    int64_t planes = n / inner;
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (n >= FACET_PARALLEL_GRAIN)
    for (int64_t pl = 0; pl < planes; pl++) {
        float s = sp ? sp[ns == 1 ? 0 : pl % channels] : 0.0f;
        const float *xr = xp + pl * inner;
        float *orow = o + pl * inner;
        /* one loop per activation: a switch inside would stop vectorisation */
        switch (act) {
        case FACET_ACTIVATION_RELU:
            #pragma omp simd
            for (int64_t k = 0; k < inner; k++) orow[k] = facet_act_forward(FACET_ACTIVATION_RELU, xr[k], s);
            break;
        case FACET_ACTIVATION_PRELU:
            #pragma omp simd
            for (int64_t k = 0; k < inner; k++) orow[k] = facet_act_forward(FACET_ACTIVATION_PRELU, xr[k], s);
            break;
        default:
            for (int64_t k = 0; k < inner; k++) orow[k] = facet_act_forward(act, xr[k], s);
            break;
        }
    }
}

FACET_CLONES static int act_backward_cpu(float *gx, float *gs, const float *g, const float *xp, const float *yp,
                                         int64_t n, int act, const float *sp, int64_t ns, int64_t channels,
                                         int64_t inner)
{
    int64_t planes = n / inner;
    if (gx) {
        #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (n >= FACET_PARALLEL_GRAIN)
        for (int64_t pl = 0; pl < planes; pl++) {
            float s = sp ? sp[ns == 1 ? 0 : pl % channels] : 0.0f;
            const float *gr = g + pl * inner, *xr = xp + pl * inner, *yr = yp ? yp + pl * inner : NULL;
            float *d = gx + pl * inner;
            switch (act) {
            case FACET_ACTIVATION_RELU:
                #pragma omp simd
                for (int64_t k = 0; k < inner; k++) d[k] = facet_act_backward(FACET_ACTIVATION_RELU, gr[k], xr[k], 0.0f, s);
                break;
            case FACET_ACTIVATION_PRELU:
                #pragma omp simd
                for (int64_t k = 0; k < inner; k++) d[k] = facet_act_backward(FACET_ACTIVATION_PRELU, gr[k], xr[k], 0.0f, s);
                break;
            case FACET_ACTIVATION_SIGMOID:
                #pragma omp simd
                for (int64_t k = 0; k < inner; k++) d[k] = facet_act_backward(FACET_ACTIVATION_SIGMOID, gr[k], 0.0f, yr[k], s);
                break;
            default:
                #pragma omp simd
                for (int64_t k = 0; k < inner; k++) d[k] = facet_act_backward(FACET_ACTIVATION_TANH, gr[k], 0.0f, yr[k], s);
                break;
            }
        }
    }
    if (gs) {
        /* dL/dslope_c = sum over the channel's non-positive inputs of g * x; a
         * shared slope adds the channels' sums in channel order afterwards (as
         * activation.cu does), so the result does not depend on the threads */
        int64_t outer = planes / channels;
        float *part = gs;
        if (ns == 1 && !(part = malloc(sizeof(float) * (size_t)channels)))
            return facet_fail(FACET_STATUS_ERR_MEMORY, "facet_activation_backward: out of memory");
        #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (n >= FACET_PARALLEL_GRAIN)
        for (int64_t c = 0; c < channels; c++) {
            float acc = 0.0f;
            for (int64_t o = 0; o < outer; o++) {
                const float *gr = g + (o * channels + c) * inner, *xr = xp + (o * channels + c) * inner;
                #pragma omp simd reduction(+:acc)
                for (int64_t k = 0; k < inner; k++) acc += xr[k] <= 0.0f ? gr[k] * xr[k] : 0.0f;
            }
            if (ns == 1) part[c] = acc;
            else gs[c] += acc;
        }
        if (ns == 1) {
            float total = 0.0f;
            for (int64_t c = 0; c < channels; c++) total += part[c];
            gs[0] += total;
            free(part);
        }
    }
    return 0;
}

int facet_activation_forward(facet_tensor *out, const facet_tensor *x, int act, const facet_tensor *slope)
{
    static const char *fn = "facet_activation_forward";
    int rc = check_same(fn, "out", out, "x", x);
    if (rc) return rc;
    if (act < 0 || act >= FACET_ACTIVATION_COUNT) return facet_fail(FACET_STATUS_ERR_ARG, "%s: unknown activation %d", fn, act);
    int64_t channels, inner, n = facet_numel(x);
    channel_layout(x, &channels, &inner);
    const float *sp = NULL;
    int64_t ns = 0;
    if (act == FACET_ACTIVATION_PRELU) {
        if (!slope) return facet_fail(FACET_STATUS_ERR_ARG, "%s: PReLU needs slope", fn);
        rc = check_slope(fn, slope, x, channels);
        if (rc) return rc;
        sp = facet_ptr(slope);
        ns = facet_numel(slope);
    }
    float *o = facet_ptr(out);
    const float *xp = facet_ptr(x);
    if (x->device == FACET_DEVICE_CUDA) return facet_cuda_activation_forward(o, xp, n, act, sp, ns, channels, inner);
    act_forward_cpu(o, xp, n, act, sp, ns, channels, inner);
    return 0;
}

int facet_activation_backward(facet_tensor *grad_x, facet_tensor *grad_slope, const facet_tensor *grad_out,
                              const facet_tensor *x, const facet_tensor *out, int act, const facet_tensor *slope)
{
    static const char *fn = "facet_activation_backward";
    if (act < 0 || act >= FACET_ACTIVATION_COUNT) return facet_fail(FACET_STATUS_ERR_ARG, "%s: unknown activation %d", fn, act);
    int rc = check_same(fn, "grad_out", grad_out, "x", x);
    if (!rc && grad_x) rc = check_same(fn, "grad_x", grad_x, "x", x);
    if (!rc && (act == FACET_ACTIVATION_SIGMOID || act == FACET_ACTIVATION_TANH)) {
        if (!out) return facet_fail(FACET_STATUS_ERR_ARG, "%s: sigmoid and tanh need out", fn);
        rc = check_same(fn, "out", out, "x", x);
    }
    if (rc) return rc;
    int64_t channels, inner, n = facet_numel(x);
    channel_layout(x, &channels, &inner);
    const float *sp = NULL;
    float *gs = NULL;
    int64_t ns = 0;
    if (act == FACET_ACTIVATION_PRELU) {
        if (!slope) return facet_fail(FACET_STATUS_ERR_ARG, "%s: PReLU needs slope", fn);
        rc = check_slope(fn, slope, x, channels);
        if (!rc && grad_slope) rc = check_slope(fn, grad_slope, x, channels);
        if (rc) return rc;
        if (grad_slope && facet_numel(grad_slope) != facet_numel(slope))
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: grad_slope %s must match slope %s", fn, facet_desc(grad_slope),
                              facet_desc(slope));
        sp = facet_ptr(slope);
        ns = facet_numel(slope);
        gs = grad_slope ? facet_ptr(grad_slope) : NULL;
    }
    float *gx = grad_x ? facet_ptr(grad_x) : NULL;
    const float *g = facet_ptr(grad_out), *xp = facet_ptr(x), *yp = out ? facet_ptr(out) : NULL;
    if (x->device == FACET_DEVICE_CUDA)
        return facet_cuda_activation_backward(gx, gs, g, xp, yp, n, act, sp, ns, channels, inner);
    return act_backward_cpu(gx, gs, g, xp, yp, n, act, sp, ns, channels, inner);
}

int facet_dropout_forward(facet_tensor *out, facet_tensor *mask, const facet_tensor *x, double p, uint64_t seed,
                          uint64_t offset)
{
    static const char *fn = "facet_dropout_forward";
    int rc = check_same(fn, "out", out, "x", x);
    if (!rc) rc = facet_check_dtype(fn, "mask", mask, FACET_DTYPE_UINT8);
    if (!rc) rc = facet_check_same_device(fn, mask, x);
    if (rc) return rc;
    if (facet_numel(mask) != facet_numel(x) || !facet_contiguous(mask))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: mask %s must match x %s", fn, facet_desc(mask), facet_desc(x));
    if (!(p >= 0.0 && p < 1.0)) return facet_fail(FACET_STATUS_ERR_ARG, "%s: p must be in [0, 1), got %g", fn, p);
    int64_t n = facet_numel(x);
    float scale = (float)(1.0 / (1.0 - p)), pf = (float)p;
    float *o = facet_ptr(out);
    unsigned char *m = facet_ptr(mask);
    const float *xp = facet_ptr(x);
    if (x->device == FACET_DEVICE_CUDA) return facet_cuda_dropout_forward(o, m, xp, n, pf, scale, seed, offset);
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (n >= FACET_PARALLEL_GRAIN)
    for (int64_t i = 0; i < n; i++) {
        m[i] = facet_dropout_keep(seed, offset + (uint64_t)i, pf);
        o[i] = m[i] ? xp[i] * scale : 0.0f;
    }
    return 0;
}

int facet_dropout_backward(facet_tensor *grad_x, const facet_tensor *grad_out, const facet_tensor *mask, double p)
{
    static const char *fn = "facet_dropout_backward";
    int rc = check_same(fn, "grad_x", grad_x, "grad_out", grad_out);
    if (!rc) rc = facet_check_dtype(fn, "mask", mask, FACET_DTYPE_UINT8);
    if (!rc) rc = facet_check_same_device(fn, mask, grad_out);
    if (rc) return rc;
    if (facet_numel(mask) != facet_numel(grad_out) || !facet_contiguous(mask))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: mask %s must match %s", fn, facet_desc(mask), facet_desc(grad_out));
    if (!(p >= 0.0 && p < 1.0)) return facet_fail(FACET_STATUS_ERR_ARG, "%s: p must be in [0, 1), got %g", fn, p);
    int64_t n = facet_numel(grad_out);
    float scale = (float)(1.0 / (1.0 - p));
    float *gx = facet_ptr(grad_x);
    const float *g = facet_ptr(grad_out);
    const unsigned char *m = facet_ptr(mask);
    if (grad_out->device == FACET_DEVICE_CUDA) return facet_cuda_dropout_backward(gx, g, m, n, scale);
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (n >= FACET_PARALLEL_GRAIN)
    for (int64_t i = 0; i < n; i++) gx[i] = m[i] ? g[i] * scale : 0.0f;
    return 0;
}

int facet_adam_step(facet_tensor *param, facet_tensor *grad, facet_tensor *exp_avg, facet_tensor *exp_avg_sq,
                    double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step, int flags)
{
    static const char *fn = "facet_adam_step";
    int rc = check_same(fn, "param", param, "grad", grad);
    if (!rc) rc = check_same(fn, "exp_avg", exp_avg, "param", param);
    if (!rc) rc = check_same(fn, "exp_avg_sq", exp_avg_sq, "param", param);
    if (rc) return rc;
    if (!(lr >= 0) || !(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1) || !(eps > 0) || !(weight_decay >= 0))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: want lr >= 0, betas in [0, 1), eps > 0, weight_decay >= 0; got %g, %g, %g, "
                          "%g, %g", fn, lr, beta1, beta2, eps, weight_decay);
    if (step < 1) return facet_fail(FACET_STATUS_ERR_ARG, "%s: step counts from 1, got %lld", fn, (long long)step);
    struct facet_adam_params p = { (float)lr, (float)beta1, (float)beta2, (float)eps, (float)weight_decay,
                                   (float)(1.0 - pow(beta1, (double)step)), (float)(1.0 - pow(beta2, (double)step)),
                                   (flags & FACET_ADAM_FLAG_DECOUPLED) != 0, (flags & FACET_ADAM_FLAG_ZERO_GRAD) != 0 };
    int64_t n = facet_numel(param);
    float *w = facet_ptr(param), *g = facet_ptr(grad), *m = facet_ptr(exp_avg), *v = facet_ptr(exp_avg_sq);
    if (param->device == FACET_DEVICE_CUDA) return facet_cuda_adam_step(&p, w, g, m, v, n);
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (n >= FACET_PARALLEL_GRAIN)
    for (int64_t i = 0; i < n; i++) {
        w[i] = facet_adam_update(&p, w[i], g[i], &m[i], &v[i]);
        if (p.zero_grad) g[i] = 0.0f;
    }
    return 0;
}
