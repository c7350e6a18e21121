/*
 * pool.c - 2-D max and average pooling of contiguous float32, float16 or
 * bfloat16 N x C x H x W tensors (x, out and the gradients of one dtype),
 * forward and backward (PyTorch's MaxPool2d / AvgPool2d without ceil mode or
 * dilation). A 16-bit call runs the float32 loops on widened copies and
 * rounds once (half_layers.h); CUDA templates its kernels over the dtype.
 *
 * Settings (facet_pool2d_params): kernel >= 1, stride >= 1, 0 <= pad <=
 * kernel / 2 (PyTorch's bound: every window then holds an image pixel), and
 * count_include_pad 0 or 1. Ho = (H + 2 pad_h - kernel_h) / stride_h + 1,
 * likewise Wo; it must be at least 1.
 *
 * Max pooling scans each window row by row, clipped to the image (padding
 * never wins); the first maximum in that order wins ties, and the first NaN
 * beats every number. argmax (int32, shaped like out, NULL when backward is
 * not needed) receives h * W + w of the winner within its plane. Average
 * pooling divides by kernel_h * kernel_w (count_include_pad = 1) or by the
 * number of window elements inside the image (0); argmax is ignored.
 *
 * Backward overwrites grad_x. Max pooling routes each gradient to its
 * argmax entry (entries outside the plane, which forward never writes, are
 * skipped rather than trusted); average pooling spreads g / divisor over the
 * window. The CPU scatters plane by plane (OpenMP over the N * C planes); the
 * CUDA gather visits the outputs in the same order, so both sum alike.
 */
#include "internal.h"
#include "pool_math.h"
#include "half_layers.h"
#include <math.h>
#include <string.h>

/* ---- argument checks ----------------------------------------------------------- */

static int read_settings(const char *fn, const facet_pool2d_params *pool, int kind, struct facet_pool_geom *g)
{
    if (kind != FACET_POOL_KIND_MAX && kind != FACET_POOL_KIND_AVG)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: unknown pooling kind %d (want FACET_POOL_KIND_MAX or FACET_POOL_KIND_AVG)", fn,
                          kind);
    if (!pool) return facet_fail(FACET_STATUS_ERR_ARG, "%s: pool settings are NULL", fn);
    const int32_t kh = pool->kernel_h, kw = pool->kernel_w;
    const int32_t sh = pool->stride_h, sw = pool->stride_w;
    const int32_t ph = pool->pad_h, pw = pool->pad_w, cp = pool->count_include_pad;
    if (kh < 1 || kw < 1 || sh < 1 || sw < 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: kernel and stride must be >= 1, got kernel %dx%d stride %dx%d", fn, kh,
                          kw, sh, sw);
    if (ph < 0 || pw < 0 || ph > kh / 2 || pw > kw / 2)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: padding %dx%d must lie in [0, kernel / 2] for kernel %dx%d", fn, ph, pw,
                          kh, kw);
    if (cp != 0 && cp != 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: count_include_pad must be 0 or 1, got %d", fn, cp);
    g->kh = kh, g->kw = kw, g->sh = sh, g->sw = sw, g->ph = ph, g->pw = pw, g->count_pad = cp;
    return 0;
}

/* The input side (x or grad_x): contiguous float32 N x C x H x W with a
 * non-empty plane; fills planes, h, w, ho, wo of g. */
static int check_input(const char *fn, const char *name, const facet_tensor *t, struct facet_pool_geom *g)
{
    int rc = facet_check_act_dtype(fn, name, t);
    if (rc) return rc;
    if (t->ndim != 4 || !facet_contiguous(t) || t->sizes[2] < 1 || t->sizes[3] < 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s must be a contiguous N x C x H x W tensor with H, W >= 1, got %s", fn,
                          name, facet_desc(t));
    g->planes = t->sizes[0] * t->sizes[1];
    g->h = t->sizes[2];
    g->w = t->sizes[3];
    if (g->h * g->w > INT32_MAX)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s %s has planes too large for int32 argmax indices", fn, name,
                          facet_desc(t));
    if (g->h + 2 * g->ph < g->kh || g->w + 2 * g->pw < g->kw)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: kernel %lldx%lld with padding %lldx%lld does not fit %s %s", fn,
                          (long long)g->kh, (long long)g->kw, (long long)g->ph, (long long)g->pw, name,
                          facet_desc(t));
    g->ho = (g->h + 2 * g->ph - g->kh) / g->sh + 1;
    g->wo = (g->w + 2 * g->pw - g->kw) / g->sw + 1;
    return 0;
}

/* The output side (out, grad_out or argmax): N x C x Ho x Wo of `dtype`. */
static int check_output(const char *fn, const char *name, const facet_tensor *t, int dtype, const facet_tensor *x,
                        const struct facet_pool_geom *g)
{
    int rc = dtype == FACET_DTYPE_INT32 ? facet_check_dtype(fn, name, t, dtype) : facet_check_dtype_of(fn, name, t, "x", x);
    if (!rc) rc = facet_check_same_device(fn, t, x);
    if (rc) return rc;
    if (t->ndim != 4 || t->sizes[0] != x->sizes[0] || t->sizes[1] != x->sizes[1] || t->sizes[2] != g->ho ||
        t->sizes[3] != g->wo || !facet_contiguous(t))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s %s must be contiguous %lldx%lldx%lldx%lld for %s and kernel %lldx%lld "
                          "stride %lldx%lld pad %lldx%lld", fn, name, facet_desc(t), (long long)x->sizes[0],
                          (long long)x->sizes[1], (long long)g->ho, (long long)g->wo, facet_desc(x), (long long)g->kh,
                          (long long)g->kw, (long long)g->sh, (long long)g->sw, (long long)g->ph, (long long)g->pw);
    return 0;
}

/* ---- CPU kernels, one plane each -------------------------------------------------
 * Windows, divisors and the tie rule are pool_math.h's, shared with pool.cu. */

/* 2x2, stride 2, no padding (the common case): four loads per output, no window
 * arithmetic, so the loop vectorises with blends */
FACET_CLONES static void max_plane_2x2(float *o, int32_t *am, const float *x, const struct facet_pool_geom *g)
{
    for (int64_t oh = 0; oh < g->ho; oh++) {
        const float *r0 = x + 2 * oh * g->w, *r1 = r0 + g->w;
        float *orow = o + oh * g->wo;
        int32_t *arow = am ? am + oh * g->wo : NULL;
        const int32_t base = (int32_t)(2 * oh * g->w);
        #pragma omp simd
        for (int64_t ow = 0; ow < g->wo; ow++) {
            float best = r0[2 * ow];
            int32_t bi = base + (int32_t)(2 * ow);
            float v = r0[2 * ow + 1];
            if (facet_pool_max_wins(v, best)) { best = v; bi = base + (int32_t)(2 * ow + 1); }
            v = r1[2 * ow];
            if (facet_pool_max_wins(v, best)) { best = v; bi = base + (int32_t)(g->w + 2 * ow); }
            v = r1[2 * ow + 1];
            if (facet_pool_max_wins(v, best)) { best = v; bi = base + (int32_t)(g->w + 2 * ow + 1); }
            orow[ow] = best;
            if (arow) arow[ow] = bi;
        }
    }
}

FACET_CLONES static void max_plane(float *o, int32_t *am, const float *x, const struct facet_pool_geom *g)
{
    if (g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && g->ph == 0 && g->pw == 0) {
        max_plane_2x2(o, am, x, g);
        return;
    }
    for (int64_t oh = 0; oh < g->ho; oh++) {
        for (int64_t ow = 0; ow < g->wo; ow++) {
            const struct facet_pool_window r = facet_pool_window_of(g, oh, ow);
            float best = -INFINITY;
            int64_t bi = r.hs * g->w + r.ws;
            for (int64_t h = r.hs; h < r.he; h++)
                for (int64_t w = r.ws; w < r.we; w++) {
                    const float v = x[h * g->w + w];
                    if (facet_pool_max_wins(v, best)) {
                        best = v;
                        bi = h * g->w + w;
                    }
                }
            o[oh * g->wo + ow] = best;
            if (am) am[oh * g->wo + ow] = (int32_t)bi;
        }
    }
}

FACET_CLONES static void avg_plane(float *o, const float *x, const struct facet_pool_geom *g)
{
    for (int64_t oh = 0; oh < g->ho; oh++) {
        for (int64_t ow = 0; ow < g->wo; ow++) {
            const struct facet_pool_window r = facet_pool_window_of(g, oh, ow);
            float sum = 0.0f;
            for (int64_t h = r.hs; h < r.he; h++)
                for (int64_t w = r.ws; w < r.we; w++) sum += x[h * g->w + w];
            o[oh * g->wo + ow] = sum / facet_pool_divisor(g, &r);
        }
    }
}

static void max_plane_backward(float *gx, const float *go, const int32_t *am, const struct facet_pool_geom *g)
{
    const int64_t n = g->ho * g->wo, hw = g->h * g->w;
    memset(gx, 0, (size_t)hw * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        if (am[i] >= 0 && am[i] < hw) gx[am[i]] += go[i];
}

FACET_CLONES static void avg_plane_backward(float *gx, const float *go, const struct facet_pool_geom *g)
{
    memset(gx, 0, (size_t)(g->h * g->w) * sizeof(float));
    for (int64_t oh = 0; oh < g->ho; oh++) {
        for (int64_t ow = 0; ow < g->wo; ow++) {
            const struct facet_pool_window r = facet_pool_window_of(g, oh, ow);
            const float v = go[oh * g->wo + ow] / facet_pool_divisor(g, &r);
            for (int64_t h = r.hs; h < r.he; h++)
                for (int64_t w = r.ws; w < r.we; w++) gx[h * g->w + w] += v;
        }
    }
}

/* all planes, on float32 data */
static void forward_cpu(float *o, int32_t *am, const float *xp, int kind, const struct facet_pool_geom *gp)
{
    const struct facet_pool_geom g = *gp;
    const int64_t in_plane = g.h * g.w, out_plane = g.ho * g.wo;
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) \
        if (g.planes * (in_plane + out_plane) >= FACET_PARALLEL_GRAIN)
    for (int64_t p = 0; p < g.planes; p++) {
        if (kind == FACET_POOL_KIND_MAX)
            max_plane(o + p * out_plane, am ? am + p * out_plane : NULL, xp + p * in_plane, &g);
        else
            avg_plane(o + p * out_plane, xp + p * in_plane, &g);
    }
}

static void backward_cpu(float *gx, const float *go, const int32_t *am, int kind, const struct facet_pool_geom *gp)
{
    const struct facet_pool_geom g = *gp;
    const int64_t in_plane = g.h * g.w, out_plane = g.ho * g.wo;
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) \
        if (g.planes * (in_plane + out_plane) >= FACET_PARALLEL_GRAIN)
    for (int64_t p = 0; p < g.planes; p++) {
        if (kind == FACET_POOL_KIND_MAX)
            max_plane_backward(gx + p * in_plane, go + p * out_plane, am + p * out_plane, &g);
        else
            avg_plane_backward(gx + p * in_plane, go + p * out_plane, &g);
    }
}

/* ---- API ---------------------------------------------------------------------------- */

int facet_pool2d_forward(facet_tensor *out, facet_tensor *argmax, const facet_tensor *x, int kind,
                         const facet_pool2d_params *pool)
{
    static const char *fn = "facet_pool2d_forward";
    struct facet_pool_geom g;
    int rc = read_settings(fn, pool, kind, &g);
    if (!rc) rc = check_input(fn, "x", x, &g);
    if (!rc) rc = check_output(fn, "out", out, FACET_DTYPE_FLOAT32, x, &g);
    if (kind != FACET_POOL_KIND_MAX) argmax = NULL;
    if (!rc && argmax) rc = check_output(fn, "argmax", argmax, FACET_DTYPE_INT32, x, &g);
    if (rc) return rc;
    int32_t *am = argmax ? facet_ptr(argmax) : NULL;
    if (x->device == FACET_DEVICE_CUDA) return facet_cuda_pool2d_forward(x->dtype, facet_ptr(out), am, facet_ptr(x), kind, &g);
    int ok = 1;
    facet_half_begin(x->dtype);
    const float *xp = facet_half_in(fn, x, 0, &ok);
    float *o = ok ? facet_half_out(fn, out, 1, &ok) : NULL;
    if (ok) forward_cpu(o, am, xp, kind, &g);
    return facet_half_finish(x->dtype, out, o, ok, 0);
}

int facet_pool2d_backward(facet_tensor *grad_x, const facet_tensor *grad_out, const facet_tensor *argmax, int kind,
                          const facet_pool2d_params *pool)
{
    static const char *fn = "facet_pool2d_backward";
    struct facet_pool_geom g;
    int rc = read_settings(fn, pool, kind, &g);
    if (!rc) rc = check_input(fn, "grad_x", grad_x, &g);
    if (!rc) rc = check_output(fn, "grad_out", grad_out, FACET_DTYPE_FLOAT32, grad_x, &g);
    if (rc) return rc;
    if (kind == FACET_POOL_KIND_MAX) {
        if (!argmax) return facet_fail(FACET_STATUS_ERR_ARG, "%s: max pooling needs the argmax of forward", fn);
        rc = check_output(fn, "argmax", argmax, FACET_DTYPE_INT32, grad_x, &g);
        if (rc) return rc;
    } else {
        argmax = NULL;
    }
    const int32_t *am = argmax ? facet_ptr(argmax) : NULL;
    if (grad_x->device == FACET_DEVICE_CUDA)
        return facet_cuda_pool2d_backward(grad_x->dtype, facet_ptr(grad_x), facet_ptr(grad_out), am, kind, &g);
    int ok = 1;
    facet_half_begin(grad_x->dtype);
    const float *go = facet_half_in(fn, grad_out, 0, &ok);
    float *gx = ok ? facet_half_out(fn, grad_x, 1, &ok) : NULL;
    if (ok) backward_cpu(gx, go, am, kind, &g);
    return facet_half_finish(grad_x->dtype, grad_x, gx, ok, 0);
}

