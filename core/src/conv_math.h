/*
 * conv_math.h - the geometry of a 2-D convolution, shared by core/src/conv.c,
 * core/src/conv_direct.c and core/cuda/conv.cu: the checked sizes and
 * settings in one struct, the layer's path (direct, pointwise or im2col),
 * and the range of output positions whose tap lands inside the input, which
 * lets every loop run without a bounds test per element.
 */
#ifndef FACET_CONV_MATH_H
#define FACET_CONV_MATH_H

#include <stdint.h>
#include "elementwise_math.h"   /* FACET_HD */

struct facet_conv_geom {
    int64_t n, c, h, w;         /* x: N x C x H x W */
    int64_t o, kh, kw;          /* weight: O x C/groups x kh x kw */
    int64_t ho, wo;             /* out: N x O x Ho x Wo */
    int64_t sh, sw, ph, pw, dh, dw, groups;
    int64_t cg, og;             /* input and output channels per group */
    int64_t k;                  /* rows of a group's column matrix: cg kh kw */
    int64_t p;                  /* columns: Ho Wo */
};

/* How a layer is computed. DIRECT: one input channel per output channel
 * (depthwise, C/groups == 1), where a GEMM would have M or K of 1-9;
 * POINTWISE: 1x1, stride 1, no padding, where x's group planes already are
 * the column matrix; IM2COL: everything else. */
enum facet_conv_path { FACET_CONV_DIRECT = 0, FACET_CONV_POINTWISE = 1, FACET_CONV_IM2COL = 2 };

FACET_HD int facet_conv_path(const struct facet_conv_geom *g)
{
    if (g->cg == 1) return FACET_CONV_DIRECT;
    if (g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0) return FACET_CONV_POINTWISE;
    return FACET_CONV_IM2COL;
}

/* Floats of workspace the CUDA path needs at least: the columns of one image
 * (all groups: C kh kw x Ho Wo) for the im2col path, 0 for the direct and
 * pointwise paths (which then run their weight gradient image by image). */
FACET_HD int64_t facet_conv_cuda_min_workspace(const struct facet_conv_geom *g)
{
    return facet_conv_path(g) == FACET_CONV_IM2COL ? g->c * g->kh * g->kw * g->p : 0;
}

/* What the CUDA path prefers: room for a chunk of images whose weight
 * gradient is one GEMM per group with the images along the reduction (the
 * columns and grad_out, both laid out [rows][images x Ho Wo], each row
 * padded to FACET_CONV_CUDA_ALIGN values), which also covers the forward's
 * and grad_x's chunk of columns. One workspace serves every layer of a
 * device (nn.Conv2d keeps one), so the budget can be generous. */
enum { FACET_CONV_CUDA_BUDGET = 1 << 26 };   /* floats: 256 MB */
enum { FACET_CONV_CUDA_ALIGN = 8 };          /* values: 16 bytes of 16-bit, 32 of float32 */

/* Rows of the batched weight-gradient layout: the column rows, then grad_out's. */
FACET_HD int64_t facet_conv_cuda_gw_rows(const struct facet_conv_geom *g)
{
    return g->c * g->kh * g->kw + g->o;
}

/* A row of nb images, padded. */
FACET_HD int64_t facet_conv_cuda_gw_ld(const struct facet_conv_geom *g, int64_t nb)
{
    int64_t a = FACET_CONV_CUDA_ALIGN;
    return (nb * g->p + a - 1) / a * a;
}

/* Images whose batched weight-gradient layout fits in bytes (0 or 1: none
 * worth batching). */
FACET_HD int64_t facet_conv_cuda_gw_images(const struct facet_conv_geom *g, int64_t bytes, int64_t elem)
{
    int64_t rows = facet_conv_cuda_gw_rows(g);
    if (facet_conv_path(g) == FACET_CONV_DIRECT || rows <= 0 || g->p <= 0) return 0;
    int64_t nb = bytes / (rows * g->p * elem);
    if (nb > g->n) nb = g->n;
    if (nb > (INT32_MAX - FACET_CONV_CUDA_ALIGN) / g->p) nb = (INT32_MAX - FACET_CONV_CUDA_ALIGN) / g->p;   /* cuBLAS's int K */
    while (nb > 1 && rows * facet_conv_cuda_gw_ld(g, nb) * elem > bytes) nb--;
    return nb;
}

FACET_HD int64_t facet_conv_cuda_workspace(const struct facet_conv_geom *g)
{
    int path = facet_conv_path(g);
    if (path == FACET_CONV_DIRECT) return 0;
    int64_t rows = facet_conv_cuda_gw_rows(g), images = FACET_CONV_CUDA_BUDGET / (rows * g->p);
    if (images > g->n) images = g->n;
    if (images < 1) images = 1;
    if (path == FACET_CONV_POINTWISE && images < 2) return 0;   /* nothing to batch */
    int64_t gw = rows * facet_conv_cuda_gw_ld(g, images), cols = images * facet_conv_cuda_min_workspace(g);
    return gw > cols ? gw : cols;
}

/* Output positions q in [0, nout) whose input coordinate q*stride + off lies
 * in [0, len), as the half-open [*lo, *hi) (lo == hi when none). */
FACET_HD void facet_conv_range(int64_t off, int64_t stride, int64_t len, int64_t nout, int64_t *lo, int64_t *hi)
{
    int64_t a, b;
    if (stride == 1) {   /* the common case, without divisions */
        a = off >= 0 ? 0 : -off;
        b = len - off <= 0 ? 0 : len - off;
    } else {
        a = off >= 0 ? 0 : (-off + stride - 1) / stride;
        b = len - off <= 0 ? 0 : (len - off + stride - 1) / stride;
    }
    if (b > nout) b = nout;
    if (a > b) a = b;
    *lo = a;
    *hi = b;
}

#endif
