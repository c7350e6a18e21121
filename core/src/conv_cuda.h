/*
 * conv_cuda.h - the CUDA entry points of the convolution (core/cuda/conv.cu).
 * conv.c checks every argument first; these receive device pointers, the
 * checked geometry and the workspace size in floats (at least what
 * facet_conv_cuda_min_workspace asks). Without FACET_WITH_CUDA they are
 * inline functions that report CUDA missing, so no stub file is needed.
 */
#ifndef FACET_CONV_CUDA_H
#define FACET_CONV_CUDA_H

#include "internal.h"
#include "conv_math.h"

/* Floats of workspace the CUDA path needs at least, and prefers: the columns
 * of one image (all groups: C kh kw x Ho Wo), or of a chunk of images that
 * share one batched GEMM per group. 0 for the direct and pointwise paths. */
static inline int64_t facet_conv_cuda_min_workspace(const struct facet_conv_geom *g)
{
    return facet_conv_path(g) == FACET_CONV_IM2COL ? g->c * g->kh * g->kw * g->p : 0;
}
enum { FACET_CONV_CUDA_BUDGET = 1 << 24 };   /* 64 MB of columns is enough to batch */
static inline int64_t facet_conv_cuda_workspace(const struct facet_conv_geom *g)
{
    int64_t unit = facet_conv_cuda_min_workspace(g);
    if (unit == 0) return 0;
    int64_t images = FACET_CONV_CUDA_BUDGET / unit;
    if (images > g->n) images = g->n;
    if (images < 1) images = 1;
    return images * unit;
}

#ifdef FACET_WITH_CUDA
int facet_cuda_conv2d_forward(const struct facet_conv_geom *g, float *out, const float *x, const float *w,
                              const float *bias, float *ws, int64_t ws_elems);
int facet_cuda_conv2d_backward(const struct facet_conv_geom *g, float *grad_x, float *grad_w, float *grad_b,
                               const float *grad_out, const float *x, const float *w, float *ws, int64_t ws_elems);
#else
#define FACET_CONV_NO_CUDA(what) \
    facet_fail(FACET_STATUS_ERR_DEVICE, "%s: facet was built without CUDA (no nvcc at build time)", what)
static inline int facet_cuda_conv2d_forward(const struct facet_conv_geom *g, float *out, const float *x,
                                            const float *w, const float *bias, float *ws, int64_t ws_elems)
{ (void)g; (void)out; (void)x; (void)w; (void)bias; (void)ws; (void)ws_elems;
  return FACET_CONV_NO_CUDA("facet_conv2d_forward"); }
static inline int facet_cuda_conv2d_backward(const struct facet_conv_geom *g, float *grad_x, float *grad_w,
                                             float *grad_b, const float *grad_out, const float *x, const float *w,
                                             float *ws, int64_t ws_elems)
{ (void)g; (void)grad_x; (void)grad_w; (void)grad_b; (void)grad_out; (void)x; (void)w; (void)ws; (void)ws_elems;
  return FACET_CONV_NO_CUDA("facet_conv2d_backward"); }
#endif

#endif
