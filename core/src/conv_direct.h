/*
 * conv_direct.h - the CPU kernels of the DIRECT convolution path
 * (conv_direct.c), for conv.c, which checks every argument first and calls
 * these for layers where facet_conv_path is FACET_CONV_DIRECT.
 */
#ifndef FACET_CONV_DIRECT_H
#define FACET_CONV_DIRECT_H

#include "internal.h"
#include "conv_math.h"

/* out = conv(x, w) + b (b may be NULL), all of g's images. */
void facet_conv_direct_forward(const struct facet_conv_geom *g, float *out, const float *x, const float *w,
                               const float *b);
/* grad_x (overwritten), grad_weight and grad_bias (added to); any may be NULL. */
void facet_conv_direct_backward(const struct facet_conv_geom *g, float *gx, float *gw, float *gb,
                                const float *gout, const float *x, const float *w);
/* The sum of n floats, vectorised: a grad_out plane's share of grad_bias
 * (conv.c's GEMM paths use it too). Static, as a copy per file: GCC exports
 * the dispatcher of an extern FACET_CLONES function despite hidden
 * visibility. */
FACET_CLONES static inline float facet_conv_plane_sum(const float *a, int64_t n)
{
    float s = 0.0f;
    #pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += a[i];
    return s;
}

#endif
