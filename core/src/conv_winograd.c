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
 * forward). Measured on 2 Zen 5 cores (bench/conv.lua). Below 64 channels
 * the backward's GEMMs are too small to gain (16 -> 32 at 28 x 28, 32 -> 64
 * at 14 x 14: 0.7x im2col's backward, forward even); below 8 x 8 outputs
 * (IResNet's 7 x 7 stage) rows of 4 tiles leave the transforms scalar and
 * half-empty tiles waste a quarter of the work: 0.86x im2col's forward. */
enum { WINO_TILES = 64, WINO_MIN_CHANNELS = 64, WINO_MIN_SIDE = 8 };

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

/* Floats of a padded row of tiles: 2 per tile and 2 more. */
static int64_t row_floats(const struct facet_conv_geom *g)
{
    return 2 * ((g->wo + 1) / 2) + 2;
}

int64_t facet_conv_winograd_shared(const struct facet_conv_geom *g)
{
    return 16 * g->o * g->c;
}

/* V [16][C][nb], M [16][O][nb], then five rows for the transforms (four and
 * a row of zeros) */
int64_t facet_conv_winograd_slot(const struct facet_conv_geom *g)
{
    return 16 * (g->c + g->o) * facet_conv_winograd_tiles(g) + 5 * row_floats(g);
}

/* ---- filters ------------------------------------------------------------------ */

/* One output channel's filters (static: GCC exports the dispatcher of an
 * extern FACET_CLONES function). */
FACET_CLONES static void filter_row(int64_t C, int64_t OC, float *u, const float *w)
{
    #pragma omp simd
    for (int64_t c = 0; c < C; c++) facet_wino_filter(w + c * 9, u + c, OC);
}

FACET_CLONES static void filter_grad_row(int64_t C, int64_t OC, float *gw, const float *du)
{
    for (int64_t c = 0; c < C; c++) facet_wino_filter_grad_add(du + c, OC, gw + c * 9);
}

void facet_conv_winograd_filters(const struct facet_conv_geom *g, float *u, const float *w)
{
    const int64_t O = g->o, C = g->c;
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (O * C >= 4096)
    for (int64_t o = 0; o < O; o++) filter_row(C, O * C, u + o * C, w + o * C * 9);
}

void facet_conv_winograd_filter_grads(const struct facet_conv_geom *g, float *gw, const float *du)
{
    const int64_t O = g->o, C = g->c;
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (O * C >= 4096)
    for (int64_t o = 0; o < O; o++) filter_grad_row(C, O * C, gw + o * C * 9, du + o * C);
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

/* v [16][C][ld] of tiles [t0, t1) from x. */
FACET_CLONES static void input_tiles(const struct facet_conv_geom *g, const float *x, float *v, int64_t ld, int64_t t0,
                                     int64_t t1, float *rows)
{
    const int64_t C = g->c, H = g->h, W = g->w, rl = row_floats(g), plane = C * ld;
    /* a row of zeros for the tile rows above and below x (W <= 2 ceil(Wo/2) + 2 floats) */
    float *zero = rows + 4 * rl;
    memset(zero, 0, (size_t)W * sizeof(float));
    struct span s;
    for (int64_t t = t0; next_span(g, t0, &t, t1, &s);) {
        int64_t x0, klo, khi, len = span_cols(g, &s, &x0, &klo, &khi), nt = s.txb - s.txa;
        for (int64_t c = 0; c < C; c++) {
            const float *xc = x + (s.n * C + c) * H * W, *xr[4];
            for (int i = 0; i < 4; i++) {
                int64_t y = 2 * s.ty - g->ph + i;
                xr[i] = y >= 0 && y < H ? xc + y * W : zero;
            }
            const float *a0 = xr[0], *a1 = xr[1], *a2 = xr[2], *a3 = xr[3];
            float *r0 = rows, *r1 = rows + rl, *r2 = rows + 2 * rl, *r3 = rows + 3 * rl;
            /* B^T down the columns of the four input rows, zero outside x */
            for (int64_t k = 0; k < klo; k++) r0[k] = r1[k] = r2[k] = r3[k] = 0.0f;
            #pragma omp simd
            for (int64_t k = klo; k < khi; k++)
                facet_wino_bt(a0[x0 + k], a1[x0 + k], a2[x0 + k], a3[x0 + k], r0 + k, r1 + k, r2 + k, r3 + k);
            for (int64_t k = khi; k < len; k++) r0[k] = r1[k] = r2[k] = r3[k] = 0.0f;
            /* then B along each tile's rows */
            float *vc = v + c * ld + s.col;
            for (int i = 0; i < 4; i++) {
                const float *r = rows + i * rl;
                float *v0 = vc + (4 * i) * plane, *v1 = v0 + plane, *v2 = v1 + plane, *v3 = v2 + plane;
                #pragma omp simd
                for (int64_t q = 0; q < nt; q++)
                    facet_wino_bt(r[2 * q], r[2 * q + 1], r[2 * q + 2], r[2 * q + 3], v0 + q, v1 + q, v2 + q, v3 + q);
            }
        }
    }
}

/* out's tiles [t0, t1) = A^T M A (+ b) from m [16][O][ld]. */
FACET_CLONES static void output_tiles(const struct facet_conv_geom *g, float *out, const float *m, int64_t ld,
                                      int64_t t0, int64_t t1, const float *b, float *rows)
{
    const int64_t O = g->o, Ho = g->ho, Wo = g->wo, rl = row_floats(g), plane = O * ld;
    float *y0 = rows, *y1 = rows + rl;
    struct span s;
    for (int64_t t = t0; next_span(g, t0, &t, t1, &s);) {
        const int64_t nt = s.txb - s.txa, oy = 2 * s.ty;
        /* out's columns in the span; an odd Wo leaves the last tile half */
        const int64_t cols = 2 * nt < Wo - 2 * s.txa ? 2 * nt : Wo - 2 * s.txa;
        for (int64_t o = 0; o < O; o++) {
            const float *mo = m + o * ld + s.col;
            /* A^T down each tile's columns, then along its rows, into two rows of tiles */
            #pragma omp simd
            for (int64_t q = 0; q < nt; q++) {
                float p0[4], p1[4];
                facet_wino_at(mo[q], mo[4 * plane + q], mo[8 * plane + q], mo[12 * plane + q], &p0[0], &p1[0]);
                facet_wino_at(mo[plane + q], mo[5 * plane + q], mo[9 * plane + q], mo[13 * plane + q], &p0[1], &p1[1]);
                facet_wino_at(mo[2 * plane + q], mo[6 * plane + q], mo[10 * plane + q], mo[14 * plane + q], &p0[2],
                              &p1[2]);
                facet_wino_at(mo[3 * plane + q], mo[7 * plane + q], mo[11 * plane + q], mo[15 * plane + q], &p0[3],
                              &p1[3]);
                facet_wino_at(p0[0], p0[1], p0[2], p0[3], y0 + 2 * q, y0 + 2 * q + 1);
                facet_wino_at(p1[0], p1[1], p1[2], p1[3], y1 + 2 * q, y1 + 2 * q + 1);
            }
            const float bias = b ? b[o] : 0.0f;
            float *r0 = out + ((s.n * O + o) * Ho + oy) * Wo + 2 * s.txa;
            #pragma omp simd
            for (int64_t k = 0; k < cols; k++) r0[k] = y0[k] + bias;
            if (oy + 1 < Ho) {
                float *r1 = r0 + Wo;
                #pragma omp simd
                for (int64_t k = 0; k < cols; k++) r1[k] = y1[k] + bias;
            }
        }
    }
}

/* dm [16][O][ld] = A dY A^T of grad_out's tiles [t0, t1) (zero past the edges). */
FACET_CLONES static void grad_out_tiles(const struct facet_conv_geom *g, const float *gout, float *dm, int64_t ld,
                                        int64_t t0, int64_t t1, float *rows)
{
    const int64_t O = g->o, Ho = g->ho, Wo = g->wo, rl = row_floats(g), plane = O * ld;
    float *p0 = rows, *p1 = rows + rl, *p2 = rows + 2 * rl, *p3 = rows + 3 * rl;
    struct span s;
    for (int64_t t = t0; next_span(g, t0, &t, t1, &s);) {
        const int64_t nt = s.txb - s.txa, y0 = 2 * s.ty;
        /* grad_out's columns in the span; an odd Wo leaves the last tile half */
        const int64_t cols = 2 * nt < Wo - 2 * s.txa ? 2 * nt : Wo - 2 * s.txa;
        for (int64_t o = 0; o < O; o++) {
            const float *r0 = gout + ((s.n * O + o) * Ho + y0) * Wo + 2 * s.txa;
            /* A down the columns of the two rows (the second zero past the bottom) */
            if (y0 + 1 < Ho) {
                const float *r1 = r0 + Wo;
                #pragma omp simd
                for (int64_t k = 0; k < cols; k++) facet_wino_a(r0[k], r1[k], p0 + k, p1 + k, p2 + k, p3 + k);
            } else {
                #pragma omp simd
                for (int64_t k = 0; k < cols; k++) facet_wino_a(r0[k], 0.0f, p0 + k, p1 + k, p2 + k, p3 + k);
            }
            for (int64_t k = cols; k < 2 * nt; k++) p0[k] = p1[k] = p2[k] = p3[k] = 0.0f;
            /* then A along each tile's row */
            for (int i = 0; i < 4; i++) {
                const float *r = rows + i * rl;
                float *m0 = dm + (4 * i) * plane + o * ld + s.col, *m1 = m0 + plane, *m2 = m1 + plane, *m3 = m2 + plane;
                #pragma omp simd
                for (int64_t q = 0; q < nt; q++) facet_wino_a(r[2 * q], r[2 * q + 1], m0 + q, m1 + q, m2 + q, m3 + q);
            }
        }
    }
}

/* gx += B V B^T of the tiles [t0, t1) in v [16][C][ld]. */
FACET_CLONES static void grad_input_tiles(const struct facet_conv_geom *g, float *gx, const float *v, int64_t ld,
                                          int64_t t0, int64_t t1, float *rows)
{
    const int64_t C = g->c, H = g->h, W = g->w, rl = row_floats(g), plane = C * ld;
    struct span s;
    for (int64_t t = t0; next_span(g, t0, &t, t1, &s);) {
        int64_t x0, klo, khi, nt = s.txb - s.txa;
        span_cols(g, &s, &x0, &klo, &khi);
        for (int64_t c = 0; c < C; c++) {
            const float *vc = v + c * ld + s.col;
            float *r0 = rows, *r1 = rows + rl, *r2 = rows + 2 * rl, *r3 = rows + 3 * rl;
            /* B along each tile's rows; a tile's last two columns are its right
             * neighbour's first two, so column 2q sums tile q's z0 and tile q-1's z2 */
            for (int i = 0; i < 4; i++) {
                float *r = rows + i * rl;
                const float *v0 = vc + (4 * i) * plane, *v1 = v0 + plane, *v2 = v1 + plane, *v3 = v2 + plane;
                float z0, z1, z2, z3;
                facet_wino_b(v0[0], v1[0], v2[0], v3[0], &z0, &z1, &z2, &z3);
                r[0] = z0, r[1] = z1;
                #pragma omp simd
                for (int64_t q = 1; q < nt; q++) {
                    float a0, a1, a2, a3, b0, b1, b2, b3;
                    facet_wino_b(v0[q - 1], v1[q - 1], v2[q - 1], v3[q - 1], &a0, &a1, &a2, &a3);
                    facet_wino_b(v0[q], v1[q], v2[q], v3[q], &b0, &b1, &b2, &b3);
                    r[2 * q] = b0 + a2, r[2 * q + 1] = b1 + a3;
                }
                facet_wino_b(v0[nt - 1], v1[nt - 1], v2[nt - 1], v3[nt - 1], &z0, &z1, &z2, &z3);
                r[2 * nt] = z2, r[2 * nt + 1] = z3;
            }
            /* then B down the columns, into grad_x's rows inside x */
            float *gc = gx + (s.n * C + c) * H * W, *gr[4];
            for (int i = 0; i < 4; i++) {
                int64_t y = 2 * s.ty - g->ph + i;
                gr[i] = y >= 0 && y < H ? gc + y * W : NULL;
            }
            if (gr[0] && gr[3]) {   /* the common case: all four rows inside x */
                #pragma omp simd
                for (int64_t k = klo; k < khi; k++) {
                    float z0, z1, z2, z3;
                    facet_wino_b(r0[k], r1[k], r2[k], r3[k], &z0, &z1, &z2, &z3);
                    gr[0][x0 + k] += z0, gr[1][x0 + k] += z1, gr[2][x0 + k] += z2, gr[3][x0 + k] += z3;
                }
                continue;
            }
            for (int64_t k = klo; k < khi; k++) {
                float z[4];
                facet_wino_b(r0[k], r1[k], r2[k], r3[k], &z[0], &z[1], &z[2], &z[3]);
                for (int i = 0; i < 4; i++)
                    if (gr[i]) gr[i][x0 + k] += z[i];
            }
        }
    }
}

int facet_conv_winograd_forward(const struct facet_conv_geom *g, float *out, const float *x, const float *u,
                                const float *b, int64_t t0, int64_t t1, float *slot)
{
    const int64_t O = g->o, C = g->c, nb = facet_conv_winograd_tiles(g);
    float *v = slot, *m = v + 16 * C * nb, *rows = m + 16 * O * nb;
    int rc = 0;
    for (int64_t a = t0; a < t1; a += nb) {
        const int64_t z = a + nb < t1 ? a + nb : t1;
        input_tiles(g, x, v, nb, a, z, rows);
        for (int e = 0; e < 16; e++)
            rc |= facet_blas_sgemm(0, 0, O, z - a, C, 1.0f, u + e * O * C, C, v + e * C * nb, nb, 0.0f, m + e * O * nb, nb);
        output_tiles(g, out, m, nb, a, z, b, rows);
    }
    return rc;
}

int facet_conv_winograd_backward(const struct facet_conv_geom *g, float *gx, float *du, int du_fresh,
                                 const float *gout, const float *x, const float *u, int64_t t0, int64_t t1, float *slot)
{
    const int64_t O = g->o, C = g->c, nb = facet_conv_winograd_tiles(g);
    float *v = slot, *m = v + 16 * C * nb, *rows = m + 16 * O * nb;
    int rc = 0;
    for (int64_t a = t0; a < t1; a += nb) {
        const int64_t z = a + nb < t1 ? a + nb : t1, n = z - a;
        grad_out_tiles(g, gout, m, nb, a, z, rows);
        if (du) {
            input_tiles(g, x, v, nb, a, z, rows);
            /* the first GEMM of a fresh du overwrites it: no memset of 16 O C floats */
            const float beta = du_fresh && a == t0 ? 0.0f : 1.0f;
            for (int e = 0; e < 16; e++)
                rc |= facet_blas_sgemm(0, 1, O, C, n, 1.0f, m + e * O * nb, nb, v + e * C * nb, nb, beta,
                                       du + e * O * C, C);
        }
        if (gx) {
            for (int e = 0; e < 16; e++)
                rc |= facet_blas_sgemm(1, 0, C, n, O, 1.0f, u + e * O * C, C, m + e * O * nb, nb, 0.0f, v + e * C * nb, nb);
            grad_input_tiles(g, gx, v, nb, a, z, rows);
        }
    }
    return rc;
}
