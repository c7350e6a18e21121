/*
 * conv_winograd.c - the CPU's Winograd F(2x2, 3x3) convolution: stride 1,
 * 3x3 layers (most of an IResNet's work) with 2.25x fewer multiplications
 * than im2col's GEMM. The transforms are conv_winograd_math.h; this file
 * moves tiles between the NCHW tensors and the transformed domain and runs
 * 16 GEMMs, one per transform element e, over a range of tiles:
 *
 *   forward      V_e [C x n] = (B^T d B)_e of n input tiles
 *                M_e [O x n] = U_e [O x C] V_e          (U_e: the filters)
 *                out tiles   = A^T M A (+ bias)
 *   backward     dM_e [O x n] = (A dY A^T)_e of n grad_out tiles
 *                dU_e [O x C] += dM_e V_e^T             (grad_weight, later G^T dU G)
 *                V_e [C x n] = U_e^T dM_e; grad_x tiles += B V B^T
 *
 * Each 2-D transform runs as a 4-point transform down the columns of a whole
 * row of tiles (vectorised, one pass over x) and then one along each tile's
 * rows. conv.c owns the threads and the workspace (conv_winograd.h).
 */
#include "conv_winograd.h"
#include "conv_winograd_math.h"
#include <stdlib.h>
#include <string.h>

/* Tiles a GEMM takes: 64, where V and M stay in a core's L2 for IResNet's
 * 64-channel layers and the GEMMs are still wide enough for 256 channels
 * (32 to 512 tiles measured about even in the backward, 64 best in the
 * forward). Measured on 2 Zen 5 cores (bench/conv.lua). With the vector
 * transforms, layers of 16 channels each way gain 1.3-1.5x over im2col and
 * outputs of 4 x 4 to 7 x 7 1.0-1.4x; 8 channels (0.9-1.0x) and 3-channel
 * stems do not. */
enum { WINO_TILES = 64, WINO_MIN_CHANNELS = 16, WINO_MIN_SIDE = 4 };

int facet_conv_winograd_fits(const struct facet_conv_geom *g)
{
    if (g->kh != 3 || g->kw != 3 || g->sh != 1 || g->sw != 1 || g->dh != 1 || g->dw != 1 || g->groups != 1 ||
        g->c < WINO_MIN_CHANNELS || g->o < WINO_MIN_CHANNELS || g->ho < WINO_MIN_SIDE || g->wo < WINO_MIN_SIDE)
        return 0;
    const char *env = getenv("FACET_CONV_WINOGRAD");
    return !(env && env[0] == '0' && env[1] == '\0');
}

int64_t facet_conv_winograd_image_tiles(const struct facet_conv_geom *g)
{
    return ((g->ho + 1) / 2) * ((g->wo + 1) / 2);
}

int64_t facet_conv_winograd_tiles(const struct facet_conv_geom *g)
{
    int64_t all = g->n * facet_conv_winograd_image_tiles(g);
    return WINO_TILES < all ? WINO_TILES : all < 1 ? 1 : all;
}

/* Floats of a row buffer: a row of input columns (2 ceil(Wo/2) + 2) rounded
 * up to whole pairs of vectors (8 floats), and a pair more, so that the
 * vector loops may run past a row's end inside the buffer. */
static int64_t row_floats(const struct facet_conv_geom *g)
{
    const int64_t cols = 2 * ((g->wo + 1) / 2) + 2;
    return (cols + 15) / 16 * 16 + 16;
}

/* Columns of V and M: the tiles and one vector (8 floats) more, where the
 * last vector of a run of tiles writes the lanes past its end. */
static int64_t ld_of(const struct facet_conv_geom *g)
{
    return facet_conv_winograd_tiles(g) + 8;
}

/* Floats from one transform element's plane of V or M (rows channels x ld)
 * to the next: PLANE_PAD more than the rows, because with a multiple of 4 KiB
 * the 16 planes' stores of a tile all fall in one set of the L1 cache. */
#define PLANE_PAD 32
static int64_t plane_of(int64_t rows, int64_t ld)
{
    return rows * ld + PLANE_PAD;
}

/* Floats from one plane of the transformed filters U [16][O][C] to the next
 * (the same for their gradient dU), padded as V's and M's: the filter
 * transform's 16 stores then miss one another's L1 set (6% of a 256-channel
 * layer's step before). */
static int64_t uplane(const struct facet_conv_geom *g)
{
    return plane_of(g->o, g->c);
}

int64_t facet_conv_winograd_shared(const struct facet_conv_geom *g)
{
    return 16 * uplane(g);
}

/* V [16][C][ld], M [16][O][ld], then 16 row buffers for the transforms */
int64_t facet_conv_winograd_slot(const struct facet_conv_geom *g)
{
    return 16 * (plane_of(g->c, ld_of(g)) + plane_of(g->o, ld_of(g))) + 16 * row_floats(g);
}

/* ---- filters ------------------------------------------------------------------ */

/* One output channel's filters (static: GCC exports the dispatcher of an
 * extern FACET_CLONES function). */
FACET_CLONES static void filter_row(int64_t C, int64_t plane, float *u, const float *w)
{
    #pragma omp simd
    for (int64_t c = 0; c < C; c++) facet_wino_filter(w + c * 9, u + c, plane);
}

FACET_CLONES static void filter_grad_row(int64_t C, int64_t plane, float *gw, const float *du)
{
    for (int64_t c = 0; c < C; c++) facet_wino_filter_grad_add(du + c, plane, gw + c * 9);
}

void facet_conv_winograd_filters(const struct facet_conv_geom *g, float *u, const float *w)
{
    const int64_t O = g->o, C = g->c;
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (O * C >= 4096)
    for (int64_t o = 0; o < O; o++) filter_row(C, uplane(g), u + o * C, w + o * C * 9);
}

void facet_conv_winograd_filter_grads(const struct facet_conv_geom *g, float *gw, const float *du)
{
    const int64_t O = g->o, C = g->c;
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (O * C >= 4096)
    for (int64_t o = 0; o < O; o++) filter_grad_row(C, uplane(g), gw + o * C * 9, du + o * C);
}

/* ---- vectors ------------------------------------------------------------------ */

/* The tile loops run 8 tiles (or input columns) at a time in GCC's vector
 * types: one AVX register (two SSE ones in the baseline clone). 16 lanes
 * measured no faster with AVX-512 and 2-3x slower with AVX2, whose clone
 * splits each 16-lane shuffle into many. A row's last vector runs past its
 * end: its extra lanes compute from the buffers' slack and land in V's and
 * M's spare columns (ld_of), or in a later run of the same GEMM, which
 * overwrites them; what reaches x, out and grad_x is cut to the row. Tiles
 * overlap by two columns, so a tile's four columns are two even and two odd
 * ones: the even and odd split (and the interleave back) are the only
 * shuffles. */
enum { VL = 8 };
typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));
typedef float vfu __attribute__((vector_size(32), aligned(4), may_alias));   /* unaligned loads and stores */
typedef int32_t viu __attribute__((vector_size(32), aligned(4), may_alias));

#define VLOAD(p) (*(const vfu *)(p))
#define VSTORE(p, v) (*(vfu *)(p) = (v))
/* the even and the odd floats of a followed by b */
#define VEVEN(a, b) __builtin_shuffle((a), (b), (vi){ 0, 2, 4, 6, 8, 10, 12, 14 })
#define VODD(a, b) __builtin_shuffle((a), (b), (vi){ 1, 3, 5, 7, 9, 11, 13, 15 })
/* e and o interleaved (e0 o0 e1 o1 ...): the first VL floats, then the next */
#define VLO(e, o) __builtin_shuffle((e), (o), (vi){ 0, 8, 1, 9, 2, 10, 3, 11 })
#define VHI(e, o) __builtin_shuffle((e), (o), (vi){ 4, 12, 5, 13, 6, 14, 7, 15 })
/* p's last lane, then a's lanes but the last: each lane gets its left neighbour's value */
#define VPREV(p, a) __builtin_shuffle((p), (a), (vi){ 7, 8, 9, 10, 11, 12, 13, 14 })
/* VL zeros, then VL ones: the VL from keep_from + VL - d keep lanes d and above */
static const int32_t keep_from[2 * VL] = { 0, 0, 0, 0, 0, 0, 0, 0, -1, -1, -1, -1, -1, -1, -1, -1 };

/* A channel's rows of x, out or grad_out lie a plane apart, in another
 * page, where the hardware's prefetchers do not follow: each channel's
 * loop asks for the rows of the channel PREFETCH ahead (measured: 2 beats 1,
 * 4 and 8 by a little; the input transform takes 0.6x the time with it). */
enum { PREFETCH = 2 };

/* Prefetch row[a, b) (a < b) for reading, or for writing with rw = 1: a
 * line (16 floats) at a time. */
#define PREFETCH_ROW(row, a, b, rw)                                                    \
    do {                                                                               \
        for (int64_t k_ = (a); k_ < (b); k_ += 16) __builtin_prefetch((row) + k_, rw); \
        __builtin_prefetch((row) + (b) - 1, rw);                                       \
    } while (0)

/* d [0, w) = s [0, w): two overlapping vectors for VL <= w <= 2 VL (callers
 * pass w <= 2 VL), floats one by one below that. */
static inline void put_short(float *d, const float *s, int64_t w)
{
    if (w >= VL) {
        VSTORE(d, VLOAD(s));
        VSTORE(d + w - VL, VLOAD(s + w - VL));
    } else {
        for (int64_t k = 0; k < w; k++) d[k] = s[k];
    }
}

/* d [0, len) = row r's floats [k0 + klo, k0 + khi) at [klo, khi), zeros around
 * them (all zeros for r == NULL); d has room for len rounded up to a vector. */
static inline void padded_row(float *d, const float *r, int64_t k0, int64_t klo, int64_t khi, int64_t len)
{
    const vf zero = { 0 };
    if (!r || khi <= klo) {
        for (int64_t k = 0; k < len; k += VL) VSTORE(d + k, zero);
        return;
    }
    for (int64_t k = 0; k < klo; k++) d[k] = 0.0f;
    int64_t k = klo;
    for (; k + VL <= khi; k += VL) VSTORE(d + k, VLOAD(r + (k0 + k)));
    if (k < khi) {
        if (khi - klo >= VL) VSTORE(d + khi - VL, VLOAD(r + (k0 + khi - VL)));   /* overlaps the last vector: a copy, so harmless */
        else
            for (; k < khi; k++) d[k] = r[k0 + k];
    }
    for (k = khi; k < len; k++) d[k] = 0.0f;
}

/* ---- tiles -------------------------------------------------------------------- */

/* A run of tiles in one row of one image: tile columns [txa, txb) of tile
 * row ty of image n, the first at column `col` of the GEMM's n. */
struct span { int64_t n, ty, txa, txb, col; };

/* The next span of [t, t1), or 0 when t == t1. */
static int next_span(const struct facet_conv_geom *g, int64_t t0, int64_t *t, int64_t t1, struct span *s)
{
    if (*t >= t1) return 0;
    const int64_t tw = (g->wo + 1) / 2, per = facet_conv_winograd_image_tiles(g);
    s->n = *t / per;
    int64_t r = *t % per;
    s->ty = r / tw, s->txa = r % tw;
    s->txb = s->txa + (t1 - *t) < tw ? s->txa + (t1 - *t) : tw;
    s->col = *t - t0;
    *t += s->txb - s->txa;
    return 1;
}

/* The input columns of a span (x's column of its k = 0, and the k range
 * [*klo, *khi) that lies inside x) and its length 2 (txb - txa) + 2. */
static int64_t span_cols(const struct facet_conv_geom *g, const struct span *s, int64_t *x0, int64_t *klo, int64_t *khi)
{
    int64_t len = 2 * (s->txb - s->txa) + 2;
    *x0 = 2 * s->txa - g->pw;
    *klo = *x0 < 0 ? -*x0 : 0;
    *khi = g->w - *x0 < len ? g->w - *x0 : len;
    if (*klo > len) *klo = len;
    if (*khi < *klo) *khi = *klo;
    return len;
}

/* v [16][C][ld] of tiles [t0, t1) from x. A channel goes through three
 * steps: its four input rows copied with their zero padding, B^T down the
 * columns (the even and the odd ones apart), B^T along each tile's row.
 * They run one channel apart (a loop turn copies channel c, transforms
 * channel c - 1's columns and channel c - 2's rows), so that no load reads
 * a buffer that stores wrote moments before at another offset, which would
 * wait for the stores to reach the cache. rows: two sets of four padded
 * rows, then two sets of four rows of even and odd columns. */
FACET_CLONES static void input_tiles(const struct facet_conv_geom *g, const float *x, float *v, int64_t ld, int64_t t0,
                                     int64_t t1, float *rows)
{
    const int64_t C = g->c, H = g->h, W = g->w, rl = row_floats(g), plane = plane_of(C, ld);
    struct span s;
    for (int64_t t = t0; next_span(g, t0, &t, t1, &s);) {
        int64_t x0, klo, khi, len = span_cols(g, &s, &x0, &klo, &khi), nt = s.txb - s.txa;
        for (int64_t c = 0; c < C + 2; c++) {
            if (c < C) {
                const float *xc = x + (s.n * C + c) * H * W;
                float *pr = rows + (c & 1) * 4 * rl;
                for (int i = 0; i < 4; i++) {
                    int64_t y = 2 * s.ty - g->ph + i;
                    padded_row(pr + i * rl, y >= 0 && y < H ? xc + y * W : NULL, x0, klo, khi, len);
                    if (c + PREFETCH < C && y >= 0 && y < H && klo < khi)
                        PREFETCH_ROW(xc + PREFETCH * H * W + y * W, x0 + klo, x0 + khi, 0);
                }
            }
            if (c >= 1 && c <= C) {
                /* column pair p is tile p's first two columns and tile p - 1's last two */
                const float *pr = rows + ((c - 1) & 1) * 4 * rl;
                float *ev = rows + (8 + ((c - 1) & 1) * 4) * rl, *od = ev + rl / 2;
                for (int64_t p = 0; p <= nt; p += VL) {
                    vf e[4], o[4], r0, r1, r2, r3;
                    for (int i = 0; i < 4; i++) {
                        vf a = VLOAD(pr + i * rl + 2 * p), b = VLOAD(pr + i * rl + 2 * p + VL);
                        e[i] = VEVEN(a, b), o[i] = VODD(a, b);
                    }
                    FACET_WINO_BT(e[0], e[1], e[2], e[3], r0, r1, r2, r3);
                    VSTORE(ev + p, r0), VSTORE(ev + rl + p, r1), VSTORE(ev + 2 * rl + p, r2), VSTORE(ev + 3 * rl + p, r3);
                    FACET_WINO_BT(o[0], o[1], o[2], o[3], r0, r1, r2, r3);
                    VSTORE(od + p, r0), VSTORE(od + rl + p, r1), VSTORE(od + 2 * rl + p, r2), VSTORE(od + 3 * rl + p, r3);
                }
            }
            if (c >= 2) {
                /* a tile's columns are pairs q and q + 1 */
                const float *ev = rows + (8 + (c & 1) * 4) * rl, *od = ev + rl / 2;
                float *vc = v + (c - 2) * ld + s.col;
                for (int i = 0; i < 4; i++) {
                    const float *e = ev + i * rl, *o = od + i * rl;
                    float *v0 = vc + (4 * i) * plane, *v1 = v0 + plane, *v2 = v1 + plane, *v3 = v2 + plane;
                    for (int64_t q = 0; q < nt; q += VL) {
                        vf d0 = VLOAD(e + q), d1 = VLOAD(o + q), d2 = VLOAD(e + q + 1), d3 = VLOAD(o + q + 1);
                        vf r0, r1, r2, r3;
                        FACET_WINO_BT(d0, d1, d2, d3, r0, r1, r2, r3);
                        VSTORE(v0 + q, r0), VSTORE(v1 + q, r1), VSTORE(v2 + q, r2), VSTORE(v3 + q, r3);
                    }
                }
            }
        }
    }
}

/* out's tiles [t0, t1) = A^T M A (+ b) from m [16][O][ld]. rows: two rows of
 * 32 floats for a row's last, partial vectors. */
FACET_CLONES static void output_tiles(const struct facet_conv_geom *g, float *out, const float *m, int64_t ld,
                                      int64_t t0, int64_t t1, const float *b, float *rows)
{
    const int64_t O = g->o, Ho = g->ho, Wo = g->wo, rl = row_floats(g), plane = plane_of(O, ld);
    float *tb0 = rows, *tb1 = rows + rl;
    struct span s;
    for (int64_t t = t0; next_span(g, t0, &t, t1, &s);) {
        const int64_t nt = s.txb - s.txa, oy = 2 * s.ty;
        /* out's columns in the span; an odd Wo leaves the last tile half */
        const int64_t cols = 2 * nt < Wo - 2 * s.txa ? 2 * nt : Wo - 2 * s.txa;
        const int second = oy + 1 < Ho;
        for (int64_t o = 0; o < O; o++) {
            const float *mo = m + o * ld + s.col;
            const float bias = b ? b[o] : 0.0f;
            float *r0 = out + ((s.n * O + o) * Ho + oy) * Wo + 2 * s.txa, *r1 = r0 + Wo;
            if (o + PREFETCH < O) {
                PREFETCH_ROW(r0 + PREFETCH * Ho * Wo, 0, cols, 1);
                if (second) PREFETCH_ROW(r1 + PREFETCH * Ho * Wo, 0, cols, 1);
            }
            for (int64_t q = 0; q < nt; q += VL) {
                vf p0[4], p1[4], y00, y01, y10, y11;
                /* A^T down each tile's columns, then along its two rows */
                for (int j = 0; j < 4; j++) {
                    const vf m0 = VLOAD(mo + j * plane + q), m1 = VLOAD(mo + (4 + j) * plane + q),
                             m2 = VLOAD(mo + (8 + j) * plane + q), m3 = VLOAD(mo + (12 + j) * plane + q);
                    FACET_WINO_AT(m0, m1, m2, m3, p0[j], p1[j]);
                }
                FACET_WINO_AT(p0[0], p0[1], p0[2], p0[3], y00, y01);
                FACET_WINO_AT(p1[0], p1[1], p1[2], p1[3], y10, y11);
                const vf a0 = VLO(y00, y01) + bias, a1 = VHI(y00, y01) + bias;
                const vf b0 = VLO(y10, y11) + bias, b1 = VHI(y10, y11) + bias;
                const int64_t w = cols - 2 * q;
                if (w >= 2 * VL) {
                    VSTORE(r0 + 2 * q, a0), VSTORE(r0 + 2 * q + VL, a1);
                    if (second) VSTORE(r1 + 2 * q, b0), VSTORE(r1 + 2 * q + VL, b1);
                } else {   /* the row's last tiles: through the buffers, cut to the row */
                    VSTORE(tb0, a0), VSTORE(tb0 + VL, a1);
                    put_short(r0 + 2 * q, tb0, w);
                    if (second) {
                        VSTORE(tb1, b0), VSTORE(tb1 + VL, b1);
                        put_short(r1 + 2 * q, tb1, w);
                    }
                }
            }
        }
    }
}

/* dm [16][O][ld] = A dY A^T of grad_out's tiles [t0, t1) (zero past the
 * edges). rows: two rows of 32 floats for a row's last, partial vectors. */
FACET_CLONES static void grad_out_tiles(const struct facet_conv_geom *g, const float *gout, float *dm, int64_t ld,
                                        int64_t t0, int64_t t1, float *rows)
{
    const int64_t O = g->o, Ho = g->ho, Wo = g->wo, rl = row_floats(g), plane = plane_of(O, ld);
    float *tb0 = rows, *tb1 = rows + rl;
    const vf zero = { 0 };
    struct span s;
    for (int64_t t = t0; next_span(g, t0, &t, t1, &s);) {
        const int64_t nt = s.txb - s.txa, y0 = 2 * s.ty;
        /* grad_out's columns in the span; an odd Wo leaves the last tile half */
        const int64_t cols = 2 * nt < Wo - 2 * s.txa ? 2 * nt : Wo - 2 * s.txa;
        const int second = y0 + 1 < Ho;
        for (int64_t o = 0; o < O; o++) {
            const float *r0 = gout + ((s.n * O + o) * Ho + y0) * Wo + 2 * s.txa, *r1 = r0 + Wo;
            float *mo = dm + o * ld + s.col;
            if (o + PREFETCH < O) {
                PREFETCH_ROW(r0 + PREFETCH * Ho * Wo, 0, cols, 0);
                if (second) PREFETCH_ROW(r1 + PREFETCH * Ho * Wo, 0, cols, 0);
            }
            for (int64_t q = 0; q < nt; q += VL) {
                const float *s0 = r0 + 2 * q, *s1 = r1 + 2 * q;
                const int64_t w = cols - 2 * q;
                if (w < 2 * VL) {   /* the row's last tiles: zero past its end */
                    VSTORE(tb0, zero), VSTORE(tb0 + VL, zero);
                    put_short(tb0, s0, w);
                    s0 = tb0;
                    if (second) {
                        VSTORE(tb1, zero), VSTORE(tb1 + VL, zero);
                        put_short(tb1, s1, w);
                        s1 = tb1;
                    }
                }
                vf a = VLOAD(s0), b = VLOAD(s0 + VL), e0 = VEVEN(a, b), o0 = VODD(a, b), e1 = zero, o1 = zero;
                if (second) {
                    a = VLOAD(s1), b = VLOAD(s1 + VL);
                    e1 = VEVEN(a, b), o1 = VODD(a, b);
                }
                /* A down the columns of the two rows, then along each tile's rows */
                vf pe[4], po[4];
                FACET_WINO_A(e0, e1, pe[0], pe[1], pe[2], pe[3]);
                FACET_WINO_A(o0, o1, po[0], po[1], po[2], po[3]);
                for (int i = 0; i < 4; i++) {
                    vf m0, m1, m2, m3;
                    FACET_WINO_A(pe[i], po[i], m0, m1, m2, m3);
                    float *mi = mo + (4 * i) * plane + q;
                    VSTORE(mi, m0), VSTORE(mi + plane, m1), VSTORE(mi + 2 * plane, m2), VSTORE(mi + 3 * plane, m3);
                }
            }
        }
    }
}

/* gx += B V B^T of the tiles [t0, t1) in v [16][C][ld]. B along the tiles'
 * rows runs a channel ahead of B down the columns (as in input_tiles: no
 * load right after stores at another offset). rows: two sets of four rows of
 * grad_x's columns. */
FACET_CLONES static void grad_input_tiles(const struct facet_conv_geom *g, float *gx, const float *v, int64_t ld,
                                          int64_t t0, int64_t t1, float *rows)
{
    const int64_t C = g->c, H = g->h, W = g->w, rl = row_floats(g), plane = plane_of(C, ld);
    const vf zero = { 0 };
    struct span s;
    for (int64_t t = t0; next_span(g, t0, &t, t1, &s);) {
        int64_t x0, klo, khi, nt = s.txb - s.txa;
        span_cols(g, &s, &x0, &klo, &khi);
        for (int64_t c = 0; c <= C; c++) {
            if (c < C) {
                /* B along each tile's rows; a tile's last two columns are its right
                 * neighbour's first two, so column 2q sums tile q's z0 and tile q-1's z2 */
                const float *vc = v + c * ld + s.col;
                float *rs = rows + (c & 1) * 4 * rl;
                for (int i = 0; i < 4; i++) {
                    const float *v0 = vc + (4 * i) * plane, *v1 = v0 + plane, *v2 = v1 + plane, *v3 = v2 + plane;
                    float *r = rs + i * rl;
                    vf prev2 = zero, prev3 = zero;
                    for (int64_t q = 0; q < nt; q += VL) {
                        const vf a0 = VLOAD(v0 + q), a1 = VLOAD(v1 + q), a2 = VLOAD(v2 + q), a3 = VLOAD(v3 + q);
                        vf z0, z1, z2, z3;
                        FACET_WINO_B(a0, a1, a2, a3, z0, z1, z2, z3);
                        const vf e = z0 + VPREV(prev2, z2), od = z1 + VPREV(prev3, z3);
                        VSTORE(r + 2 * q, VLO(e, od)), VSTORE(r + 2 * q + VL, VHI(e, od));
                        prev2 = z2, prev3 = z3;
                    }
                    /* the last tile's right columns (over what the last vector's spare lanes wrote) */
                    float z0, z1, z2, z3;
                    facet_wino_b(v0[nt - 1], v1[nt - 1], v2[nt - 1], v3[nt - 1], &z0, &z1, &z2, &z3);
                    r[2 * nt] = z2, r[2 * nt + 1] = z3;
                }
            }
            if (c == 0) continue;
            /* then B down the previous channel's columns, added into grad_x's rows inside x */
            const float *r[4];
            float *gc = gx + (s.n * C + c - 1) * H * W, *gr[4];
            for (int i = 0; i < 4; i++) {
                int64_t y = 2 * s.ty - g->ph + i;
                r[i] = rows + (((c - 1) & 1) * 4 + i) * rl;
                gr[i] = y >= 0 && y < H ? gc + y * W : NULL;   /* the span's k at x0 + k */
                if (gr[i] && c - 1 + PREFETCH < C && klo < khi) PREFETCH_ROW(gr[i] + PREFETCH * H * W, x0 + klo, x0 + khi, 1);
            }
            int64_t k = klo;
            for (; k + VL <= khi; k += VL) {
                const vf a0 = VLOAD(r[0] + k), a1 = VLOAD(r[1] + k), a2 = VLOAD(r[2] + k), a3 = VLOAD(r[3] + k);
                vf z[4];
                FACET_WINO_B(a0, a1, a2, a3, z[0], z[1], z[2], z[3]);
                for (int i = 0; i < 4; i++)
                    if (gr[i]) VSTORE(gr[i] + (x0 + k), VLOAD(gr[i] + (x0 + k)) + z[i]);
            }
            if (k < khi && khi - klo >= VL) {
                /* the last vector ends at khi and overlaps the one before: its
                 * lanes below k add zero */
                const int64_t kb = khi - VL;
                const vi keep = *(const viu *)(keep_from + VL - (k - kb));
                const vf a0 = VLOAD(r[0] + kb), a1 = VLOAD(r[1] + kb), a2 = VLOAD(r[2] + kb), a3 = VLOAD(r[3] + kb);
                vf z[4];
                FACET_WINO_B(a0, a1, a2, a3, z[0], z[1], z[2], z[3]);
                for (int i = 0; i < 4; i++)
                    if (gr[i]) VSTORE(gr[i] + (x0 + kb), VLOAD(gr[i] + (x0 + kb)) + (vf)((vi)z[i] & keep));
            } else {
                for (; k < khi; k++) {
                    float z[4];
                    facet_wino_b(r[0][k], r[1][k], r[2][k], r[3][k], &z[0], &z[1], &z[2], &z[3]);
                    for (int i = 0; i < 4; i++)
                        if (gr[i]) gr[i][x0 + k] += z[i];
                }
            }
        }
    }
}

int facet_conv_winograd_forward(const struct facet_conv_geom *g, float *out, const float *x, const float *u,
                                const float *b, int64_t t0, int64_t t1, float *slot)
{
    const int64_t O = g->o, C = g->c, nb = facet_conv_winograd_tiles(g), ld = ld_of(g);
    const int64_t pc = plane_of(C, ld), po = plane_of(O, ld), up = uplane(g);
    float *v = slot, *m = v + 16 * pc, *rows = m + 16 * po;
    int rc = 0;
    for (int64_t a = t0; a < t1; a += nb) {
        const int64_t z = a + nb < t1 ? a + nb : t1;
        input_tiles(g, x, v, ld, a, z, rows);
        for (int e = 0; e < 16; e++)
            rc |= facet_blas_sgemm(0, 0, O, z - a, C, 1.0f, u + e * up, C, v + e * pc, ld, 0.0f, m + e * po, ld);
        output_tiles(g, out, m, ld, a, z, b, rows);
    }
    return rc;
}

int facet_conv_winograd_backward(const struct facet_conv_geom *g, float *gx, float *du, int du_fresh,
                                 const float *gout, const float *x, const float *u, int64_t t0, int64_t t1, float *slot)
{
    const int64_t O = g->o, C = g->c, nb = facet_conv_winograd_tiles(g), ld = ld_of(g);
    const int64_t pc = plane_of(C, ld), po = plane_of(O, ld), up = uplane(g);
    float *v = slot, *m = v + 16 * pc, *rows = m + 16 * po;
    int rc = 0;
    for (int64_t a = t0; a < t1; a += nb) {
        const int64_t z = a + nb < t1 ? a + nb : t1, n = z - a;
        grad_out_tiles(g, gout, m, ld, a, z, rows);
        if (du) {
            input_tiles(g, x, v, ld, a, z, rows);
            /* the first GEMM of a fresh du overwrites it: no memset of 16 O C floats */
            const float beta = du_fresh && a == t0 ? 0.0f : 1.0f;
            for (int e = 0; e < 16; e++)
                rc |= facet_blas_sgemm(0, 1, O, C, n, 1.0f, m + e * po, ld, v + e * pc, ld, beta,
                                       du + e * up, C);
        }
        if (gx) {
            for (int e = 0; e < 16; e++)
                rc |= facet_blas_sgemm(1, 0, C, n, O, 1.0f, u + e * up, C, m + e * po, ld, 0.0f, v + e * pc, ld);
            grad_input_tiles(g, gx, v, ld, a, z, rows);
        }
    }
    return rc;
}
