/*
 * upsample.c - 2-D resampling of contiguous float32 N x C x H x W tensors to
 * the H' x W' of out, as PyTorch's F.interpolate(x, size=(H', W')) does it
 * (shrinking works too):
 *
 *   nearest    src = min(floor(dst * in / out), in - 1) in float; align_corners
 *              must be 0 (PyTorch rejects it for nearest).
 *   bilinear   align_corners = 1: src = dst (in - 1) / (out - 1);
 *              align_corners = 0: src = max((dst + 0.5) in / out - 0.5, 0);
 *              then i0 = floor(src), i1 = min(i0 + 1, in - 1), weights
 *              1 - (src - i0) and src - i0 along each axis.
 *
 * The coordinate formulas and the blend live in upsample_math.h, shared
 * with the CUDA kernels. The CPU precomputes the coordinates once per axis,
 * then works plane by plane (OpenMP over the N * C planes). Backward is the
 * adjoint: grad_x (overwritten) receives each output gradient times the
 * weight its source pixel had; the CPU scatters, the GPU gathers per input
 * pixel (facet_ups_backward_at) in the scatter's order, so both give the
 * same bits. x / out and grad_x / grad_out are float32, float16 or bfloat16
 * (one dtype per call): a 16-bit call widens its input, runs the float32
 * loops and rounds the result once (half_layers.h), so it gives the float32
 * result rounded once, on the CPU and the GPU alike.
 */
#include "internal.h"
#include "half_layers.h"
#include "upsample_math.h"
#include <stdlib.h>
#include <string.h>

/* Source indices and the weight of the second one, per output row or column;
 * int32 indices because GCC vectorises gathers with them, not with int64. */
struct axis {
    int32_t *i0, *i1;
    float *l1;
};

static void axis_free(struct axis *a)
{
    free(a->i0);
    free(a->i1);
    free(a->l1);
}

static int axis_init(struct axis *a, int64_t in, int64_t out, int mode, int align_corners, const char *fn)
{
    a->i0 = malloc((size_t)out * sizeof(int32_t));
    a->i1 = malloc((size_t)out * sizeof(int32_t));
    a->l1 = malloc((size_t)out * sizeof(float));
    if (!a->i0 || !a->i1 || !a->l1) {
        axis_free(a);
        return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: out of memory for %lld coordinates", fn, (long long)out);
    }
    for (int64_t d = 0; d < out; d++) {
        int64_t i0, i1;
        float l1 = 0.0f;
        facet_ups_taps(d, in, out, mode, align_corners, &i0, &i1, &l1);
        a->i0[d] = (int32_t)i0;
        a->i1[d] = (int32_t)i1;
        a->l1[d] = l1;
    }
    return 0;
}

/* ---- argument checks ------------------------------------------------------------ */

static int check_mode(const char *fn, int mode, int align_corners)
{
    if (mode != FACET_UPSAMPLE_MODE_NEAREST && mode != FACET_UPSAMPLE_MODE_BILINEAR)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: unknown mode %d (want FACET_UPSAMPLE_MODE_NEAREST or FACET_UPSAMPLE_MODE_BILINEAR)",
                          fn, mode);
    if (align_corners != 0 && align_corners != 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: align_corners must be 0 or 1, got %d", fn, align_corners);
    if (mode == FACET_UPSAMPLE_MODE_NEAREST && align_corners)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: align_corners applies to bilinear only; nearest needs 0", fn);
    return 0;
}

static int check_planes(const char *fn, const char *name, const facet_tensor *t)
{
    int rc = facet_check_act_dtype(fn, name, t);
    if (rc) return rc;
    if (t->ndim != 4 || !facet_contiguous(t) || t->sizes[2] < 1 || t->sizes[3] < 1 || t->sizes[2] > INT32_MAX ||
        t->sizes[3] > INT32_MAX)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s must be a contiguous N x C x H x W tensor with 1 <= H, W <= 2^31 - 1, "
                          "got %s", fn, name, facet_desc(t));
    return 0;
}

/* small (x side) and big (out side) must share N and C and the device. */
static int check_pair(const char *fn, const char *sname, const facet_tensor *small, const char *bname,
                      const facet_tensor *big)
{
    int rc = check_planes(fn, sname, small);
    if (!rc) rc = check_planes(fn, bname, big);
    if (!rc) rc = facet_check_same_device(fn, small, big);
    if (!rc) rc = facet_check_dtype_of(fn, bname, big, sname, small);
    if (rc) return rc;
    if (small->sizes[0] != big->sizes[0] || small->sizes[1] != big->sizes[1])
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s %s and %s %s must have the same N and C", fn, sname,
                          facet_desc(small), bname, facet_desc(big));
    return 0;
}

/* ---- CPU kernels, one plane each ------------------------------------------------- */

/* One output row; restrict parameters (GCC ignores restrict on locals) let
 * the column loops vectorise as gathers. */
static inline void nearest_row(float *restrict o, const float *restrict r0, const int32_t *restrict c0, int64_t wo)
{
    for (int64_t j = 0; j < wo; j++) o[j] = r0[c0[j]];
}

static inline void bilinear_row(float *restrict o, const float *restrict r0, const float *restrict r1, float h1,
                                const int32_t *restrict c0, const int32_t *restrict c1, const float *restrict l1,
                                int64_t wo)
{
    for (int64_t j = 0; j < wo; j++) o[j] = facet_ups_blend(h1, l1[j], r0[c0[j]], r0[c1[j]], r1[c0[j]], r1[c1[j]]);
}

FACET_CLONES static void forward_plane(float *o, const float *x, int64_t w, int64_t ho, int64_t wo,
                                       const struct axis *ah, const struct axis *aw, int mode)
{
    for (int64_t oh = 0; oh < ho; oh++) {
        const float *r0 = x + ah->i0[oh] * w, *r1 = x + ah->i1[oh] * w;
        if (mode == FACET_UPSAMPLE_MODE_NEAREST) nearest_row(o + oh * wo, r0, aw->i0, wo);
        else bilinear_row(o + oh * wo, r0, r1, ah->l1[oh], aw->i0, aw->i1, aw->l1, wo);
    }
}

FACET_CLONES static void backward_plane(float *gx, const float *go, int64_t h, int64_t w, int64_t ho, int64_t wo,
                                        const struct axis *ah, const struct axis *aw, int mode)
{
    memset(gx, 0, (size_t)(h * w) * sizeof(float));
    for (int64_t oh = 0; oh < ho; oh++) {
        float *r0 = gx + ah->i0[oh] * w, *r1 = gx + ah->i1[oh] * w;
        const float *grow = go + oh * wo;
        if (mode == FACET_UPSAMPLE_MODE_NEAREST) {
            for (int64_t ow = 0; ow < wo; ow++) r0[aw->i0[ow]] += grow[ow];
        } else {
            const float h1 = ah->l1[oh], h0 = 1.0f - h1;
            for (int64_t ow = 0; ow < wo; ow++) {
                const float w1 = aw->l1[ow], w0 = 1.0f - w1, g = grow[ow];
                const int64_t c0 = aw->i0[ow], c1 = aw->i1[ow];
                r0[c0] += h0 * w0 * g;
                r0[c1] += h0 * w1 * g;
                r1[c0] += h1 * w0 * g;
                r1[c1] += h1 * w1 * g;
            }
        }
    }
}

/* ---- API ------------------------------------------------------------------------------ */

/* The float32 CPU loops: `small` is x / grad_x, `big` out / grad_out. */
static int upsample_cpu(const char *fn, float *dst, const float *src, const facet_tensor *small,
                        const facet_tensor *big, int mode, int align_corners, int backward)
{
    const int64_t planes = small->sizes[0] * small->sizes[1], h = small->sizes[2], w = small->sizes[3];
    const int64_t ho = big->sizes[2], wo = big->sizes[3];
    if (planes == 0) return 0;
    struct axis ah, aw;
    int rc = axis_init(&ah, h, ho, mode, align_corners, fn);
    if (rc) return rc;
    rc = axis_init(&aw, w, wo, mode, align_corners, fn);
    if (rc) {
        axis_free(&ah);
        return rc;
    }
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) \
        if (planes * (h * w + ho * wo) >= FACET_PARALLEL_GRAIN)
    for (int64_t p = 0; p < planes; p++) {
        if (backward)
            backward_plane(dst + p * h * w, src + p * ho * wo, h, w, ho, wo, &ah, &aw, mode);
        else
            forward_plane(dst + p * ho * wo, src + p * h * w, w, ho, wo, &ah, &aw, mode);
    }
    axis_free(&ah);
    axis_free(&aw);
    return 0;
}

/* Either direction: writes dst from src (one dtype), through float32 on the CPU. */
static int upsample(const char *fn, facet_tensor *dst, const facet_tensor *src, const facet_tensor *small,
                    const facet_tensor *big, int mode, int align_corners, int backward)
{
    if (small->device == FACET_DEVICE_CUDA) {
        const int64_t planes = small->sizes[0] * small->sizes[1], h = small->sizes[2], w = small->sizes[3];
        const int64_t ho = big->sizes[2], wo = big->sizes[3];
        return backward ? facet_cuda_upsample2d_backward(src->dtype, facet_ptr(dst), facet_ptr(src), planes, h, w, ho,
                                                         wo, mode, align_corners)
                        : facet_cuda_upsample2d_forward(src->dtype, facet_ptr(dst), facet_ptr(src), planes, h, w, ho,
                                                        wo, mode, align_corners);
    }
    int ok = 1, rc = 0;
    facet_half_begin(src->dtype);
    const float *s = facet_half_in(fn, src, 0, &ok);
    float *d = ok ? facet_half_out(fn, dst, 1, &ok) : NULL;
    if (ok) rc = upsample_cpu(fn, d, s, small, big, mode, align_corners, backward);
    return facet_half_finish(src->dtype, dst, d, ok, rc);
}

int facet_upsample2d_forward(facet_tensor *out, const facet_tensor *x, int mode, int align_corners)
{
    static const char *fn = "facet_upsample2d_forward";
    int rc = check_mode(fn, mode, align_corners);
    if (!rc) rc = check_pair(fn, "x", x, "out", out);
    if (rc) return rc;
    return upsample(fn, out, x, x, out, mode, align_corners, 0);
}

int facet_upsample2d_backward(facet_tensor *grad_x, const facet_tensor *grad_out, int mode, int align_corners)
{
    static const char *fn = "facet_upsample2d_backward";
    int rc = check_mode(fn, mode, align_corners);
    if (!rc) rc = check_pair(fn, "grad_x", grad_x, "grad_out", grad_out);
    if (rc) return rc;
    return upsample(fn, grad_x, grad_out, grad_x, grad_out, mode, align_corners, 1);
}
