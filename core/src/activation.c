/*
 * activation.c - ReLU, ReLU6, sigmoid, tanh and per-channel PReLU with their
 * gradients. The per-element math is activation_math.h. x, out and the
 * gradients are float32, float16 or bfloat16 (one dtype), the slope and its
 * gradient float32; a 16-bit call runs the float32 loops on widened copies
 * and rounds once (half_layers.h).
 */
#include "internal.h"
#include "activation_math.h"
#include "half_layers.h"
#include <stdlib.h>

/* channel count and inner size for per-channel slopes: N x C [x H x W] */
static void channel_layout(const facet_tensor *x, int64_t *channels, int64_t *inner)
{
    *channels = x->ndim >= 2 ? x->sizes[1] : 1;
    *inner = 1;
    for (int d = 2; d < x->ndim; d++) *inner *= x->sizes[d];
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
/* The activations without a slope, over the flat tensor: planes of one
 * element (a B x C matrix after a Linear) would not vectorise. One loop per
 * activation, as below; sigmoid's and tanh's forward stay scalar (each
 * element through the C library's expf / tanhf, as before). */
#define FACET_ACT_FLAT(act_id, body)                                                                     \
    case act_id: {                                                                                       \
        _Pragma("omp parallel for simd schedule(static) num_threads(facet_threads()) if (n >= FACET_PARALLEL_GRAIN)") \
        for (int64_t i = 0; i < n; i++) body;                                                            \
        break;                                                                                           \
    }
#define FACET_ACT_FLAT_SCALAR(act_id, body)                                                              \
    case act_id: {                                                                                       \
        _Pragma("omp parallel for schedule(static) num_threads(facet_threads()) if (n >= FACET_PARALLEL_GRAIN)") \
        for (int64_t i = 0; i < n; i++) body;                                                            \
        break;                                                                                           \
    }

FACET_CLONES static void act_forward_flat(float *o, const float *xp, int64_t n, int act)
{
    switch (act) {
    FACET_ACT_FLAT(FACET_ACTIVATION_RELU, o[i] = facet_act_forward(FACET_ACTIVATION_RELU, xp[i], 0.0f))
    FACET_ACT_FLAT(FACET_ACTIVATION_RELU6, o[i] = facet_act_forward(FACET_ACTIVATION_RELU6, xp[i], 0.0f))
    FACET_ACT_FLAT_SCALAR(FACET_ACTIVATION_SIGMOID, o[i] = facet_act_forward(FACET_ACTIVATION_SIGMOID, xp[i], 0.0f))
    FACET_ACT_FLAT_SCALAR(FACET_ACTIVATION_TANH, o[i] = facet_act_forward(FACET_ACTIVATION_TANH, xp[i], 0.0f))
    default: break;
    }
}

FACET_CLONES static void act_backward_flat(float *gx, const float *g, const float *xp, const float *yp, int64_t n,
                                           int act)
{
    switch (act) {
    FACET_ACT_FLAT(FACET_ACTIVATION_RELU, gx[i] = facet_act_backward(FACET_ACTIVATION_RELU, g[i], xp[i], 0.0f, 0.0f))
    FACET_ACT_FLAT(FACET_ACTIVATION_RELU6, gx[i] = facet_act_backward(FACET_ACTIVATION_RELU6, g[i], xp[i], 0.0f, 0.0f))
    FACET_ACT_FLAT(FACET_ACTIVATION_SIGMOID, gx[i] = facet_act_backward(FACET_ACTIVATION_SIGMOID, g[i], 0.0f, yp[i], 0.0f))
    FACET_ACT_FLAT(FACET_ACTIVATION_TANH, gx[i] = facet_act_backward(FACET_ACTIVATION_TANH, g[i], 0.0f, yp[i], 0.0f))
    default: break;
    }
}

FACET_CLONES static void act_forward_cpu(float *o, const float *xp, int64_t n, int act, const float *sp, int64_t ns,
                                         int64_t channels, int64_t inner)
{
    if (!sp) {
        act_forward_flat(o, xp, n, act);
        return;
    }
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
        case FACET_ACTIVATION_RELU6:
            #pragma omp simd
            for (int64_t k = 0; k < inner; k++) orow[k] = facet_act_forward(FACET_ACTIVATION_RELU6, xr[k], s);
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
    if (gx && !sp) act_backward_flat(gx, g, xp, yp, n, act);
    else if (gx) {
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
            case FACET_ACTIVATION_RELU6:
                #pragma omp simd
                for (int64_t k = 0; k < inner; k++) d[k] = facet_act_backward(FACET_ACTIVATION_RELU6, gr[k], xr[k], 0.0f, s);
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
                for (int64_t k = 0; k < inner; k++) acc += facet_prelu_slope_term(gr[k], xr[k]);
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
    int rc = facet_check_act_pair(fn, "out", out, "x", x);
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
    if (x->device == FACET_DEVICE_CUDA)
        return facet_cuda_activation_forward(x->dtype, facet_ptr(out), facet_ptr(x), n, act, sp, ns, channels, inner);
    int ok = 1;
    facet_half_begin(x->dtype);
    const float *xp = facet_half_in(fn, x, 0, &ok);
    float *o = ok ? facet_half_out(fn, out, 1, &ok) : NULL;
    if (ok) act_forward_cpu(o, xp, n, act, sp, ns, channels, inner);
    return facet_half_finish(x->dtype, out, o, ok, 0);
}

int facet_activation_backward(facet_tensor *grad_x, facet_tensor *grad_slope, const facet_tensor *grad_out,
                              const facet_tensor *x, const facet_tensor *out, int act, const facet_tensor *slope)
{
    static const char *fn = "facet_activation_backward";
    if (act < 0 || act >= FACET_ACTIVATION_COUNT) return facet_fail(FACET_STATUS_ERR_ARG, "%s: unknown activation %d", fn, act);
    int rc = facet_check_act_pair(fn, "grad_out", grad_out, "x", x);
    if (!rc && grad_x) rc = facet_check_act_pair(fn, "grad_x", grad_x, "x", x);
    if (!rc && (act == FACET_ACTIVATION_SIGMOID || act == FACET_ACTIVATION_TANH)) {
        if (!out) return facet_fail(FACET_STATUS_ERR_ARG, "%s: sigmoid and tanh need out", fn);
        rc = facet_check_act_pair(fn, "out", out, "x", x);
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
    /* only sigmoid and tanh read out, only PReLU's slope gradient and the
     * other activations' grad_x read x */
    const facet_tensor *yt = act == FACET_ACTIVATION_SIGMOID || act == FACET_ACTIVATION_TANH ? out : NULL;
    if (x->device == FACET_DEVICE_CUDA)
        return facet_cuda_activation_backward(x->dtype, grad_x ? facet_ptr(grad_x) : NULL, gs, facet_ptr(grad_out),
                                              facet_ptr(x), yt ? facet_ptr(yt) : NULL, n, act, sp, ns, channels, inner);
    int ok = 1;
    facet_half_begin(x->dtype);
    const float *g = facet_half_in(fn, grad_out, 0, &ok);
    const float *xp = ok ? facet_half_in(fn, x, 1, &ok) : NULL;
    const float *yp = ok ? facet_half_in(fn, yt, 2, &ok) : NULL;
    float *gx = ok ? facet_half_out(fn, grad_x, 3, &ok) : NULL;
    if (ok) rc = act_backward_cpu(gx, gs, g, xp, yp, n, act, sp, ns, channels, inner);
    return facet_half_finish(x->dtype, grad_x, gx, ok, rc);
}
