/*
 * conv_winograd.cuh - the GPU's Winograd convolutions (conv_winograd.cu) for
 * conv.cu, which has checked every argument and calls these for float32
 * layers that facet_conv_winograd_fits accepts (3x3, stride 1, one group,
 * >= 16 channels each way, outputs of at least 4 x 4) when wino_images says
 * the workspace holds at least one image of them; else the layer runs as
 * im2col. 16-bit activations stay on im2col, whose tensor-core GEMMs see
 * the direct sum's inputs (a transform's outputs rounded to 16 bits would
 * carry its amplified rounding).
 */
#ifndef FACET_CONV_WINOGRAD_CUH
#define FACET_CONV_WINOGRAD_CUH

#include "cuda_common.cuh"
#include "conv_math.h"

/* Images a chunk of the Winograd path takes in a workspace of ws_elems
 * floats; 0 when the layer does not run as Winograd on the GPU (not a
 * Winograd layer, FACET_CONV_WINOGRAD=0, or a workspace without room for
 * one image's transformed tiles: P (C + O) x tiles floats). */
int64_t wino_images(const struct facet_conv_geom &g, int64_t ws_elems);

/* out = conv(x, w) + bias (bias may be NULL), for a layer wino_images took. */
int wino_forward(const struct facet_conv_geom &g, float *out, const float *x, const float *w, const float *bias,
                 float *ws, int64_t ws_elems);

/* grad_x = conv's input gradient (overwritten; gx may be NULL) and
 * grad_w += its weight gradient (gw may be NULL), for a layer wino_images
 * took; grad_bias is conv.cu's. */
int wino_backward(const struct facet_conv_geom &g, float *gx, float *gw, const float *gout, const float *x,
                  const float *w, float *ws, int64_t ws_elems);

#endif
