/*
 * conv.c - 2-D convolution (NCHW): the argument checks, the workspace
 * policy and the CPU GEMM paths; the CPU direct kernels are conv_direct.c,
 * and CUDA tensors go to core/cuda/conv.cu. x, out, grad_out and grad_x are
 * float32, float16 or bfloat16 (one dtype); weight, bias, their gradients and
 * the workspace are float32. A 16-bit CPU call runs the float32 paths on
 * widened copies of x and grad_out and rounds out / grad_x once
 * (half_layers.h: conversion to float32 and OpenBLAS, for correctness, not
 * speed); conv.cu runs 16-bit GEMMs with float32 accumulation.
 *
 * Four paths, chosen by facet_conv_path (conv_math.h) and, for the CPU, cpu_path:
 *   IM2COL     per image and group, the input is unrolled into the workspace
 *              as col [K x P] (K = C/groups kh kw, P = Ho Wo), then one SGEMM
 *              out_g [O/groups x P] = weight_g [O/groups x K] col. Backward
 *              recomputes col for grad_weight_g += grad_out_g col^T, and puts
 *              weight_g^T grad_out_g [K x P] through col2im for grad_x. Large
 *              images do this a band of output rows at a time (band_rows).
 *   POINTWISE  1x1, stride 1, no padding: x's group planes are col already.
 *   DIRECT     one input channel per output channel (depthwise, C/groups
 *              == 1): plain loops over the taps, since a GEMM with M = 1
 *              runs at a small fraction of its peak (conv_direct.c).
 *   WINOGRAD   CPU only: 3x3, stride 1, one group, >= 16 channels each way,
 *              outputs >= 4 x 4 (an IResNet's layers but its stem and
 *              strided ones):
 *              Winograd F(4x4, 3x3) (or F(2x2, 3x3)), 36 (16) GEMMs over
 *              transformed tiles with 4x (2.25x) fewer multiplications
 *              (conv_winograd.c). The workspace holds the transformed
 *              filters, then the slots.
 *
 * Threads. The workspace holds S "slots" of one band's K x (rows Wo) floats. With S > 1, images
 * run in parallel, one per thread and slot, each GEMM on one thread (OpenMP
 * OpenBLAS does not nest inside a parallel region); with S = 1, images run
 * in turn and OpenBLAS threads each GEMM. Image-parallel measured 1.3-1.5x
 * faster on 2 cores for every IResNet layer from 64 x 56 x 56 to 512 x 7 x 7
 * (bench/conv.lua --slots 1 shows the other mode), so the recommended
 * workspace has one slot per thread (up to the batch size) while that fits
 * in CPU_SLOTS_BUDGET. Per-image work is independent except grad_weight,
 * which every image adds to: backward runs as one parallel region over fixed
 * chunks of images, each chunk summed into its own copy of grad_weight (kept
 * for the process), added up in chunk order at the end; one region instead of
 * a few per image, and chunks and images taken dynamically, are what keep it
 * fast beside other busy processes (docs/threads.md). S is read off the workspace at each
 * call (never more than the thread count or the batch), so any workspace of
 * at least one slot works; facet_conv2d_workspace_size says how many slots
 * are worth having.
 */
#include "internal.h"
#include "conv_math.h"
#include "conv_direct.h"
#include "conv_winograd.h"
#include "half_layers.h"
#include <limits.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CONV_FMT "stride %dx%d, pad %dx%d, dilation %dx%d, groups %d"
#define CONV_ARGS(s) (s)->stride_h, (s)->stride_w, (s)->pad_h, (s)->pad_w, (s)->dilation_h, (s)->dilation_w, (s)->groups

/* Slots beyond the first only while all of them fit in this many floats
 * (64 MB): a layer's workspace is allocated for the whole run. */
enum { CPU_SLOTS_BUDGET = 1 << 24 };

/* Columns in bands of output rows. An image whose columns pass CPU_BAND_OVER
 * floats (4 MB) makes and uses them about CPU_BAND_FLOATS (1 MB, a core's L2)
 * at a time: IResNet's first 3x3 layer at 112 x 112 has 29 MB of columns an
 * image, which left the caches between im2col and the GEMM (56% of the GEMM
 * rate with AVX-512 kernels; banded 72%, forward and backward 1.2-1.3x
 * faster - bench/conv.lua). Smaller images keep one band, so their results
 * and workspace are what they were. */
enum { CPU_BAND_FLOATS = 1 << 18, CPU_BAND_OVER = 1 << 20 };

/* Output rows per band of the CPU im2col path (all of them, or a band). */
static int64_t band_rows(const struct facet_conv_geom *g)
{
    if (g->k * g->p <= CPU_BAND_OVER || g->wo == 0) return g->ho;
    int64_t r = CPU_BAND_FLOATS / (g->k * g->wo);
    if (r < 1) r = 1;
    return r < g->ho ? r : g->ho;
}

/* ---- argument checks ------------------------------------------------------------ */

static int conv_geometry(const char *fn, struct facet_conv_geom *g, const facet_tensor *x,
                         const facet_tensor *weight, const facet_conv2d_params *s)
{
    int rc = facet_check_act_dtype(fn, "x", x);
    if (!rc) rc = facet_check_dtype(fn, "weight", weight, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_same_device(fn, x, weight);
    if (rc) return rc;
    if (!s)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: params (facet_conv2d_params) is NULL", fn);
    if (s->stride_h < 1 || s->stride_w < 1 || s->pad_h < 0 ||
        s->pad_w < 0 || s->dilation_h < 1 || s->dilation_w < 1 ||
        s->groups < 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: want strides, dilations and groups >= 1, pads >= 0; got " CONV_FMT,
                          fn, CONV_ARGS(s));
    if (x->ndim != 4 || weight->ndim != 4)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: want 4-D x (N x C x H x W) and weight (O x C/groups x kh x kw); "
                          "got x %s, weight %s", fn, facet_desc(x), facet_desc(weight));
    if (!facet_contiguous(x) || !facet_contiguous(weight))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: x %s and weight %s must be contiguous", fn, facet_desc(x),
                          facet_desc(weight));
    memset(g, 0, sizeof *g);
    g->n = x->sizes[0], g->c = x->sizes[1], g->h = x->sizes[2], g->w = x->sizes[3];
    g->o = weight->sizes[0], g->kh = weight->sizes[2], g->kw = weight->sizes[3];
    g->sh = s->stride_h, g->sw = s->stride_w;
    g->ph = s->pad_h, g->pw = s->pad_w;
    g->dh = s->dilation_h, g->dw = s->dilation_w;
    g->groups = s->groups;
    if (g->c < 1 || g->h < 1 || g->w < 1 || g->o < 1 || g->kh < 1 || g->kw < 1 || weight->sizes[1] < 1)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: x %s and weight %s must not have empty channel, spatial or kernel dims",
                          fn, facet_desc(x), facet_desc(weight));
    if (g->c % g->groups || g->o % g->groups)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: groups %d must divide the channels of x %s (%lld) and the outputs of "
                          "weight %s (%lld)", fn, s->groups, facet_desc(x), (long long)g->c,
                          facet_desc(weight), (long long)g->o);
    g->cg = g->c / g->groups, g->og = g->o / g->groups;
    if (weight->sizes[1] != g->cg)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: weight %s must have C/groups = %lld input channels for x %s with "
                          "groups %d", fn, facet_desc(weight), (long long)g->cg, facet_desc(x),
                          s->groups);
    /* extents in double first, so huge dilations or pads cannot overflow */
    double eh = (double)g->dh * (double)(g->kh - 1) + 1, ew = (double)g->dw * (double)(g->kw - 1) + 1;
    double hp = (double)g->h + 2.0 * (double)g->ph, wp = (double)g->w + 2.0 * (double)g->pw;
    if (eh > hp || ew > wp)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: the dilated kernel (%.0fx%.0f) of weight %s is larger than the padded "
                          "input (%.0fx%.0f) of x %s (" CONV_FMT ")", fn, eh, ew, facet_desc(weight), hp, wp,
                          facet_desc(x), CONV_ARGS(s));
    g->ho = (g->h + 2 * g->ph - (int64_t)eh) / g->sh + 1;
    g->wo = (g->w + 2 * g->pw - (int64_t)ew) / g->sw + 1;
    g->k = g->cg * g->kh * g->kw;
    g->p = g->ho * g->wo;
    /* BLAS and cuBLAS take 32-bit sizes; element counts must stay far from 2^63 */
    if ((double)g->ho * (double)g->wo > INT_MAX || g->k > INT_MAX || g->o > INT_MAX ||
        (double)g->c * (double)g->kh * (double)g->kw * (double)g->p > 1e17 ||
        (double)g->n * (double)g->o * (double)g->p > 1e17)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: x %s with weight %s (" CONV_FMT ") is too large (output plane "
                          "%.0f, column rows %lld)", fn, facet_desc(x), facet_desc(weight), CONV_ARGS(s),
                          (double)g->ho * (double)g->wo, (long long)g->k);
    return 0;
}

/* t: a contiguous N x C x H x W of x's dtype (or a float32 vector when
 * d1 < 0, or float32 weight-shaped when f32) on x's device. */
static int check_operand(const char *fn, const char *name, const facet_tensor *t, const facet_tensor *x,
                         const facet_tensor *weight, const facet_conv2d_params *s, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                         int f32)
{
    int rc = f32 || d1 < 0 ? facet_check_dtype(fn, name, t, FACET_DTYPE_FLOAT32) : facet_check_dtype_of(fn, name, t, "x", x);
    if (!rc) rc = facet_check_same_device(fn, t, x);
    if (rc) return rc;
    int vec = d1 < 0;
    bool ok = facet_contiguous(t) && t->ndim == (vec ? 1 : 4) && t->sizes[0] == d0 &&
              (vec || (t->sizes[1] == d1 && t->sizes[2] == d2 && t->sizes[3] == d3));
    if (ok) return 0;
    if (vec)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s %s must be a contiguous float32 vector of %lld for weight %s", fn,
                          name, facet_desc(t), (long long)d0, facet_desc(weight));
    return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s %s must be contiguous %lldx%lldx%lldx%lld for x %s, weight %s (" CONV_FMT
                      ")", fn, name, facet_desc(t), (long long)d0, (long long)d1, (long long)d2, (long long)d3,
                      facet_desc(x), facet_desc(weight), CONV_ARGS(s));
}

/* The CPU's path: conv_math.h's, with the 3x3 stride-1 layers of
 * facet_conv_winograd_fits as Winograd F(2x2, 3x3) (conv_winograd.c). */
enum { CPU_WINOGRAD = 3 };

static int cpu_path(const struct facet_conv_geom *g)
{
    int p = facet_conv_path(g);
    return p == FACET_CONV_IM2COL && facet_conv_winograd_fits(g) ? CPU_WINOGRAD : p;
}

/* CPU workspace: `shared` floats every thread reads (Winograd's transformed
 * filters), then slots of `slot` floats, one per thread. */
static int64_t cpu_shared(const struct facet_conv_geom *g, int path)
{
    return path == CPU_WINOGRAD ? facet_conv_winograd_shared(g) : 0;
}

static int64_t cpu_slot(const struct facet_conv_geom *g, int path)
{
    if (path == CPU_WINOGRAD) return facet_conv_winograd_slot(g);
    return path == FACET_CONV_IM2COL ? g->k * band_rows(g) * g->wo : 0;
}

/* Floats the device's path cannot run with less than: one slot. */
static int64_t min_workspace(const struct facet_conv_geom *g, int device)
{
    if (device == FACET_DEVICE_CUDA) return facet_conv_cuda_min_workspace(g);
    int path = cpu_path(g);
    return cpu_shared(g, path) + cpu_slot(g, path);
}

static int check_workspace(const char *fn, const facet_tensor *ws, const facet_tensor *x, const facet_tensor *weight,
                           const struct facet_conv_geom *g, int64_t *elems)
{
    int64_t need = min_workspace(g, x->device);
    *elems = 0;
    if (!ws) {
        if (need == 0) return 0;
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: workspace is NULL; x %s with weight %s needs %lld floats (see "
                          "facet_conv2d_workspace_size)", fn, facet_desc(x), facet_desc(weight), (long long)need);
    }
    int rc = facet_check_dtype(fn, "workspace", ws, FACET_DTYPE_FLOAT32);
    if (!rc) rc = facet_check_same_device(fn, ws, x);
    if (rc) return rc;
    if (!facet_contiguous(ws))
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: workspace %s must be contiguous", fn, facet_desc(ws));
    *elems = facet_numel(ws);
    if (*elems < need)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: workspace %s holds %lld floats; x %s with weight %s needs at least %lld "
                          "(see facet_conv2d_workspace_size)", fn, facet_desc(ws), (long long)*elems, facet_desc(x),
                          facet_desc(weight), (long long)need);
    return 0;
}

/* Whether two contiguous float32 tensors share elements. */
static bool overlap(const facet_tensor *a, const facet_tensor *b)
{
    if (!a || !b || a->storage != b->storage) return false;
    int64_t na = facet_numel(a), nb = facet_numel(b);
    return na > 0 && nb > 0 && a->offset < b->offset + nb && b->offset < a->offset + na;
}

/* Operand `self` of ops[] is written: no other operand may share its memory
 * (the same handle twice included). */
static int check_written(const char *fn, const char *const *names, const facet_tensor *const *ops, int nops, int self)
{
    for (int i = 0; i < nops; i++)
        if (i != self && overlap(ops[self], ops[i]))
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: %s %s overlaps %s %s", fn, names[self], facet_desc(ops[self]),
                              names[i], facet_desc(ops[i]));
    return 0;
}

/* ---- workspace policy (CPU) ---------------------------------------------------- */

/* Images worth running side by side: one per thread (and at most one per
 * image) while their slots fit in CPU_SLOTS_BUDGET. */
static int64_t cpu_image_threads(const struct facet_conv_geom *g)
{
    int64_t t = facet_threads();
    if (t > g->n) t = g->n;
    int path = cpu_path(g);
    int64_t slot = cpu_slot(g, path), shared = cpu_shared(g, path);
    if (slot > 0) {
        int64_t fit = (CPU_SLOTS_BUDGET - shared) / slot;
        if (t > fit) t = fit;
    }
    return t < 1 ? 1 : t;
}

/* Slots this call can use: what the workspace holds, at most the above. */
static int64_t cpu_slots(const struct facet_conv_geom *g, int64_t ws_elems)
{
    int path = cpu_path(g);
    int64_t t = cpu_image_threads(g), slot = cpu_slot(g, path), fit = ws_elems - cpu_shared(g, path);
    if (slot > 0 && t > fit / slot) t = fit / slot;
    return t < 1 ? 1 : t;
}

int facet_conv2d_workspace_size(int64_t *elements, const facet_tensor *x, const facet_tensor *weight,
                                const facet_conv2d_params *conv)
{
    static const char *fn = "facet_conv2d_workspace_size";
    if (!elements) return facet_fail(FACET_STATUS_ERR_ARG, "%s: elements is NULL", fn);
    *elements = 0;
    struct facet_conv_geom g;
    int rc = conv_geometry(fn, &g, x, weight, conv);
    if (rc) return rc;
    if (x->device == FACET_DEVICE_CUDA) *elements = facet_conv_cuda_workspace(&g);
    else {
        int path = cpu_path(&g);
        *elements = cpu_shared(&g, path) + cpu_image_threads(&g) * cpu_slot(&g, path);
    }
    return 0;
}

/* ---- CPU: im2col and col2im ------------------------------------------------------- */

/* The output rows [lo, hi) of band [r0, r1) whose tap row i reads inside x
 * (the others read the padding). */
static void band_tap_rows(const struct facet_conv_geom *g, int64_t i, int64_t r0, int64_t r1, int64_t *lo,
                          int64_t *hi)
{
    facet_conv_range(i * g->dh - g->ph, g->sh, g->h, g->ho, lo, hi);
    *lo = *lo < r0 ? r0 : *lo > r1 ? r1 : *lo;
    *hi = *hi > r1 ? r1 : *hi < *lo ? *lo : *hi;
}

/* Columns of one image's group for output rows [r0, r1): row (c kh + i) kw + j
 * of col [K x (r1 - r0) Wo] is channel c seen through tap (i, j); taps that
 * land in the padding read 0. */
FACET_CLONES static void im2col(const struct facet_conv_geom *g, const float *x, float *col, int64_t r0, int64_t r1)
{
    const int64_t H = g->h, W = g->w, Wo = g->wo, P = (r1 - r0) * Wo, taps = g->kh * g->kw;
    for (int64_t c = 0; c < g->cg; c++) {
        const float *xc = x + c * H * W;
        for (int64_t t = 0; t < taps; t++) {
            int64_t i = t / g->kw, j = t % g->kw, offw = j * g->dw - g->pw;
            int64_t hlo, hhi, wlo, whi;
            band_tap_rows(g, i, r0, r1, &hlo, &hhi);
            facet_conv_range(offw, g->sw, W, Wo, &wlo, &whi);
            float *row = col + (c * taps + t) * P;   /* output row ho at (ho - r0) Wo */
            memset(row, 0, (size_t)((hlo - r0) * Wo) * sizeof(float));
            for (int64_t ho = hlo; ho < hhi; ho++) {
                float *r = row + (ho - r0) * Wo;
                const float *xr = xc + (ho * g->sh + i * g->dh - g->ph) * W;
                for (int64_t q = 0; q < wlo; q++) r[q] = 0.0f;
                if (g->sw == 1) {
                    if (whi > wlo) memcpy(r + wlo, xr + wlo + offw, (size_t)(whi - wlo) * sizeof(float));
                } else if (g->sw == 2) {
                    /* a constant stride vectorises (even lanes of two loads) */
                    #pragma omp simd
                    for (int64_t q = wlo; q < whi; q++) r[q] = xr[2 * q + offw];
                } else {
                    for (int64_t q = wlo; q < whi; q++) r[q] = xr[q * g->sw + offw];
                }
                for (int64_t q = whi; q < Wo; q++) r[q] = 0.0f;
            }
            memset(row + (hhi - r0) * Wo, 0, (size_t)((r1 - hhi) * Wo) * sizeof(float));
        }
    }
}

/* The adjoint of im2col for output rows [r0, r1): each input element of the
 * group gets the column entries that sampled it added (overlapping taps add
 * up). The caller zeroes x before an image's first band. */
FACET_CLONES static void col2im(const struct facet_conv_geom *g, const float *col, float *x, int64_t r0, int64_t r1)
{
    const int64_t H = g->h, W = g->w, Wo = g->wo, P = (r1 - r0) * Wo, taps = g->kh * g->kw;
    for (int64_t c = 0; c < g->cg; c++) {
        float *xc = x + c * H * W;
        for (int64_t t = 0; t < taps; t++) {
            int64_t i = t / g->kw, j = t % g->kw, offw = j * g->dw - g->pw;
            int64_t hlo, hhi, wlo, whi;
            band_tap_rows(g, i, r0, r1, &hlo, &hhi);
            facet_conv_range(offw, g->sw, W, Wo, &wlo, &whi);
            const float *row = col + (c * taps + t) * P;
            for (int64_t ho = hlo; ho < hhi; ho++) {
                const float *r = row + (ho - r0) * Wo;
                float *xr = xc + (ho * g->sh + i * g->dh - g->ph) * W;
                if (g->sw == 1) {
                    #pragma omp simd
                    for (int64_t q = wlo; q < whi; q++) xr[q + offw] += r[q];
                } else if (g->sw == 2) {
                    for (int64_t q = wlo; q < whi; q++) xr[2 * q + offw] += r[q];
                } else {
                    for (int64_t q = wlo; q < whi; q++) xr[q * g->sw + offw] += r[q];
                }
            }
        }
    }
}

/* grad_bias[o] += sum over images and positions of grad_out[n, o]. */
static void bias_grad(const struct facet_conv_geom *g, float *gb, const float *gout)
{
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (g->n * g->o * g->p >= FACET_PARALLEL_GRAIN)
    for (int64_t o = 0; o < g->o; o++) {
        double s = 0.0;
        for (int64_t n = 0; n < g->n; n++) s += facet_conv_plane_sum(gout + (n * g->o + o) * g->p, g->p);
        gb[o] += (float)s;
    }
}

/* ---- CPU: GEMM paths -------------------------------------------------------------- */

/* Loads OpenBLAS on the calling thread, so a load failure is reported here
 * and not inside a parallel region (where the message would land on a
 * worker's thread-local error). */
static int blas_ready(void)
{
    float a = 0.0f, b = 0.0f, c = 0.0f;
    return facet_blas_sgemm(0, 0, 1, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1);
}

/* One image: out [O x P] from x [C x H x W]; col is this image's slot. */
static int forward_image(const struct facet_conv_geom *g, int path, float *out, const float *x, const float *w,
                         const float *b, float *col)
{
    const int64_t HW = g->h * g->w;
    int rc = 0;
    const int64_t rows = band_rows(g);
    for (int64_t gi = 0; gi < g->groups; gi++) {
        const float *xg = x + gi * g->cg * HW, *wg = w + gi * g->og * g->k;
        float *og = out + gi * g->og * g->p;
        if (path != FACET_CONV_IM2COL) {
            rc |= facet_blas_sgemm(0, 0, g->og, g->p, g->k, 1.0f, wg, g->k, xg, g->p, 0.0f, og, g->p);
            continue;
        }
        for (int64_t r0 = 0; r0 < g->ho; r0 += rows) {
            const int64_t r1 = r0 + rows < g->ho ? r0 + rows : g->ho, pb = (r1 - r0) * g->wo;
            im2col(g, xg, col, r0, r1);
            rc |= facet_blas_sgemm(0, 0, g->og, pb, g->k, 1.0f, wg, g->k, col, pb, 0.0f, og + r0 * g->wo, g->p);
        }
    }
    if (b) {
        for (int64_t o = 0; o < g->o; o++) {
            float *r = out + o * g->p, bv = b[o];
            for (int64_t q = 0; q < g->p; q++) r[q] += bv;
        }
    }
    return rc;
}

/* Winograd: the filters transformed once into the workspace's shared part,
 * then runs of a GEMM's worth of tiles (which may span images) taken by the
 * threads as they come free, one slot each. */
static int forward_winograd(const struct facet_conv_geom *g, float *out, const float *x, const float *w,
                            const float *b, float *ws, int64_t ws_elems)
{
    const int64_t slots = cpu_slots(g, ws_elems), slot = cpu_slot(g, CPU_WINOGRAD);
    const int64_t tiles = g->n * facet_conv_winograd_image_tiles(g), nb = facet_conv_winograd_tiles(g);
    float *u = ws, *s0 = ws + cpu_shared(g, CPU_WINOGRAD);
    facet_conv_winograd_filters(g, u, w);
    int failed = 0;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(slots) if (slots > 1) reduction(| : failed)
    for (int64_t t = 0; t < tiles; t += nb)
        failed |= facet_conv_winograd_forward(g, out, x, u, b, t, t + nb < tiles ? t + nb : tiles,
                                              s0 + omp_get_thread_num() * slot);
    return failed ? facet_fail(FACET_STATUS_ERR_IO, "facet_conv2d_forward: the BLAS call failed") : 0;
}

static int forward_cpu(const struct facet_conv_geom *g, float *out, const float *x, const float *w,
                       const float *b, float *ws, int64_t ws_elems)
{
    int path = cpu_path(g);
    if (path == FACET_CONV_DIRECT) {
        facet_conv_direct_forward(g, out, x, w, b);
        return 0;
    }
    int rc = blas_ready();
    if (rc) return rc;
    if (path == CPU_WINOGRAD) return forward_winograd(g, out, x, w, b, ws, ws_elems);
    const int64_t slots = cpu_slots(g, ws_elems), slot = cpu_slot(g, path);
    const int64_t xs = g->c * g->h * g->w, os = g->o * g->p;
    int failed = 0;
    /* dynamic: a thread that runs takes the images of one waiting for a time slice */
    #pragma omp parallel for schedule(dynamic, 1) num_threads(slots) if (slots > 1) reduction(| : failed)
    for (int64_t n = 0; n < g->n; n++) {
        float *col = slot ? ws + omp_get_thread_num() * slot : NULL;
        failed |= forward_image(g, path, out + n * os, x + n * xs, w, b, col);
    }
    return failed ? facet_fail(FACET_STATUS_ERR_IO, "facet_conv2d_forward: the BLAS call failed") : 0;
}

/* Per-thread partial sums of grad_weight for the one-region backward
 * (threads 1..S-1; thread 0 adds straight into grad_weight). Grown on
 * demand and kept for the process, so a training step allocates nothing
 * after its first; the lock serialises the rare concurrent callers. */
static pthread_mutex_t partial_lock = PTHREAD_MUTEX_INITIALIZER;
static float *partial_buf;
static int64_t partial_elems;

static float *partials(int64_t elems)
{
    if (elems <= partial_elems) return partial_buf;
    float *p = malloc((size_t)elems * sizeof(float));
    if (!p) return NULL;
    free(partial_buf);
    partial_buf = p;
    partial_elems = elems;
    return p;
}

/* dst[e] += the `copies` partial sums src[k sz + e], in k order (the
 * chunks' order, so the result does not depend on which thread took which).
 * Called inside a parallel region: the loop is shared among its threads. */
static void add_partials(float *dst, const float *src, int64_t copies, int64_t sz)
{
    #pragma omp for schedule(static)
    for (int64_t e = 0; e < sz; e++) {
        float s = dst[e];
        for (int64_t k = 0; k < copies; k++) s += src[k * sz + e];
        dst[e] = s;
    }
}

/* One image's backward on one thread: grad_weight_g += grad_out_g col^T into
 * gw (this thread's sum), then grad_x through the same slot. */
static int backward_image(const struct facet_conv_geom *g, int path, float *gx, float *gw, const float *go,
                          const float *x, const float *w, float *col)
{
    const int64_t HW = g->h * g->w, rows = band_rows(g);
    int rc = 0;
    for (int64_t gi = 0; gi < g->groups; gi++) {
        const float *xg = x + gi * g->cg * HW, *gog = go + gi * g->og * g->p, *wg = w + gi * g->og * g->k;
        float *gwg = gw ? gw + gi * g->og * g->k : NULL, *gxg = gx ? gx + gi * g->cg * HW : NULL;
        if (path == FACET_CONV_POINTWISE) {
            if (gwg) rc |= facet_blas_sgemm(0, 1, g->og, g->k, g->p, 1.0f, gog, g->p, xg, g->p, 1.0f, gwg, g->k);
            if (gxg) rc |= facet_blas_sgemm(1, 0, g->cg, g->p, g->og, 1.0f, wg, g->k, gog, g->p, 0.0f, gxg, g->p);
            continue;
        }
        if (gxg) memset(gxg, 0, (size_t)(g->cg * HW) * sizeof(float));
        /* a band at a time: its columns for grad_weight, then the same slot for grad_x's */
        for (int64_t r0 = 0; r0 < g->ho; r0 += rows) {
            const int64_t r1 = r0 + rows < g->ho ? r0 + rows : g->ho, pb = (r1 - r0) * g->wo;
            const float *gob = gog + r0 * g->wo;
            if (gwg) {
                im2col(g, xg, col, r0, r1);
                rc |= facet_blas_sgemm(0, 1, g->og, g->k, pb, 1.0f, gob, g->p, col, pb, 1.0f, gwg, g->k);
            }
            if (gxg) {
                rc |= facet_blas_sgemm(1, 0, g->k, pb, g->og, 1.0f, wg, g->k, gob, g->p, 0.0f, col, pb);
                col2im(g, col, gxg, r0, r1);
            }
        }
    }
    return rc;
}

/* Chunks of images per thread in the backward region: a thread that runs
 * takes the chunks of one waiting for a time slice beside other busy
 * processes, instead of waiting for it at the region's end. */
enum { CHUNKS_PER_THREAD = 2 };

/* Images in parallel, each GEMM on one thread. Every image adds into
 * grad_weight, so the images are cut into fixed chunks, each summed into its
 * own copy (chunk 0 straight into grad_weight), and the copies are added at
 * the end in chunk order: threads take chunks as they come free, and the
 * result does not depend on which thread took which. The whole backward is
 * one parallel region: beside other busy processes every region waits for
 * its slowest thread, and the former scheme (per pair of images an im2col
 * region, then GEMMs threaded by OpenBLAS) had ~200 regions per step in a
 * small convnet's second layer (docs/threads.md). Returns -1 when the
 * partial sums cannot be allocated. */
static int backward_one_region(const struct facet_conv_geom *g, int path, float *gx, float *gw, const float *gout,
                               const float *x, const float *w, float *ws, int64_t slots, int64_t slot)
{
    const int64_t xs = g->c * g->h * g->w, os = g->o * g->p, wsz = g->o * g->k;
    const int64_t chunks = slots * CHUNKS_PER_THREAD < g->n ? slots * CHUNKS_PER_THREAD : g->n;
    pthread_mutex_lock(&partial_lock);
    float *part = gw && chunks > 1 ? partials((chunks - 1) * wsz) : NULL;
    if (gw && chunks > 1 && !part) {
        pthread_mutex_unlock(&partial_lock);
        return -1;
    }
    int failed = 0;
    #pragma omp parallel num_threads(slots) reduction(| : failed)
    {
        float *col = slot ? ws + omp_get_thread_num() * slot : NULL;
        #pragma omp for schedule(dynamic, 1)
        for (int64_t c = 0; c < chunks; c++) {
            float *acc = NULL;
            if (gw) {
                acc = c ? part + (c - 1) * wsz : gw;
                if (c) memset(acc, 0, (size_t)wsz * sizeof(float));
            }
            for (int64_t n = c * g->n / chunks; n < (c + 1) * g->n / chunks; n++)
                failed |= backward_image(g, path, gx ? gx + n * xs : NULL, acc, gout + n * os, x + n * xs, w, col);
        }
        if (gw && chunks > 1) add_partials(gw, part, chunks - 1, wsz);
    }
    pthread_mutex_unlock(&partial_lock);
    return failed;
}

/* Winograd: chunks of whole images (neighbouring tiles overlap in grad_x),
 * each summing its share of grad_weight, transformed, into its own copy
 * (added up in chunk order, as backward_one_region), then G^T dU G once. */
static int backward_winograd(const struct facet_conv_geom *g, float *gx, float *gw, const float *gout,
                             const float *x, const float *w, float *ws, int64_t ws_elems)
{
    const int64_t slots = cpu_slots(g, ws_elems), slot = cpu_slot(g, CPU_WINOGRAD);
    const int64_t per = facet_conv_winograd_image_tiles(g), xs = g->c * g->h * g->w;
    const int64_t dsz = facet_conv_winograd_shared(g);
    const int64_t chunks = slots * CHUNKS_PER_THREAD < g->n ? slots * CHUNKS_PER_THREAD : g->n;
    float *u = ws, *s0 = ws + cpu_shared(g, CPU_WINOGRAD);
    if (gx) facet_conv_winograd_filters(g, u, w);
    pthread_mutex_lock(&partial_lock);
    float *part = gw ? partials(chunks * dsz) : NULL;
    if (gw && !part) {
        pthread_mutex_unlock(&partial_lock);
        return facet_fail(FACET_STATUS_ERR_MEMORY, "facet_conv2d_backward: no memory for %lld floats of grad_weight "
                          "partial sums", (long long)(chunks * dsz));
    }
    int failed = 0;
    #pragma omp parallel num_threads(slots) if (slots > 1) reduction(| : failed)
    {
        float *slot_p = s0 + omp_get_thread_num() * slot;
        #pragma omp for schedule(dynamic, 1)
        for (int64_t c = 0; c < chunks; c++) {
            const int64_t n0 = c * g->n / chunks, n1 = (c + 1) * g->n / chunks;
            float *acc = gw ? part + c * dsz : NULL;
            if (gx) memset(gx + n0 * xs, 0, (size_t)((n1 - n0) * xs) * sizeof(float));
            failed |= facet_conv_winograd_backward(g, gx, acc, 1, gout, x, u, n0 * per, n1 * per, slot_p);
        }
        if (gw && chunks > 1) add_partials(part, part + dsz, chunks - 1, dsz);
    }
    if (gw) facet_conv_winograd_filter_grads(g, gw, part);
    pthread_mutex_unlock(&partial_lock);
    return failed ? facet_fail(FACET_STATUS_ERR_IO, "facet_conv2d_backward: the BLAS call failed") : 0;
}

static int backward_cpu(const struct facet_conv_geom *g, float *gx, float *gw, float *gb, const float *gout,
                        const float *x, const float *w, float *ws, int64_t ws_elems)
{
    int path = cpu_path(g);
    if (path == FACET_CONV_DIRECT) {
        facet_conv_direct_backward(g, gx, gw, gb, gout, x, w);
        return 0;
    }
    if (gb) bias_grad(g, gb, gout);
    if (!gx && !gw) return 0;
    int rc = blas_ready();
    if (rc) return rc;
    if (path == CPU_WINOGRAD) return backward_winograd(g, gx, gw, gout, x, w, ws, ws_elems);
    const int64_t slots = cpu_slots(g, ws_elems), slot = cpu_slot(g, path);
    int failed = slots > 1 ? backward_one_region(g, path, gx, gw, gout, x, w, ws, slots, slot) : -1;
    if (failed == -1) {
        /* one slot (or no memory for the partial sums): images in turn, each
         * GEMM threaded by OpenBLAS */
        failed = 0;
        for (int64_t n = 0; n < g->n; n++)
            failed |= backward_image(g, path, gx ? gx + n * g->c * g->h * g->w : NULL, gw, gout + n * g->o * g->p,
                                     x + n * g->c * g->h * g->w, w, ws);
    }
    return failed ? facet_fail(FACET_STATUS_ERR_IO, "facet_conv2d_backward: the BLAS call failed") : 0;
}

/* ---- the API ------------------------------------------------------------------------ */

int facet_conv2d_forward(facet_tensor *out, const facet_tensor *x, const facet_tensor *weight,
                         const facet_tensor *bias, facet_tensor *workspace, const facet_conv2d_params *conv)
{
    static const char *fn = "facet_conv2d_forward";
    struct facet_conv_geom g;
    int64_t ws_elems = 0;
    int rc = conv_geometry(fn, &g, x, weight, conv);
    if (!rc) rc = check_operand(fn, "out", out, x, weight, conv, g.n, g.o, g.ho, g.wo, 0);
    if (!rc && bias) rc = check_operand(fn, "bias", bias, x, weight, conv, g.o, -1, 0, 0, 1);
    if (!rc) rc = check_workspace(fn, workspace, x, weight, &g, &ws_elems);
    if (rc) return rc;
    static const char *const names[] = { "out", "workspace", "x", "weight", "bias" };
    const facet_tensor *ops[] = { out, workspace, x, weight, bias };
    rc = check_written(fn, names, ops, 5, 0);
    if (!rc) rc = check_written(fn, names, ops, 5, 1);
    if (rc || g.n == 0) return rc;
    float *ws = workspace ? facet_ptr(workspace) : NULL;
    const float *wp = facet_ptr(weight), *bp = bias ? facet_ptr(bias) : NULL;
    if (x->device == FACET_DEVICE_CUDA)
        return facet_cuda_conv2d_forward(x->dtype, &g, facet_ptr(out), facet_ptr(x), wp, bp, ws, ws_elems);
    int ok = 1;
    facet_half_begin(x->dtype);
    const float *xp = facet_half_in(fn, x, 0, &ok);
    float *o = ok ? facet_half_out(fn, out, 1, &ok) : NULL;
    if (ok) rc = forward_cpu(&g, o, xp, wp, bp, ws, ws_elems);
    return facet_half_finish(x->dtype, out, o, ok, rc);
}

int facet_conv2d_backward(facet_tensor *grad_x, facet_tensor *grad_weight, facet_tensor *grad_bias,
                          const facet_tensor *grad_out, const facet_tensor *x, const facet_tensor *weight,
                          facet_tensor *workspace, const facet_conv2d_params *conv)
{
    static const char *fn = "facet_conv2d_backward";
    struct facet_conv_geom g;
    int64_t ws_elems = 0;
    int rc = conv_geometry(fn, &g, x, weight, conv);
    if (!rc) rc = check_operand(fn, "grad_out", grad_out, x, weight, conv, g.n, g.o, g.ho, g.wo, 0);
    if (!rc && grad_x) rc = check_operand(fn, "grad_x", grad_x, x, weight, conv, g.n, g.c, g.h, g.w, 0);
    if (!rc && grad_weight)
        rc = check_operand(fn, "grad_weight", grad_weight, x, weight, conv, g.o, g.cg, g.kh, g.kw, 1);
    if (!rc && grad_bias) rc = check_operand(fn, "grad_bias", grad_bias, x, weight, conv, g.o, -1, 0, 0, 1);
    /* the workspace only matters when a GEMM path has something to compute */
    if (!rc && (grad_x || grad_weight || workspace)) rc = check_workspace(fn, workspace, x, weight, &g, &ws_elems);
    if (rc) return rc;
    static const char *const names[] = { "grad_x", "grad_weight", "grad_bias", "workspace", "grad_out", "x",
                                         "weight" };
    const facet_tensor *ops[] = { grad_x, grad_weight, grad_bias, workspace, grad_out, x, weight };
    for (int i = 0; i < 4 && !rc; i++) rc = check_written(fn, names, ops, 7, i);
    if (rc || g.n == 0) return rc;
    float *gw = grad_weight ? facet_ptr(grad_weight) : NULL;
    float *gb = grad_bias ? facet_ptr(grad_bias) : NULL, *ws = workspace ? facet_ptr(workspace) : NULL;
    const float *wp = facet_ptr(weight);
    if (x->device == FACET_DEVICE_CUDA)
        return facet_cuda_conv2d_backward(x->dtype, &g, grad_x ? facet_ptr(grad_x) : NULL, gw, gb, facet_ptr(grad_out),
                                          facet_ptr(x), wp, ws, ws_elems);
    int ok = 1;
    facet_half_begin(x->dtype);
    const float *go = facet_half_in(fn, grad_out, 0, &ok);
    const float *xp = ok ? facet_half_in(fn, x, 1, &ok) : NULL;
    float *gx = ok ? facet_half_out(fn, grad_x, 2, &ok) : NULL;
    if (ok) rc = backward_cpu(&g, gx, gw, gb, go, xp, wp, ws, ws_elems);
    return facet_half_finish(x->dtype, grad_x, gx, ok, rc);
}
