/*
 * pool_math.h - the geometry of 2-D pooling, shared by core/src/pool.c and
 * core/cuda/pool.cu: the checked settings in one struct, a window clipped to
 * the image, the average's divisor, the scan order's tie rule of max
 * pooling, and (for the GPU's gather backward) the outputs whose windows
 * hold a pixel.
 */
#ifndef FACET_POOL_MATH_H
#define FACET_POOL_MATH_H

#include <stdint.h>
#include "elementwise_math.h"   /* FACET_HD */

/* The geometry of a pooling call, filled in by pool.c. planes = N * C. */
struct facet_pool_geom {
    int64_t planes, h, w, ho, wo;
    int64_t kh, kw, sh, sw, ph, pw;
    int count_pad;
};

/* The window of output (oh, ow) clipped to the image: [hs, he) x [ws, we). */
struct facet_pool_window {
    int64_t hs, he, ws, we;
};

FACET_HD struct facet_pool_window facet_pool_window_of(const struct facet_pool_geom *g, int64_t oh, int64_t ow)
{
    const int64_t h0 = oh * g->sh - g->ph, w0 = ow * g->sw - g->pw;
    struct facet_pool_window r;
    r.hs = h0 > 0 ? h0 : 0;
    r.he = h0 + g->kh < g->h ? h0 + g->kh : g->h;
    r.ws = w0 > 0 ? w0 : 0;
    r.we = w0 + g->kw < g->w ? w0 + g->kw : g->w;
    return r;
}

/* The divisor of an average window: the kernel's area (count_include_pad)
 * or the pixels of the window inside the image. */
FACET_HD float facet_pool_divisor(const struct facet_pool_geom *g, const struct facet_pool_window *r)
{
    return (float)(g->count_pad ? g->kh * g->kw : (r->he - r->hs) * (r->we - r->ws));
}

/* Max pooling scans a window row by row: does the later value v beat the
 * best so far? The first maximum wins ties; the first NaN beats every number. */
FACET_HD int facet_pool_max_wins(float v, float best)
{
    return v > best || (v != v && best == best);
}

/* Outputs along one axis whose window [o s - p, o s - p + k) holds pixel v,
 * for n outputs: [*lo, *hi] (empty when *lo > *hi), from q and r, the
 * quotient and remainder of v + p by s, and kq and kr, those of k - 1 (the
 * same for every pixel of a call). So a pixel costs one division an axis,
 * by a divisor fixed for the call: pool.cu's div_by, 32-bit where the call
 * fits. The window of o holds v when v + p - k < o s <= v + p; the last
 * such o is q; the first is the least o with o s >= v + p - k + 1 =
 * (q - kq) s + (r - kr), and |r - kr| < s: q - kq, plus 1 when r > kr;
 * both clamped to the outputs [0, n - 1]. */
FACET_HD void facet_pool_outputs_from_qr(int64_t q, int64_t r, int64_t kq, int64_t kr, int64_t n, int64_t *lo,
                                         int64_t *hi)
{
    const int64_t first = q - kq + (r > kr);
    *lo = first > 0 ? first : 0;
    *hi = q < n - 1 ? q : n - 1;
}

/* The same from the pixel and the settings, by plain division. */
FACET_HD void facet_pool_outputs_holding(int64_t v, int64_t k, int64_t s, int64_t p, int64_t n, int64_t *lo,
                                         int64_t *hi)
{
    facet_pool_outputs_from_qr((v + p) / s, (v + p) % s, (k - 1) / s, (k - 1) % s, n, lo, hi);
}

#endif
