/*
 * conv_winograd.h - the CPU's Winograd convolution path, F(4x4, 3x3) or
 * F(2x2, 3x3) (conv_winograd.c), for conv.c, which checks every argument,
 * owns the workspace policy and the threads, and calls these for the layers
 * facet_conv_winograd_fits accepts.
 *
 * Tiles. The output is cut into m x m tiles (m = 4, or 2 with
 * FACET_CONV_WINOGRAD=2), ceil(Ho/m) x ceil(Wo/m) an image, numbered across
 * the batch (image, tile row, tile column); a call handles a range [t0, t1)
 * of them, a GEMM's worth (facet_conv_winograd_tiles) at a time; a run of
 * tiles may span images. The workspace holds the transformed filters
 * U [P][O][C] (P = (m + 2)^2 transform elements) once, their planes 32
 * floats more than O C apart, then one slot per thread
 * (facet_conv_winograd_slot floats). Every size here reads the environment
 * as the call does: set FACET_CONV_WINOGRAD before asking for a workspace.
 */
#ifndef FACET_CONV_WINOGRAD_H
#define FACET_CONV_WINOGRAD_H

#include "internal.h"
#include "conv_math.h"

/* Whether the CPU runs this layer as Winograd: 3x3, stride 1,
 * no dilation, one group, at least 16 input and output channels (below
 * that the GEMMs are too thin to gain) and outputs of at least 4 x 4 (below
 * that the transforms cost more than they save); FACET_CONV_WINOGRAD=0 in the
 * environment turns the path off (im2col instead). */
int facet_conv_winograd_fits(const struct facet_conv_geom *g);

/* The output tile's side m: 4 (F(4x4, 3x3)), or 2 (F(2x2, 3x3)) with
 * FACET_CONV_WINOGRAD=2 or where the layer's 36 O C transformed filters
 * would pass 32 MiB. core/cuda/conv_winograd.cu follows the same rule. */
int64_t facet_conv_winograd_tile(const struct facet_conv_geom *g);

/* Tiles a GEMM takes; m x m tiles an image. */
int64_t facet_conv_winograd_tiles(const struct facet_conv_geom *g);
int64_t facet_conv_winograd_image_tiles(const struct facet_conv_geom *g);
/* Floats of the shared transformed filters, and of one thread's slot. */
int64_t facet_conv_winograd_shared(const struct facet_conv_geom *g);
int64_t facet_conv_winograd_slot(const struct facet_conv_geom *g);

/* u [P][O][C] (planes facet_conv_winograd_shared / P apart) = G w G^T for
 * every filter (threaded). */
void facet_conv_winograd_filters(const struct facet_conv_geom *g, float *u, const float *w);
/* gw += G^T du G for every filter (threaded). */
void facet_conv_winograd_filter_grads(const struct facet_conv_geom *g, float *gw, const float *du);

/* out's tiles [t0, t1) = conv(x, w) + b (b may be NULL), on one slot.
 * Returns the BLAS status (0: fine). */
int facet_conv_winograd_forward(const struct facet_conv_geom *g, float *out, const float *x, const float *u,
                                const float *b, int64_t t0, int64_t t1, float *slot);
/* Tiles [t0, t1) of the backward: du [P][O][C] += their share of grad_weight
 * in the transformed domain (du may be NULL; du_fresh: = instead of +=, so
 * the caller need not zero it), and their share of grad_x
 * added into gx (may be NULL; the caller zeroes it first, and tiles of one
 * image must not be split between concurrent calls, as neighbours overlap
 * in x). Returns the BLAS status. */
int facet_conv_winograd_backward(const struct facet_conv_geom *g, float *gx, float *du, int du_fresh,
                                 const float *gout, const float *x, const float *u, int64_t t0, int64_t t1, float *slot);

#endif
