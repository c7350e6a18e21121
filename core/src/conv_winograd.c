/*
 * conv_winograd.c - the CPU's Winograd convolutions: stride 1, 3x3 layers
 * (most of an IResNet's work) as F(4x4, 3x3), with 4x fewer multiplications
 * than im2col's GEMM, or F(2x2, 3x3) (2.25x fewer, the direct sum's
 * accuracy) with FACET_CONV_WINOGRAD=2. The transforms are
 * conv_winograd_math.h; this file moves tiles between the NCHW tensors and
 * the transformed domain and runs P GEMMs (P = 36 or 16), one per transform
 * element e, over a range of tiles:
 *
 *   forward      V_e [C x n] = (B^T d B)_e of n input tiles
 *                M_e [O x n] = U_e [O x C] V_e          (U_e: the filters)
 *                out tiles   = A^T M A (+ bias)
 *   backward     dM_e [O x n] = (A dY A^T)_e of n grad_out tiles
 *                dU_e [O x C] += dM_e V_e^T             (grad_weight, later G^T dU G)
 *                V_e [C x n] = U_e^T dM_e; grad_x tiles += B V B^T
 *
 * Each 2-D transform runs as a 1-D one down the columns of a whole row of
 * tiles and then one along each tile's rows, 8 tiles at a time in vector
 * registers. conv.c owns the threads and the workspace (conv_winograd.h).
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
 * outputs of 4 x 4 to 7 x 7 1.0-1.4x (F(2x2, 3x3)); 8 channels (0.9-1.0x)
 * and 3-channel stems do not. */
enum { WINO_TILES = 64, WINO_MIN_CHANNELS = 16, WINO_MIN_SIDE = 4 };

int facet_conv_winograd_fits(const struct facet_conv_geom *g)
{
    if (g->kh != 3 || g->kw != 3 || g->sh != 1 || g->sw != 1 || g->dh != 1 || g->dw != 1 || g->groups != 1 ||
        g->c < WINO_MIN_CHANNELS || g->o < WINO_MIN_CHANNELS || g->ho < WINO_MIN_SIDE || g->wo < WINO_MIN_SIDE)
        return 0;
    const char *env = getenv("FACET_CONV_WINOGRAD");
    return !(env && env[0] == '0' && env[1] == '\0');
}

/* The output tile's side: 4 (F(4x4, 3x3)) unless FACET_CONV_WINOGRAD=2 asks
 * for F(2x2, 3x3), or the layer's 36 O C transformed filters would pass
 * WINO4_MAX_FILTERS floats (32 MiB: 512 -> 512 channels). The backward keeps
 * a copy of them per chunk of images for grad_weight (conv.c, 2 chunks a
 * thread): F(2x2, 3x3)'s 16 O C there keeps that memory where it was, at a
 * cost of 1.1x in that layer's backward and 1.5x in its forward. */
enum { WINO4_MAX_FILTERS = 1 << 23 };
int64_t facet_conv_winograd_tile(const struct facet_conv_geom *g)
{
    const char *env = getenv("FACET_CONV_WINOGRAD");
    if (env && env[0] == '2' && env[1] == '\0') return 2;
    return 36 * g->o * g->c > WINO4_MAX_FILTERS ? 2 : 4;
}

/* Transform elements: (m + 2)^2, 16 or 36. */
static int64_t planes_of(const struct facet_conv_geom *g)
{
    const int64_t a = facet_conv_winograd_tile(g) + 2;
    return a * a;
}

int64_t facet_conv_winograd_image_tiles(const struct facet_conv_geom *g)
{
    const int64_t m = facet_conv_winograd_tile(g);
    return ((g->ho + m - 1) / m) * ((g->wo + m - 1) / m);
}

int64_t facet_conv_winograd_tiles(const struct facet_conv_geom *g)
{
    int64_t all = g->n * facet_conv_winograd_image_tiles(g);
    return WINO_TILES < all ? WINO_TILES : all < 1 ? 1 : all;
}

/* Floats of a row buffer: a row of input columns (m ceil(Wo/m) + 2) rounded
 * up to whole vectors of 32, and 64 more, so that the vector loops may run
 * past a row's end inside the buffer and a quarter row holds a phase of it
 * (F(4x4, 3x3)'s columns 4 q + r) with a vector to spare. */
static int64_t row_floats(const struct facet_conv_geom *g)
{
    const int64_t m = facet_conv_winograd_tile(g), cols = m * ((g->wo + m - 1) / m) + 2;
    return (cols + 31) / 32 * 32 + 64;
}

/* Columns of V and M: the tiles and one vector (8 floats) more, where the
 * last vector of a run of tiles writes the lanes past its end. */
static int64_t ld_of(const struct facet_conv_geom *g)
{
    return facet_conv_winograd_tiles(g) + 8;
}

/* Floats from one transform element's plane of V or M (rows channels x ld)
 * to the next: PLANE_PAD more than the rows, because with a multiple of 4 KiB
 * the P planes' stores of a tile all fall in one set of the L1 cache. */
#define PLANE_PAD 32
static int64_t plane_of(int64_t rows, int64_t ld)
{
    return rows * ld + PLANE_PAD;
}

/* Floats from one plane of the transformed filters U [P][O][C] to the next
 * (the same for their gradient dU), padded as V's and M's: the filter
 * transform's P stores then miss one another's L1 set (6% of a 256-channel
 * layer's step before). */
static int64_t uplane(const struct facet_conv_geom *g)
{
    return plane_of(g->o, g->c);
}

int64_t facet_conv_winograd_shared(const struct facet_conv_geom *g)
{
    return planes_of(g) * uplane(g);
}

/* V [P][C][ld], M [P][O][ld] (P transform elements), then the row buffers
 * of the transforms: 16 for F(2x2, 3x3), 24 for F(4x4, 3x3) */
int64_t facet_conv_winograd_slot(const struct facet_conv_geom *g)
{
    const int64_t rows = facet_conv_winograd_tile(g) == 4 ? 24 : 16;
    return planes_of(g) * (plane_of(g->c, ld_of(g)) + plane_of(g->o, ld_of(g))) + rows * row_floats(g);
}

/* ---- filters ------------------------------------------------------------------ */

/* One output channel's filters (static: GCC exports the dispatcher of an
 * extern FACET_CLONES function); m: the output tile's side. */
FACET_CLONES static void filter_row(int64_t m, int64_t C, int64_t plane, float *u, const float *w)
{
    if (m == 4) {
        #pragma omp simd
        for (int64_t c = 0; c < C; c++) FACET_WINO4_FILTER(w + c * 9, u + c, plane);
        return;
    }
    #pragma omp simd
    for (int64_t c = 0; c < C; c++) facet_wino_filter(w + c * 9, u + c, plane);
}

FACET_CLONES static void filter_grad_row(int64_t m, int64_t C, int64_t plane, float *gw, const float *du)
{
    if (m == 4) {
        for (int64_t c = 0; c < C; c++) facet_wino4_filter_grad_add(du + c, plane, gw + c * 9);
        return;
    }
    for (int64_t c = 0; c < C; c++) facet_wino_filter_grad_add(du + c, plane, gw + c * 9);
}

void facet_conv_winograd_filters(const struct facet_conv_geom *g, float *u, const float *w)
{
    const int64_t O = g->o, C = g->c, m = facet_conv_winograd_tile(g), up = uplane(g);
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (O * C >= 4096)
    for (int64_t o = 0; o < O; o++) filter_row(m, C, up, u + o * C, w + o * C * 9);
}

void facet_conv_winograd_filter_grads(const struct facet_conv_geom *g, float *gw, const float *du)
{
    const int64_t O = g->o, C = g->c, m = facet_conv_winograd_tile(g), up = uplane(g);
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (O * C >= 4096)
    for (int64_t o = 0; o < O; o++) filter_grad_row(m, C, up, gw + o * C * 9, du + o * C);
}

/* ---- vectors ------------------------------------------------------------------ */

/* The tile loops run 8 tiles (or input columns) at a time in GCC's vector
 * types: one AVX register (two SSE ones in the baseline clone). 16 lanes
 * measured no faster with AVX-512 and 2-3x slower with AVX2, whose clone
 * splits each 16-lane shuffle into many. A row's last vector runs past its
 * end: its extra lanes compute from the buffers' slack and land in V's and
 * M's spare columns (ld_of), or in a later run of the same GEMM, which
 * overwrites them; what reaches x, out and grad_x is cut to the row. Tiles
 * overlap by two columns, so F(2x2, 3x3)'s tile has two even and two odd
 * columns, F(4x4, 3x3)'s the four phases of a row (columns 4k + r) and two
 * more: the even and odd split (twice for four phases) and the interleave
 * back are the only shuffles. */
enum { VL = 8 };
/* Helpers of the FACET_CLONES loops: inlined into each clone, so that they
 * get its instruction set (a call would run the baseline's code). */
#define WINO_INLINE static inline __attribute__((always_inline))
typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));
typedef float vfu __attribute__((vector_size(32), aligned(4), may_alias));   /* unaligned loads and stores */
typedef int32_t viu __attribute__((vector_size(32), aligned(4), may_alias));

#define VLOAD(p) (*(const vfu *)(p))
#define VSTORE(p, v) (*(vfu *)(p) = (v))
/* lanes of a followed by b, by index (GCC's and clang's builtins, for the
 * fuzzing build's clang) */
#if defined(__clang__)
#define VSHUF(a, b, ...) __builtin_shufflevector((a), (b), __VA_ARGS__)
#else
#define VSHUF(a, b, ...) __builtin_shuffle((a), (b), (vi){ __VA_ARGS__ })
#endif
/* the even and the odd floats of a followed by b */
#define VEVEN(a, b) VSHUF(a, b, 0, 2, 4, 6, 8, 10, 12, 14)
#define VODD(a, b) VSHUF(a, b, 1, 3, 5, 7, 9, 11, 13, 15)
/* e and o interleaved (e0 o0 e1 o1 ...): the first VL floats, then the next */
#define VLO(e, o) VSHUF(e, o, 0, 8, 1, 9, 2, 10, 3, 11)
#define VHI(e, o) VSHUF(e, o, 4, 12, 5, 13, 6, 14, 7, 15)
/* p's last lane, then a's lanes but the last: each lane gets its left neighbour's value */
#define VPREV(p, a) VSHUF(p, a, 7, 8, 9, 10, 11, 12, 13, 14)
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

/* d [0, w) = s [0, w) for w <= 4 VL: whole vectors, then one that overlaps
 * the last (a copy, so harmless) where w >= VL, floats one by one below. */
WINO_INLINE void put_part(float *d, const float *s, int64_t w)
{
    int64_t k = 0;
    for (; k + VL <= w; k += VL) VSTORE(d + k, VLOAD(s + k));
    if (k < w) {
        if (w >= VL) VSTORE(d + w - VL, VLOAD(s + w - VL));
        else
            for (; k < w; k++) d[k] = s[k];
    }
}

/* d [0, len) = row r's floats [k0 + klo, k0 + khi) at [klo, khi), zeros around
 * them (all zeros for r == NULL); d has room for len rounded up to a vector. */
WINO_INLINE void padded_row(float *d, const float *r, int64_t k0, int64_t klo, int64_t khi, int64_t len)
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

/* grad_x's rows gr[0, n) (NULL: a row outside x; the span's column k at
 * x0 + k) += B down the columns [klo, khi) of the n rows r: F(2x2, 3x3)'s B
 * for n = 4, F(4x4, 3x3)'s for n = 6. Whole vectors, then one that ends at
 * khi and overlaps the one before, its lanes below the overlap adding zero;
 * rows shorter than a vector one column at a time. */
WINO_INLINE void add_columns(int n, float *const *gr, const float *const *r, int64_t x0, int64_t klo, int64_t khi)
{
    int64_t k = klo;
    while (k < khi && khi - klo >= VL) {
        const int64_t at = k + VL <= khi ? k : khi - VL;
        const vi keep = *(const viu *)(keep_from + VL - (k - at));   /* all lanes but for the last vector */
        vf z[6];
        if (n == 4) {
            const vf a0 = VLOAD(r[0] + at), a1 = VLOAD(r[1] + at), a2 = VLOAD(r[2] + at), a3 = VLOAD(r[3] + at);
            FACET_WINO_B(a0, a1, a2, a3, z[0], z[1], z[2], z[3]);
        } else {
            FACET_WINO4_B(VLOAD(r[0] + at), VLOAD(r[1] + at), VLOAD(r[2] + at), VLOAD(r[3] + at), VLOAD(r[4] + at),
                          VLOAD(r[5] + at), z[0], z[1], z[2], z[3], z[4], z[5]);
        }
        for (int i = 0; i < n; i++)
            if (gr[i]) VSTORE(gr[i] + (x0 + at), VLOAD(gr[i] + (x0 + at)) + (vf)((vi)z[i] & keep));
        k = at + VL;
    }
    for (; k < khi; k++) {
        float z[6];
        if (n == 4) facet_wino_b(r[0][k], r[1][k], r[2][k], r[3][k], &z[0], &z[1], &z[2], &z[3]);
        else FACET_WINO4_B(r[0][k], r[1][k], r[2][k], r[3][k], r[4][k], r[5][k], z[0], z[1], z[2], z[3], z[4], z[5]);
        for (int i = 0; i < n; i++)
            if (gr[i]) gr[i][x0 + k] += z[i];
    }
}

/* ---- tiles -------------------------------------------------------------------- */

/* A run of tiles in one row of one image: tile columns [txa, txb) of tile
 * row ty of image n, the first at column `col` of the GEMM's n; m, tw and
 * per (the tile's side, tiles a row and an image) are the call's tiling,
 * set once by span_start. */
struct span { int64_t m, tw, per, n, ty, txa, txb, col; };

static struct span span_start(const struct facet_conv_geom *g)
{
    struct span s = { 0 };
    s.m = facet_conv_winograd_tile(g), s.tw = (g->wo + s.m - 1) / s.m, s.per = (g->ho + s.m - 1) / s.m * s.tw;
    return s;
}

/* The next span of [t, t1), or 0 when t == t1. */
static int next_span(int64_t t0, int64_t *t, int64_t t1, struct span *s)
{
    if (*t >= t1) return 0;
    s->n = *t / s->per;
    int64_t r = *t % s->per;
    s->ty = r / s->tw, s->txa = r % s->tw;
    s->txb = s->txa + (t1 - *t) < s->tw ? s->txa + (t1 - *t) : s->tw;
    s->col = *t - t0;
    *t += s->txb - s->txa;
    return 1;
}

/* The output columns of a span: m (txb - txa), fewer where Wo is not a
 * multiple of m and the row's last tile is part empty. */
static int64_t span_out_cols(const struct facet_conv_geom *g, const struct span *s)
{
    const int64_t cols = s->m * (s->txb - s->txa), left = g->wo - s->m * s->txa;
    return cols < left ? cols : left;
}

/* The input columns of a span (x's column of its k = 0, and the k range
 * [*klo, *khi) that lies inside x) and its length m (txb - txa) + 2. */
static int64_t span_cols(const struct facet_conv_geom *g, const struct span *s, int64_t *x0, int64_t *klo, int64_t *khi)
{
    const int64_t m = s->m;
    int64_t len = m * (s->txb - s->txa) + 2;
    *x0 = m * s->txa - g->pw;
    *klo = *x0 < 0 ? -*x0 : 0;
    *khi = g->w - *x0 < len ? g->w - *x0 : len;
    if (*klo > len) *klo = len;
    if (*khi < *klo) *khi = *klo;
    return len;
}

/* out's tiles [t0, t1) = A^T M A (+ b) from m [16][O][ld]. rows: two rows of
 * 32 floats for a row's last, partial vectors. */
FACET_CLONES static void output_tiles(const struct facet_conv_geom *g, float *out, const float *m, int64_t ld,
                                      int64_t t0, int64_t t1, const float *b, float *rows)
{
    const int64_t O = g->o, Ho = g->ho, Wo = g->wo, rl = row_floats(g), plane = plane_of(O, ld);
    float *tb0 = rows, *tb1 = rows + rl;
    struct span s = span_start(g);
    for (int64_t t = t0; next_span(t0, &t, t1, &s);) {
        const int64_t nt = s.txb - s.txa, oy = 2 * s.ty;
        const int64_t cols = span_out_cols(g, &s);
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
                    put_part(r0 + 2 * q, tb0, w);
                    if (second) {
                        VSTORE(tb1, b0), VSTORE(tb1 + VL, b1);
                        put_part(r1 + 2 * q, tb1, w);
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
    struct span s = span_start(g);
    for (int64_t t = t0; next_span(t0, &t, t1, &s);) {
        const int64_t nt = s.txb - s.txa, y0 = 2 * s.ty;
        const int64_t cols = span_out_cols(g, &s);
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
                    put_part(tb0, s0, w);
                    s0 = tb0;
                    if (second) {
                        VSTORE(tb1, zero), VSTORE(tb1 + VL, zero);
                        put_part(tb1, s1, w);
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

/* ---- F(4x4, 3x3) tiles -------------------------------------------------------- */

/* A tile's six input columns are 4q .. 4q + 5: columns 4k + r, phase r, of
 * vector k. The 32 floats at s split into their four phases p[0..3] (two
 * rounds of even and odd), and back into 32 floats at d. */
#define PHASES(s, p)                                                                            \
    do {                                                                                        \
        const vf a_ = VLOAD(s), b_ = VLOAD((s) + VL), c_ = VLOAD((s) + 2 * VL), d_ = VLOAD((s) + 3 * VL); \
        const vf e1_ = VEVEN(a_, b_), o1_ = VODD(a_, b_), e2_ = VEVEN(c_, d_), o2_ = VODD(c_, d_); \
        (p)[0] = VEVEN(e1_, e2_), (p)[1] = VEVEN(o1_, o2_), (p)[2] = VODD(e1_, e2_), (p)[3] = VODD(o1_, o2_); \
    } while (0)
#define UNPHASES(p, d)                                                                            \
    do {                                                                                          \
        const vf e1_ = VLO((p)[0], (p)[2]), e2_ = VHI((p)[0], (p)[2]), o1_ = VLO((p)[1], (p)[3]), \
                 o2_ = VHI((p)[1], (p)[3]);                                                       \
        VSTORE(d, VLO(e1_, o1_)), VSTORE((d) + VL, VHI(e1_, o1_));                                \
        VSTORE((d) + 2 * VL, VLO(e2_, o2_)), VSTORE((d) + 3 * VL, VHI(e2_, o2_));                 \
    } while (0)

/* B^T down the columns of one channel's n padded input rows pr (n = m + 2,
 * a row buffer apart), split into the row's m phases (columns m k + r): phase
 * r of output row i at ph + i rl + r rl / m. F(2x2, 3x3): column pair p is
 * tile p's first two columns and tile p - 1's last two. */
WINO_INLINE void tile_cols_bt(int n, const float *pr, float *ph, int64_t rl, int64_t nt)
{
    for (int64_t p = 0; p <= nt; p += VL) {
        if (n == 4) {
            float *ev = ph, *od = ph + rl / 2;
            vf e[4], o[4], r0, r1, r2, r3;
            for (int i = 0; i < 4; i++) {
                vf a = VLOAD(pr + i * rl + 2 * p), b = VLOAD(pr + i * rl + 2 * p + VL);
                e[i] = VEVEN(a, b), o[i] = VODD(a, b);
            }
            FACET_WINO_BT(e[0], e[1], e[2], e[3], r0, r1, r2, r3);
            VSTORE(ev + p, r0), VSTORE(ev + rl + p, r1), VSTORE(ev + 2 * rl + p, r2), VSTORE(ev + 3 * rl + p, r3);
            FACET_WINO_BT(o[0], o[1], o[2], o[3], r0, r1, r2, r3);
            VSTORE(od + p, r0), VSTORE(od + rl + p, r1), VSTORE(od + 2 * rl + p, r2), VSTORE(od + 3 * rl + p, r3);
        } else {
            vf d[6][4], t;
            for (int i = 0; i < 6; i++) PHASES(pr + i * rl + 4 * p, d[i]);
            for (int r = 0; r < 4; r++) {
                vf o0, o1, o2, o3, o4, o5;
                FACET_WINO4_BT(d[0][r], d[1][r], d[2][r], d[3][r], d[4][r], d[5][r], o0, o1, o2, o3, o4, o5, t);
                float *o = ph + r * (rl / 4) + p;
                VSTORE(o, o0), VSTORE(o + rl, o1), VSTORE(o + 2 * rl, o2);
                VSTORE(o + 3 * rl, o3), VSTORE(o + 4 * rl, o4), VSTORE(o + 5 * rl, o5);
            }
        }
    }
}

/* B^T along each tile's row, from tile_cols_bt's phases ph into the n x n
 * planes (a plane apart) of one channel's V columns at vc. A tile's columns:
 * F(2x2, 3x3) phases 0-1 of vector q and of q + 1; F(4x4, 3x3) phases 0-3 of
 * q and 0-1 of q + 1. */
WINO_INLINE void tile_rows_bt(int n, const float *ph, int64_t rl, int64_t nt, float *vc, int64_t plane)
{
    for (int i = 0; i < n; i++) {
        const float *e = ph + i * rl;
        float *vr = vc + (n * i) * plane;
        for (int64_t q = 0; q < nt; q += VL) {
            if (n == 4) {
                const float *o = e + rl / 2;
                vf d0 = VLOAD(e + q), d1 = VLOAD(o + q), d2 = VLOAD(e + q + 1), d3 = VLOAD(o + q + 1), r0, r1, r2, r3;
                FACET_WINO_BT(d0, d1, d2, d3, r0, r1, r2, r3);
                VSTORE(vr + q, r0), VSTORE(vr + plane + q, r1), VSTORE(vr + 2 * plane + q, r2), VSTORE(vr + 3 * plane + q, r3);
            } else {
                const int64_t q4 = rl / 4;
                const vf d0 = VLOAD(e + q), d1 = VLOAD(e + q4 + q), d2 = VLOAD(e + 2 * q4 + q), d3 = VLOAD(e + 3 * q4 + q),
                         d4 = VLOAD(e + q + 1), d5 = VLOAD(e + q4 + q + 1);
                vf r0, r1, r2, r3, r4, r5, t;
                FACET_WINO4_BT(d0, d1, d2, d3, d4, d5, r0, r1, r2, r3, r4, r5, t);
                VSTORE(vr + q, r0), VSTORE(vr + plane + q, r1), VSTORE(vr + 2 * plane + q, r2);
                VSTORE(vr + 3 * plane + q, r3), VSTORE(vr + 4 * plane + q, r4), VSTORE(vr + 5 * plane + q, r5);
            }
        }
    }
}

/* v [P][C][ld] of tiles [t0, t1) from x. A channel goes through three
 * steps: its m + 2 input rows copied with their zero padding, B^T down the
 * columns (tile_cols_bt), B^T along each tile's row (tile_rows_bt). They run
 * one channel apart (a loop turn copies channel c, transforms channel c - 1's
 * columns and channel c - 2's rows), so that no load reads a buffer that
 * stores wrote moments before at another offset, which would wait for the
 * stores to reach the cache. rows: two sets of m + 2 padded rows, then two
 * sets of m + 2 rows of phases. */
FACET_CLONES static void input_tiles(const struct facet_conv_geom *g, const float *x, float *v, int64_t ld, int64_t t0,
                                     int64_t t1, float *rows)
{
    const int64_t C = g->c, H = g->h, W = g->w, rl = row_floats(g), plane = plane_of(C, ld), m = facet_conv_winograd_tile(g);
    const int n = (int)m + 2;
    struct span s = span_start(g);
    for (int64_t t = t0; next_span(t0, &t, t1, &s);) {
        int64_t x0, klo, khi, len = span_cols(g, &s, &x0, &klo, &khi), nt = s.txb - s.txa;
        for (int64_t c = 0; c < C + 2; c++) {
            if (c < C) {
                const float *xc = x + (s.n * C + c) * H * W;
                float *pr = rows + (c & 1) * n * rl;
                for (int i = 0; i < n; i++) {
                    int64_t y = m * s.ty - g->ph + i;
                    padded_row(pr + i * rl, y >= 0 && y < H ? xc + y * W : NULL, x0, klo, khi, len);
                    if (c + PREFETCH < C && y >= 0 && y < H && klo < khi)
                        PREFETCH_ROW(xc + PREFETCH * H * W + y * W, x0 + klo, x0 + khi, 0);
                }
            }
            if (c >= 1 && c <= C) {
                const float *pr = rows + ((c - 1) & 1) * n * rl;
                float *ph = rows + (2 * n + ((c - 1) & 1) * n) * rl;
                if (n == 4) tile_cols_bt(4, pr, ph, rl, nt);
                else tile_cols_bt(6, pr, ph, rl, nt);
            }
            if (c >= 2) {
                const float *ph = rows + (2 * n + (c & 1) * n) * rl;
                if (n == 4) tile_rows_bt(4, ph, rl, nt, v + (c - 2) * ld + s.col, plane);
                else tile_rows_bt(6, ph, rl, nt, v + (c - 2) * ld + s.col, plane);
            }
        }
    }
}

/* out's tiles [t0, t1) = A^T M A (+ b) from m [36][O][ld]. rows: a row of
 * 32 floats for a row's last, partial vectors. */
FACET_CLONES static void output_tiles4(const struct facet_conv_geom *g, float *out, const float *m, int64_t ld,
                                       int64_t t0, int64_t t1, const float *b, float *rows)
{
    const int64_t O = g->o, Ho = g->ho, Wo = g->wo, plane = plane_of(O, ld);
    float *tb = rows;
    struct span s = span_start(g);
    for (int64_t t = t0; next_span(t0, &t, t1, &s);) {
        const int64_t nt = s.txb - s.txa, oy = 4 * s.ty, nrow = Ho - oy < 4 ? Ho - oy : 4;
        const int64_t cols = span_out_cols(g, &s);
        for (int64_t o = 0; o < O; o++) {
            const float *mo = m + o * ld + s.col;
            const float bias = b ? b[o] : 0.0f;
            float *r0 = out + ((s.n * O + o) * Ho + oy) * Wo + 4 * s.txa;
            if (o + PREFETCH < O)
                for (int64_t k = 0; k < nrow; k++) PREFETCH_ROW(r0 + PREFETCH * Ho * Wo + k * Wo, 0, cols, 1);
            for (int64_t q = 0; q < nt; q += VL) {
                vf p[4][6], a, bb, cc, d;
                /* A^T down each tile's columns, then along its rows */
                for (int j = 0; j < 6; j++) {
                    const vf m0 = VLOAD(mo + j * plane + q), m1 = VLOAD(mo + (6 + j) * plane + q),
                             m2 = VLOAD(mo + (12 + j) * plane + q), m3 = VLOAD(mo + (18 + j) * plane + q),
                             m4 = VLOAD(mo + (24 + j) * plane + q), m5 = VLOAD(mo + (30 + j) * plane + q);
                    FACET_WINO4_AT(m0, m1, m2, m3, m4, m5, p[0][j], p[1][j], p[2][j], p[3][j], a, bb, cc, d);
                }
                const int64_t w = cols - 4 * q;
                for (int64_t k = 0; k < nrow; k++) {
                    vf y[4];
                    FACET_WINO4_AT(p[k][0], p[k][1], p[k][2], p[k][3], p[k][4], p[k][5], y[0], y[1], y[2], y[3], a, bb,
                                   cc, d);
                    for (int r = 0; r < 4; r++) y[r] += bias;
                    float *rk = r0 + k * Wo + 4 * q;
                    if (w >= 4 * VL) {
                        UNPHASES(y, rk);
                    } else {   /* the row's last tiles: through the buffer, cut to the row */
                        UNPHASES(y, tb);
                        put_part(rk, tb, w);
                    }
                }
            }
        }
    }
}

/* dm [36][O][ld] = A dY A^T of grad_out's tiles [t0, t1) (zero past the
 * edges). rows: four rows of 32 floats for a row's last, partial vectors. */
FACET_CLONES static void grad_out_tiles4(const struct facet_conv_geom *g, const float *gout, float *dm, int64_t ld,
                                         int64_t t0, int64_t t1, float *rows)
{
    const int64_t O = g->o, Ho = g->ho, Wo = g->wo, rl = row_floats(g), plane = plane_of(O, ld);
    const vf zero = { 0 };
    struct span s = span_start(g);
    for (int64_t t = t0; next_span(t0, &t, t1, &s);) {
        const int64_t nt = s.txb - s.txa, y0 = 4 * s.ty, nrow = Ho - y0 < 4 ? Ho - y0 : 4;
        const int64_t cols = span_out_cols(g, &s);
        for (int64_t o = 0; o < O; o++) {
            const float *r0 = gout + ((s.n * O + o) * Ho + y0) * Wo + 4 * s.txa;
            float *mo = dm + o * ld + s.col;
            if (o + PREFETCH < O)
                for (int64_t k = 0; k < nrow; k++) PREFETCH_ROW(r0 + PREFETCH * Ho * Wo + k * Wo, 0, cols, 0);
            for (int64_t q = 0; q < nt; q += VL) {
                const int64_t w = cols - 4 * q;
                vf y[4][4], p[6][4], a, b, c, d;
                for (int k = 0; k < 4; k++) {
                    if (k >= nrow) {
                        y[k][0] = y[k][1] = y[k][2] = y[k][3] = zero;
                        continue;
                    }
                    const float *sk = r0 + k * Wo + 4 * q;
                    if (w < 4 * VL) {   /* the row's last tiles: zero past its end */
                        float *tb = rows + k * rl;
                        VSTORE(tb, zero), VSTORE(tb + VL, zero), VSTORE(tb + 2 * VL, zero), VSTORE(tb + 3 * VL, zero);
                        put_part(tb, sk, w);
                        sk = tb;
                    }
                    PHASES(sk, y[k]);
                }
                /* A down the columns of the four rows, then along each tile's rows */
                for (int r = 0; r < 4; r++)
                    FACET_WINO4_A(y[0][r], y[1][r], y[2][r], y[3][r], p[0][r], p[1][r], p[2][r], p[3][r], p[4][r],
                                  p[5][r], a, b, c, d);
                for (int i = 0; i < 6; i++) {
                    vf m0, m1, m2, m3, m4, m5;
                    FACET_WINO4_A(p[i][0], p[i][1], p[i][2], p[i][3], m0, m1, m2, m3, m4, m5, a, b, c, d);
                    float *mi = mo + (6 * i) * plane + q;
                    VSTORE(mi, m0), VSTORE(mi + plane, m1), VSTORE(mi + 2 * plane, m2);
                    VSTORE(mi + 3 * plane, m3), VSTORE(mi + 4 * plane, m4), VSTORE(mi + 5 * plane, m5);
                }
            }
        }
    }
}

/* B along the rows of one channel's tiles into r's n rows (n = 4 or 6, a
 * row buffer apart) from vc, its V planes a plane apart; a tile's last two
 * columns are its right neighbour's first two. F(2x2, 3x3): column 2q sums
 * tile q's z0 and tile q-1's z2, columns split even and odd. F(4x4, 3x3):
 * columns 4q and 4q + 1 add tile q-1's z4 and z5, columns in four phases. */
WINO_INLINE void tile_rows_b(int n, const float *vc, int64_t plane, int64_t nt, float *r, int64_t rl)
{
    const vf zero = { 0 };
    for (int i = 0; i < n; i++, r += rl) {
        const float *vr = vc + (n * i) * plane;
        vf prev0 = zero, prev1 = zero;   /* the last tile's z2, z3 (z4, z5) */
        for (int64_t q = 0; q < nt; q += VL) {
            vf z[6];
            if (n == 4) {
                const vf a0 = VLOAD(vr + q), a1 = VLOAD(vr + plane + q), a2 = VLOAD(vr + 2 * plane + q),
                         a3 = VLOAD(vr + 3 * plane + q);
                FACET_WINO_B(a0, a1, a2, a3, z[0], z[1], z[2], z[3]);
                const vf e = z[0] + VPREV(prev0, z[2]), od = z[1] + VPREV(prev1, z[3]);
                VSTORE(r + 2 * q, VLO(e, od)), VSTORE(r + 2 * q + VL, VHI(e, od));
                prev0 = z[2], prev1 = z[3];
            } else {
                FACET_WINO4_B(VLOAD(vr + q), VLOAD(vr + plane + q), VLOAD(vr + 2 * plane + q), VLOAD(vr + 3 * plane + q),
                              VLOAD(vr + 4 * plane + q), VLOAD(vr + 5 * plane + q), z[0], z[1], z[2], z[3], z[4], z[5]);
                vf ph[4] = { z[0] + VPREV(prev0, z[4]), z[1] + VPREV(prev1, z[5]), z[2], z[3] };
                UNPHASES(ph, r + 4 * q);
                prev0 = z[4], prev1 = z[5];
            }
        }
        /* the last tile's right columns (over what the last vector's spare lanes wrote) */
        const float *vl = vr + nt - 1;
        float z[6];
        if (n == 4) {
            facet_wino_b(vl[0], vl[plane], vl[2 * plane], vl[3 * plane], &z[0], &z[1], &z[2], &z[3]);
            r[2 * nt] = z[2], r[2 * nt + 1] = z[3];
        } else {
            FACET_WINO4_B(vl[0], vl[plane], vl[2 * plane], vl[3 * plane], vl[4 * plane], vl[5 * plane], z[0], z[1], z[2],
                          z[3], z[4], z[5]);
            r[4 * nt] = z[4], r[4 * nt + 1] = z[5];
        }
    }
}

/* gx += B V B^T of the tiles [t0, t1) in v [P][C][ld]. B along the tiles'
 * rows (tile_rows_b) runs a channel ahead of B down the columns
 * (add_columns), as in input_tiles: no load right after stores at another
 * offset. rows: two sets of m + 2 rows of grad_x's columns. */
FACET_CLONES static void grad_input_tiles(const struct facet_conv_geom *g, float *gx, const float *v, int64_t ld,
                                          int64_t t0, int64_t t1, float *rows)
{
    const int64_t C = g->c, H = g->h, W = g->w, rl = row_floats(g), plane = plane_of(C, ld), m = facet_conv_winograd_tile(g);
    const int n = (int)m + 2;
    struct span s = span_start(g);
    for (int64_t t = t0; next_span(t0, &t, t1, &s);) {
        int64_t x0, klo, khi, nt = s.txb - s.txa;
        span_cols(g, &s, &x0, &klo, &khi);
        for (int64_t c = 0; c <= C; c++) {
            if (c < C) {
                if (n == 4) tile_rows_b(4, v + c * ld + s.col, plane, nt, rows + (c & 1) * 4 * rl, rl);
                else tile_rows_b(6, v + c * ld + s.col, plane, nt, rows + (c & 1) * 6 * rl, rl);
            }
            if (c == 0) continue;
            /* then B down the previous channel's columns, added into grad_x's rows inside x */
            const float *r[6];
            float *gc = gx + (s.n * C + c - 1) * H * W, *gr[6];
            for (int i = 0; i < n; i++) {
                int64_t y = m * s.ty - g->ph + i;
                r[i] = rows + (((c - 1) & 1) * n + i) * rl;
                gr[i] = y >= 0 && y < H ? gc + y * W : NULL;   /* the span's k at x0 + k */
                if (gr[i] && c - 1 + PREFETCH < C && klo < khi) PREFETCH_ROW(gr[i] + PREFETCH * H * W, x0 + klo, x0 + khi, 1);
            }
            if (n == 4) add_columns(4, gr, r, x0, klo, khi);
            else add_columns(6, gr, r, x0, klo, khi);
        }
    }
}

int facet_conv_winograd_forward(const struct facet_conv_geom *g, float *out, const float *x, const float *u,
                                const float *b, int64_t t0, int64_t t1, float *slot)
{
    const int64_t O = g->o, C = g->c, nb = facet_conv_winograd_tiles(g), ld = ld_of(g), P = planes_of(g);
    const int64_t pc = plane_of(C, ld), po = plane_of(O, ld), up = uplane(g);
    const int four = facet_conv_winograd_tile(g) == 4;
    float *v = slot, *m = v + P * pc, *rows = m + P * po;
    int rc = 0;
    for (int64_t a = t0; a < t1; a += nb) {
        const int64_t z = a + nb < t1 ? a + nb : t1;
        input_tiles(g, x, v, ld, a, z, rows);
        for (int64_t e = 0; e < P; e++)
            rc |= facet_blas_sgemm(0, 0, O, z - a, C, 1.0f, u + e * up, C, v + e * pc, ld, 0.0f, m + e * po, ld);
        if (four) output_tiles4(g, out, m, ld, a, z, b, rows);
        else output_tiles(g, out, m, ld, a, z, b, rows);
    }
    return rc;
}

int facet_conv_winograd_backward(const struct facet_conv_geom *g, float *gx, float *du, int du_fresh,
                                 const float *gout, const float *x, const float *u, int64_t t0, int64_t t1, float *slot)
{
    const int64_t O = g->o, C = g->c, nb = facet_conv_winograd_tiles(g), ld = ld_of(g), P = planes_of(g);
    const int64_t pc = plane_of(C, ld), po = plane_of(O, ld), up = uplane(g);
    const int four = facet_conv_winograd_tile(g) == 4;
    float *v = slot, *m = v + P * pc, *rows = m + P * po;
    int rc = 0;
    for (int64_t a = t0; a < t1; a += nb) {
        const int64_t z = a + nb < t1 ? a + nb : t1, n = z - a;
        if (four) grad_out_tiles4(g, gout, m, ld, a, z, rows);
        else grad_out_tiles(g, gout, m, ld, a, z, rows);
        if (du) {
            input_tiles(g, x, v, ld, a, z, rows);
            /* the first GEMM of a fresh du overwrites it: no memset of P O C floats */
            const float beta = du_fresh && a == t0 ? 0.0f : 1.0f;
            for (int64_t e = 0; e < P; e++)
                rc |= facet_blas_sgemm(0, 1, O, C, n, 1.0f, m + e * po, ld, v + e * pc, ld, beta, du + e * up, C);
        }
        if (gx) {
            for (int64_t e = 0; e < P; e++)
                rc |= facet_blas_sgemm(1, 0, C, n, O, 1.0f, u + e * up, C, m + e * po, ld, 0.0f, v + e * pc, ld);
            grad_input_tiles(g, gx, v, ld, a, z, rows);
        }
    }
    return rc;
}
