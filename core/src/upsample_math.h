/*
 * upsample_math.h - 2-D resampling's formulas, shared by core/src/upsample.c
 * and core/cuda/upsample.cu so both pick the same pixels and weights and
 * round alike: PyTorch's float source coordinates (F.interpolate with an
 * output size), the bilinear blend, and the adjoint (backward) of one input
 * pixel as a gather over the outputs that read it. Products and sums are
 * rounded one at a time (facet_mul_rn / facet_add_rn), as the host compiles
 * them, so a floor or a weight never differs between the devices.
 */
#ifndef FACET_UPSAMPLE_MATH_H
#define FACET_UPSAMPLE_MATH_H

#include <math.h>
#include <stdint.h>
#include "elementwise_math.h"
#include "half_math.h"
#include "facet.h"

/* Nearest: src = min(floor(dst * (in / out)), in - 1), with PyTorch's exact
 * shortcuts for equal size and for doubling. */
FACET_HD int64_t facet_ups_nearest(int64_t dst, int64_t in, int64_t out)
{
    if (out == in) return dst;
    if (out == 2 * in) return dst >> 1;
    const float scale = (float)in / (float)out;
    const int64_t s = (int64_t)floorf(facet_mul_rn((float)dst, scale));
    return s < in - 1 ? s : in - 1;
}

/* Bilinear along one axis: the two source indices and the weight of the
 * second. align_corners maps the corner pixels' centres onto each other
 * (scale (in-1)/(out-1)); otherwise src = (dst + 0.5) in/out - 0.5, clamped
 * at 0. Equal sizes are the identity. */
FACET_HD void facet_ups_linear(int64_t dst, int64_t in, int64_t out, int align_corners, int64_t *i0, int64_t *i1,
                               float *lambda1)
{
    if (out == in) {
        *i0 = *i1 = dst;
        *lambda1 = 0.0f;
        return;
    }
    float src;
    if (align_corners) {
        const float scale = out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f;
        src = facet_mul_rn(scale, (float)dst);
    } else {
        const float scale = (float)in / (float)out;
        src = facet_add_rn(facet_mul_rn(scale, facet_add_rn((float)dst, 0.5f)), -0.5f);
        if (src < 0.0f) src = 0.0f;
    }
    int64_t i = (int64_t)floorf(src);
    if (i > in - 1) i = in - 1;
    float l = src - (float)i;
    l = l < 0.0f ? 0.0f : (l > 1.0f ? 1.0f : l);
    *i0 = i;
    *i1 = i < in - 1 ? i + 1 : i;
    *lambda1 = l;
}

/* The taps of output dst along one axis in either mode: sources i0, i1 and
 * the weight l1 of i1 (nearest: i0 == i1, l1 = 0). */
FACET_HD void facet_ups_taps(int64_t dst, int64_t in, int64_t out, int mode, int align_corners, int64_t *i0,
                             int64_t *i1, float *l1)
{
    if (mode == FACET_UPSAMPLE_MODE_NEAREST) {
        *i0 = *i1 = facet_ups_nearest(dst, in, out);
        *l1 = 0.0f;
    } else {
        facet_ups_linear(dst, in, out, align_corners, i0, i1, l1);
    }
}

/* The bilinear blend of a00 a01 (row i0) and a10 a11 (row i1) with the
 * weights h1 (of row i1) and w1 (of column i1). */
FACET_HD float facet_ups_blend(float h1, float w1, float a00, float a01, float a10, float a11)
{
    const float h0 = 1.0f - h1, w0 = 1.0f - w1;
    const float r0 = facet_add_rn(facet_mul_rn(w0, a00), facet_mul_rn(w1, a01));
    const float r1 = facet_add_rn(facet_mul_rn(w0, a10), facet_mul_rn(w1, a11));
    return facet_add_rn(facet_mul_rn(h0, r0), facet_mul_rn(h1, r1));
}

/* The outputs along one axis that read source v: [*lo, *hi], empty when
 * *lo > *hi. i0 and i1 = min(i0 + 1, in - 1) never decrease with the output
 * index (the float source coordinate is monotonic and so is its rounding),
 * so they are the outputs from the first whose i1 reaches v to the last
 * whose i0 has not passed it; two binary searches find them. */
FACET_HD void facet_ups_readers(int64_t v, int64_t in, int64_t out, int mode, int align_corners, int64_t *lo,
                                int64_t *hi)
{
    int64_t a = 0, b = out, i0, i1;
    float l;
    while (a < b) {             /* first d with i1(d) >= v */
        const int64_t d = a + (b - a) / 2;
        facet_ups_taps(d, in, out, mode, align_corners, &i0, &i1, &l);
        if (i1 >= v) b = d;
        else a = d + 1;
    }
    *lo = a;
    a = 0, b = out;
    while (a < b) {             /* first d with i0(d) > v */
        const int64_t d = a + (b - a) / 2;
        facet_ups_taps(d, in, out, mode, align_corners, &i0, &i1, &l);
        if (i0 > v) b = d;
        else a = d + 1;
    }
    *hi = a - 1;
}

/* Value i of a float32, float16 or bfloat16 array (dtype), widened exactly. */
FACET_HD float facet_ups_load(const void *p, int64_t i, int dtype)
{
    if (dtype == FACET_DTYPE_FLOAT16) return facet_half_to_float(((const uint16_t *)p)[i]);
    if (dtype == FACET_DTYPE_BFLOAT16) return facet_bf16_to_float(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

/* dL/dx at source pixel (y, x) of one plane, from the plane's output
 * gradient (ho x wo, starting at element `base` of go, of dtype): the sum
 * of every output gradient times the weight its tap on (y, x) had, in
 * float32. The terms are added in the order upsample.c's scatter adds them
 * (outputs row-major, then the taps (i0, j0), (i0, j1), (i1, j0), (i1, j1)),
 * each weight computed as there, so the gather and the scatter give the
 * same bits. */
FACET_HD float facet_ups_backward_at(const void *go, int dtype, int64_t base, int64_t h, int64_t w, int64_t ho,
                                     int64_t wo, int mode, int align_corners, int64_t y, int64_t x)
{
    int64_t oh0, oh1, ow0, ow1;
    facet_ups_readers(y, h, ho, mode, align_corners, &oh0, &oh1);
    facet_ups_readers(x, w, wo, mode, align_corners, &ow0, &ow1);
    float acc = 0.0f;
    for (int64_t oh = oh0; oh <= oh1; oh++) {
        int64_t i0, i1;
        float lh;
        facet_ups_taps(oh, h, ho, mode, align_corners, &i0, &i1, &lh);
        const float h0 = 1.0f - lh;
        for (int64_t ow = ow0; ow <= ow1; ow++) {
            int64_t j0, j1;
            float lw;
            facet_ups_taps(ow, w, wo, mode, align_corners, &j0, &j1, &lw);
            const float g = facet_ups_load(go, base + oh * wo + ow, dtype);
            if (mode == FACET_UPSAMPLE_MODE_NEAREST) {
                acc = facet_add_rn(acc, g);
                continue;
            }
            const float w0 = 1.0f - lw;
            if (i0 == y && j0 == x) acc = facet_add_rn(acc, facet_mul_rn(facet_mul_rn(h0, w0), g));
            if (i0 == y && j1 == x) acc = facet_add_rn(acc, facet_mul_rn(facet_mul_rn(h0, lw), g));
            if (i1 == y && j0 == x) acc = facet_add_rn(acc, facet_mul_rn(facet_mul_rn(lh, w0), g));
            if (i1 == y && j1 == x) acc = facet_add_rn(acc, facet_mul_rn(facet_mul_rn(lh, lw), g));
        }
    }
    return acc;
}

#endif
