/*
 * conv_winograd_math.h - the transforms of Winograd's minimal filtering
 * F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional Neural
 * Networks", 2016), one 4-vector at a time, shared by the CPU path
 * (conv_winograd.c) and any device kernel. A 2x2 output tile of a 3x3
 * correlation over a 4x4 input tile d is
 *     Y = A^T [ (G g G^T) (.) (B^T d B) ] A
 * with (.) the elementwise product over 16 "transform elements"; applying a
 * 4-point transform along the rows and then the columns of a tile gives the
 * 2-D one. The backward uses the same three matrices transposed, which is
 * exact algebra of the bilinear map above:
 *     grad_d = B [ U (.) (A grad_Y A^T) ] B^T,  grad_g = G^T [ sum over tiles
 *     (A grad_Y A^T) (.) (B^T d B) ] G.
 * Every coefficient is 0, +-1 or +-1/2, so the transforms add rounding of a
 * few ulps and never overflow where the direct sum would not.
 *
 * F(4x4, 3x3) (the second half of this file) works the same way on 6x6 input
 * tiles and 4x4 output tiles, with 36 transform elements: 4x fewer
 * multiplications than the direct sum where F(2x2, 3x3) has 2.25x. Its
 * coefficients reach 8 and 1/24 (interpolation points 0, +-1, +-2), so its
 * results carry rounding of about ten times F(2x2, 3x3)'s.
 */
#ifndef FACET_CONV_WINOGRAD_MATH_H
#define FACET_CONV_WINOGRAD_MATH_H

#include "elementwise_math.h"   /* FACET_HD */

/* Each transform is a macro over any type with + - and * by a float (float
 * here and on a device, GCC's vector types in conv_winograd.c, so the
 * vector loops run these same formulas), then a function over floats. The
 * macros' arguments must be plain values: some are read more than once.
 * The functions' outputs go through scalar pointers, not arrays: a loop over
 * tiles keeps them in registers and vectorises (GCC gives up on a per-lane
 * array). */

/* B^T d: the input tile's transform (rows 1 0 -1 0 / 0 1 1 0 / 0 -1 1 0 / 0 1 0 -1). */
#define FACET_WINO_BT(d0, d1, d2, d3, v0, v1, v2, v3) \
    ((v0) = (d0) - (d2), (v1) = (d1) + (d2), (v2) = (d2) - (d1), (v3) = (d1) - (d3))
FACET_HD void facet_wino_bt(float d0, float d1, float d2, float d3, float *v0, float *v1, float *v2, float *v3)
{
    FACET_WINO_BT(d0, d1, d2, d3, *v0, *v1, *v2, *v3);
}

/* B x: the adjoint of B^T, for grad_x. */
#define FACET_WINO_B(x0, x1, x2, x3, z0, z1, z2, z3) \
    ((z0) = (x0), (z1) = (x1) - (x2) + (x3), (z2) = (x1) + (x2) - (x0), (z3) = -(x3))
FACET_HD void facet_wino_b(float x0, float x1, float x2, float x3, float *z0, float *z1, float *z2, float *z3)
{
    FACET_WINO_B(x0, x1, x2, x3, *z0, *z1, *z2, *z3);
}

/* G g: the filter's transform (rows 1 0 0 / .5 .5 .5 / .5 -.5 .5 / 0 0 1). */
FACET_HD void facet_wino_g(float g0, float g1, float g2, float *u0, float *u1, float *u2, float *u3)
{
    float h = 0.5f * (g0 + g2);
    *u0 = g0;
    *u1 = h + 0.5f * g1;
    *u2 = h - 0.5f * g1;
    *u3 = g2;
}

/* G^T u: the adjoint of facet_wino_g, for grad_weight. */
FACET_HD void facet_wino_gt(float u0, float u1, float u2, float u3, float *g0, float *g1, float *g2)
{
    float s = 0.5f * (u1 + u2);
    *g0 = u0 + s;
    *g1 = 0.5f * (u1 - u2);
    *g2 = s + u3;
}

/* A^T m: the product's transform back to two outputs (rows 1 1 1 0 / 0 1 -1 -1). */
#define FACET_WINO_AT(m0, m1, m2, m3, y0, y1) ((y0) = (m0) + (m1) + (m2), (y1) = (m1) - (m2) - (m3))
FACET_HD void facet_wino_at(float m0, float m1, float m2, float m3, float *y0, float *y1)
{
    FACET_WINO_AT(m0, m1, m2, m3, *y0, *y1);
}

/* A y: the adjoint of A^T, for grad_out. */
#define FACET_WINO_A(y0, y1, m0, m1, m2, m3) ((m0) = (y0), (m1) = (y0) + (y1), (m2) = (y0) - (y1), (m3) = -(y1))
FACET_HD void facet_wino_a(float y0, float y1, float *m0, float *m1, float *m2, float *m3)
{
    FACET_WINO_A(y0, y1, *m0, *m1, *m2, *m3);
}

/* U = G g G^T for one 3x3 filter g (row-major): element (i, j) at u[(4 i + j) us]. */
FACET_HD void facet_wino_filter(const float *g, float *u, int64_t us)
{
    float a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3;   /* G g, by columns */
    facet_wino_g(g[0], g[3], g[6], &a0, &a1, &a2, &a3);
    facet_wino_g(g[1], g[4], g[7], &b0, &b1, &b2, &b3);
    facet_wino_g(g[2], g[5], g[8], &c0, &c1, &c2, &c3);
    facet_wino_g(a0, b0, c0, u, u + us, u + 2 * us, u + 3 * us);
    facet_wino_g(a1, b1, c1, u + 4 * us, u + 5 * us, u + 6 * us, u + 7 * us);
    facet_wino_g(a2, b2, c2, u + 8 * us, u + 9 * us, u + 10 * us, u + 11 * us);
    facet_wino_g(a3, b3, c3, u + 12 * us, u + 13 * us, u + 14 * us, u + 15 * us);
}

/* g += G^T U G for one filter's gradient (U's element (i, j) at u[(4 i + j) us]),
 * the adjoint of facet_wino_filter. */
FACET_HD void facet_wino_filter_grad_add(const float *u, int64_t us, float *g)
{
    float t[3][4];   /* G^T U, by columns */
    for (int j = 0; j < 4; j++)
        facet_wino_gt(u[j * us], u[(4 + j) * us], u[(8 + j) * us], u[(12 + j) * us], &t[0][j], &t[1][j], &t[2][j]);
    for (int i = 0; i < 3; i++) {
        float r0, r1, r2;
        facet_wino_gt(t[i][0], t[i][1], t[i][2], t[i][3], &r0, &r1, &r2);
        g[3 * i] += r0, g[3 * i + 1] += r1, g[3 * i + 2] += r2;
    }
}

/* ---- F(4x4, 3x3) ------------------------------------------------------------------ */

/* B^T d: the 6x6 input tile's transform, rows 4 0 -5 0 1 0 / 0 -4 -4 1 1 0 /
 * 0 4 -4 -1 1 0 / 0 -2 -1 2 1 0 / 0 2 -1 -2 1 0 / 0 4 0 -5 0 1 (t: a scratch
 * of the same type). */
#define FACET_WINO4_BT(d0, d1, d2, d3, d4, d5, v0, v1, v2, v3, v4, v5, t)        \
    ((v0) = 4.0f * (d0) - 5.0f * (d2) + (d4), (v5) = 4.0f * (d1) - 5.0f * (d3) + (d5), \
     (t) = (d4) - 4.0f * (d2), (v1) = (t) - (4.0f * (d1) - (d3)), (v2) = (t) + (4.0f * (d1) - (d3)), \
     (t) = (d4) - (d2), (v3) = (t) - 2.0f * ((d1) - (d3)), (v4) = (t) + 2.0f * ((d1) - (d3)))

/* B x: the adjoint of B^T, for grad_x. */
#define FACET_WINO4_B(x0, x1, x2, x3, x4, x5, z0, z1, z2, z3, z4, z5)                        \
    ((z0) = 4.0f * (x0), (z1) = 4.0f * ((x2) - (x1)) + 2.0f * ((x4) - (x3)) + 4.0f * (x5),   \
     (z2) = -5.0f * (x0) - 4.0f * ((x1) + (x2)) - ((x3) + (x4)),                            \
     (z3) = ((x1) - (x2)) + 2.0f * ((x3) - (x4)) - 5.0f * (x5), (z4) = (x0) + ((x1) + (x2)) + ((x3) + (x4)), \
     (z5) = (x5))

/* A^T m: six products back to four outputs, rows 1 1 1 1 1 0 / 0 1 -1 2 -2 0 /
 * 0 1 1 4 4 0 / 0 1 -1 8 -8 1 (a, b, c, d: scratch). */
#define FACET_WINO4_AT(m0, m1, m2, m3, m4, m5, y0, y1, y2, y3, a, b, c, d)                          \
    ((a) = (m1) + (m2), (b) = (m1) - (m2), (c) = (m3) + (m4), (d) = (m3) - (m4), (y0) = (m0) + (a) + (c), \
     (y1) = (b) + 2.0f * (d), (y2) = (a) + 4.0f * (c), (y3) = (b) + 8.0f * (d) + (m5))

/* A y: the adjoint of A^T, for grad_out (p, q, r, s: scratch). */
#define FACET_WINO4_A(y0, y1, y2, y3, m0, m1, m2, m3, m4, m5, p, q, r, s)                              \
    ((p) = (y0) + (y2), (q) = (y1) + (y3), (r) = (y0) + 4.0f * (y2), (s) = 2.0f * (y1) + 8.0f * (y3), \
     (m0) = (y0), (m1) = (p) + (q), (m2) = (p) - (q), (m3) = (r) + (s), (m4) = (r) - (s), (m5) = (y3))

/* G g: the filter's transform, rows 1/4 0 0 / -1/6 -1/6 -1/6 / -1/6 1/6 -1/6 /
 * 1/24 1/12 1/6 / 1/24 -1/12 1/6 / 0 0 1 (h, k: scratch). */
#define FACET_WINO4_G(g0, g1, g2, u0, u1, u2, u3, u4, u5, h, k)                                     \
    ((h) = (g0) + (g2), (k) = 0.25f * (g0) + (g2), (u0) = 0.25f * (g0), (u1) = -((h) + (g1)) * (1.0f / 6.0f), \
     (u2) = -((h) - (g1)) * (1.0f / 6.0f), (u3) = ((k) + 0.5f * (g1)) * (1.0f / 6.0f),               \
     (u4) = ((k) - 0.5f * (g1)) * (1.0f / 6.0f), (u5) = (g2))

/* G^T u: the adjoint of G (a, b, c, d: scratch). */
#define FACET_WINO4_GT(u0, u1, u2, u3, u4, u5, g0, g1, g2, a, b, c, d)                                        \
    ((a) = (u1) + (u2), (b) = (u2) - (u1), (c) = (u3) + (u4), (d) = (u3) - (u4),                               \
     (g0) = 0.25f * (u0) + (0.25f * (c) - (a)) * (1.0f / 6.0f), (g1) = ((b) + 0.5f * (d)) * (1.0f / 6.0f), \
     (g2) = ((c) - (a)) * (1.0f / 6.0f) + (u5))

/* U = G g G^T for one 3x3 filter g (row-major): element (i, j) at u[(6 i + j) us].
 * A macro of scalars, so that a loop over filters inlines and vectorises it
 * (GCC called a function of it instead). */
#define FACET_WINO4_ROW_(u, us, i, x, y, z, h, k)                                                       \
    FACET_WINO4_G(x, y, z, (u)[(6 * i) * (us)], (u)[(6 * i + 1) * (us)], (u)[(6 * i + 2) * (us)],       \
                  (u)[(6 * i + 3) * (us)], (u)[(6 * i + 4) * (us)], (u)[(6 * i + 5) * (us)], h, k)
#define FACET_WINO4_FILTER(g, u, us)                                                                   \
    do {                                                                                               \
        float h_, k_, a0_, a1_, a2_, a3_, a4_, a5_, b0_, b1_, b2_, b3_, b4_, b5_, c0_, c1_, c2_, c3_, c4_, c5_; \
        FACET_WINO4_G((g)[0], (g)[3], (g)[6], a0_, a1_, a2_, a3_, a4_, a5_, h_, k_);                   \
        FACET_WINO4_G((g)[1], (g)[4], (g)[7], b0_, b1_, b2_, b3_, b4_, b5_, h_, k_);                   \
        FACET_WINO4_G((g)[2], (g)[5], (g)[8], c0_, c1_, c2_, c3_, c4_, c5_, h_, k_);                   \
        FACET_WINO4_ROW_(u, us, 0, a0_, b0_, c0_, h_, k_);                                             \
        FACET_WINO4_ROW_(u, us, 1, a1_, b1_, c1_, h_, k_);                                             \
        FACET_WINO4_ROW_(u, us, 2, a2_, b2_, c2_, h_, k_);                                             \
        FACET_WINO4_ROW_(u, us, 3, a3_, b3_, c3_, h_, k_);                                             \
        FACET_WINO4_ROW_(u, us, 4, a4_, b4_, c4_, h_, k_);                                             \
        FACET_WINO4_ROW_(u, us, 5, a5_, b5_, c5_, h_, k_);                                             \
    } while (0)

/* g += G^T U G for one filter's gradient (U's element (i, j) at u[(6 i + j) us]). */
FACET_HD void facet_wino4_filter_grad_add(const float *u, int64_t us, float *g)
{
    float a, b, c, d, t[3][6];   /* G^T U, by columns of U */
    for (int j = 0; j < 6; j++)
        FACET_WINO4_GT(u[j * us], u[(6 + j) * us], u[(12 + j) * us], u[(18 + j) * us], u[(24 + j) * us],
                       u[(30 + j) * us], t[0][j], t[1][j], t[2][j], a, b, c, d);
    for (int i = 0; i < 3; i++) {
        float r0, r1, r2;
        FACET_WINO4_GT(t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5], r0, r1, r2, a, b, c, d);
        g[3 * i] += r0, g[3 * i + 1] += r1, g[3 * i + 2] += r2;
    }
}

#endif
