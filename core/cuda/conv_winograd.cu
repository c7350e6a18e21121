/*
 * conv_winograd.cu - the GPU's Winograd convolutions: float32 3x3 stride-1
 * layers as F(4x4, 3x3), or F(2x2, 3x3) where the CPU path takes it
 * (FACET_CONV_WINOGRAD=2, or 36 O C transformed filters past 32 MiB:
 * facet_conv_winograd_tile) and whenever TF32 is on (whose 10-bit inputs
 * F(4x4, 3x3)'s coefficients of up to 8 and 1/24 would amplify). The
 * transforms are conv_winograd_math.h's, the CPU path's formulas; the P =
 * (m + 2)^2 GEMMs, one per transform element, are one strided-batched cuBLAS
 * call each:
 *
 *   forward   U_e [O x C] = (G w G^T)_e              (scratch, once a call)
 *             V_e [C x T] = (B^T d B)_e of T input tiles (workspace)
 *             M_e [O x T] = U_e V_e;  out tiles = A^T M A (+ bias)
 *   backward  dM_e [O x T] = (A dY A^T)_e of the grad_out tiles
 *             dU_e [O x C] += dM_e V_e^T;  at the end grad_w += G^T dU G
 *             V_e = U_e^T dM_e; each tile's B V B^T in place, then one
 *             thread per input element sums the (at most 2 x 2) tiles that
 *             cover it, overwriting grad_x
 *
 * The tiles of a chunk of images are numbered (image, tile row, tile
 * column) and V, M and dM hold them as [P][rows][ld] (ld: T, rounded up to
 * 8 floats where the workspace allows); a transform is one thread per (channel, tile), whose P values are
 * P planes apart, so a warp's loads and stores of one plane are contiguous.
 * No atomics: every sum has a fixed order, and the result is the same on
 * every run.
 */
#include "conv_winograd.cuh"
extern "C" {
#include "conv_winograd.h"
}
#include "conv_winograd_math.h"

/* ---- the transforms of one tile, m = 2 or 4 (A = m + 2 inputs a side) ---------------
 * 1-D transforms from strided floats to strided floats (tile_2d makes the
 * 2-D ones of them). Loops over the compile-time sizes unroll, so the tiles
 * stay in registers. */
template <int M> struct wino_1d;

template <> struct wino_1d<2> {
    static __device__ __forceinline__ void bt(const float *d, int s, float *v, int vs)
    {
        FACET_WINO_BT(d[0], d[s], d[2 * s], d[3 * s], v[0], v[vs], v[2 * vs], v[3 * vs]);
    }
    static __device__ __forceinline__ void b(const float *x, int s, float *z, int zs)
    {
        FACET_WINO_B(x[0], x[s], x[2 * s], x[3 * s], z[0], z[zs], z[2 * zs], z[3 * zs]);
    }
    static __device__ __forceinline__ void at(const float *m, int s, float *y, int ys)
    {
        FACET_WINO_AT(m[0], m[s], m[2 * s], m[3 * s], y[0], y[ys]);
    }
    static __device__ __forceinline__ void a(const float *y, int s, float *m, int ms)
    {
        FACET_WINO_A(y[0], y[s], m[0], m[ms], m[2 * ms], m[3 * ms]);
    }
    static __device__ __forceinline__ void filter(const float *w, float *u, int64_t us) { facet_wino_filter(w, u, us); }
    static __device__ __forceinline__ void filter_grad_add(const float *u, int64_t us, float *g)
    {
        facet_wino_filter_grad_add(u, us, g);
    }
};

template <> struct wino_1d<4> {
    static __device__ __forceinline__ void bt(const float *d, int s, float *v, int vs)
    {
        float t;
        FACET_WINO4_BT(d[0], d[s], d[2 * s], d[3 * s], d[4 * s], d[5 * s], v[0], v[vs], v[2 * vs], v[3 * vs],
                       v[4 * vs], v[5 * vs], t);
    }
    static __device__ __forceinline__ void b(const float *x, int s, float *z, int zs)
    {
        FACET_WINO4_B(x[0], x[s], x[2 * s], x[3 * s], x[4 * s], x[5 * s], z[0], z[zs], z[2 * zs], z[3 * zs],
                      z[4 * zs], z[5 * zs]);
    }
    static __device__ __forceinline__ void at(const float *m, int s, float *y, int ys)
    {
        float a, b, c, d;
        FACET_WINO4_AT(m[0], m[s], m[2 * s], m[3 * s], m[4 * s], m[5 * s], y[0], y[ys], y[2 * ys], y[3 * ys], a, b,
                       c, d);
    }
    static __device__ __forceinline__ void a(const float *y, int s, float *m, int ms)
    {
        float p, q, r, t;
        FACET_WINO4_A(y[0], y[s], y[2 * s], y[3 * s], m[0], m[ms], m[2 * ms], m[3 * ms], m[4 * ms], m[5 * ms], p,
                      q, r, t);
    }
    static __device__ __forceinline__ void filter(const float *w, float *u, int64_t us) { FACET_WINO4_FILTER(w, u, us); }
    static __device__ __forceinline__ void filter_grad_add(const float *u, int64_t us, float *g)
    {
        facet_wino4_filter_grad_add(u, us, g);
    }
};

/* out = F x F^T for a 1-D transform F of IN points to OUT (x: IN x IN,
 * out: OUT x OUT, row-major): F down the columns into t, then along t's rows.
 * f(src, stride, dst, stride) is one of wino_1d<M>'s. */
template <int IN, int OUT, typename F>
static __device__ __forceinline__ void tile_2d(const float *x, float *out, F f)
{
    float t[OUT * IN];
#pragma unroll
    for (int j = 0; j < IN; j++) f(x + j, IN, t + j, IN);
#pragma unroll
    for (int i = 0; i < OUT; i++) f(t + i * IN, 1, out + i * OUT, 1);
}

/* ---- geometry ------------------------------------------------------------------------
 * A chunk's tiles in the kernels' index type I (cuda_common.cuh, "index
 * math"): t = (image tpi + tile row) tw + tile column. */
template <typename I>
struct wino_ix {
    typedef signed_of<I> S;
    S c, h, w, o, ho, wo, ph, pw, tw;
    I tiles, ld;               /* the chunk's tiles T, and V's and M's row length */
    div_by<I> by_tiles, by_tpi, by_tw, by_h, by_w, by_c;
};

template <typename I>
static wino_ix<I> wino_ix_of(const struct facet_conv_geom &g, int64_t m, int64_t tiles, int64_t ld)
{
    typedef signed_of<I> S;
    const int64_t tw = (g.wo + m - 1) / m, tpi = (g.ho + m - 1) / m * tw;
    wino_ix<I> x;
    x.c = (S)g.c, x.h = (S)g.h, x.w = (S)g.w, x.o = (S)g.o, x.ho = (S)g.ho, x.wo = (S)g.wo;
    x.ph = (S)g.ph, x.pw = (S)g.pw, x.tw = (S)tw, x.tiles = (I)tiles, x.ld = (I)ld;
    x.by_tiles = div_by<I>(tiles), x.by_tpi = div_by<I>(tpi), x.by_tw = div_by<I>(tw);
    x.by_h = div_by<I>(g.h), x.by_w = div_by<I>(g.w), x.by_c = div_by<I>(g.c);
    return x;
}

/* Tile t's image, and its top-left output (= input, before the padding) corner. */
template <typename I>
struct tile_pos {
    I n;
    signed_of<I> y, x;
};
template <int M, typename I>
static __device__ __forceinline__ tile_pos<I> tile_of(const wino_ix<I> &g, I t)
{
    const I r = g.by_tpi.mod(t);
    tile_pos<I> a = { g.by_tpi.div(t), (signed_of<I>)g.by_tw.div(r) * M, (signed_of<I>)g.by_tw.mod(r) * M };
    return a;
}

/* ---- kernels -------------------------------------------------------------------------- */

/* u [P][O][C] = G w G^T for each of the O C filters (one thread each). */
template <int M>
static __global__ void filter_kernel(float *__restrict__ u, const float *__restrict__ w, int64_t filters)
{
    FACET_CUDA_FOR(e, filters) wino_1d<M>::filter(w + 9 * e, u + e, filters);
}

/* grad_w += G^T du G for each filter. */
template <int M>
static __global__ void filter_grad_kernel(float *__restrict__ gw, const float *__restrict__ du, int64_t filters)
{
    FACET_CUDA_FOR(e, filters) wino_1d<M>::filter_grad_add(du + e, filters, gw + 9 * e);
}

/* dst [P][rows][ld] = the transform of each (row, tile)'s IN x IN window of
 * src [images][rows][hh][ww], whose corner sits (oy, ox) before the tile's
 * and which reads 0 outside the plane: B^T d B of x's A x A windows (IN = A,
 * the padding before), or A dY A^T of grad_out's M x M tiles (IN = M).
 * src: the chunk's first image. */
template <int M, int IN, typename I>
static __global__ void tiles_in_kernel(wino_ix<I> g, float *__restrict__ dst, const float *__restrict__ src,
                                       signed_of<I> rows, signed_of<I> hh, signed_of<I> ww, signed_of<I> oy,
                                       signed_of<I> ox)
{
    typedef signed_of<I> S;
    constexpr int A = M + 2;
    const I plane = (I)rows * g.ld;
    FACET_CUDA_FOR_T(I, e, (I)rows * g.tiles) {
        const I r = g.by_tiles.div(e), t = g.by_tiles.mod(e);
        const tile_pos<I> at = tile_of<M>(g, t);
        const float *sp = src + ((at.n * (I)rows + r) * (I)hh) * (I)ww;
        const S y0 = at.y - oy, x0 = at.x - ox;
        float d[IN * IN], v[A * A];
#pragma unroll
        for (int i = 0; i < IN; i++) {
#pragma unroll
            for (int j = 0; j < IN; j++) {
                const S h = y0 + i, w = x0 + j;
                d[i * IN + j] = h >= 0 && h < hh && w >= 0 && w < ww ? sp[h * ww + w] : 0.0f;
            }
        }
        if constexpr (IN == A)
            tile_2d<A, A>(d, v, [](const float *a, int as, float *b, int bs) { wino_1d<M>::bt(a, as, b, bs); });
        else
            tile_2d<M, A>(d, v, [](const float *a, int as, float *b, int bs) { wino_1d<M>::a(a, as, b, bs); });
        float *dp = dst + r * g.ld + t;
#pragma unroll
        for (int k = 0; k < A * A; k++) dp[k * plane] = v[k];
    }
}

/* out tiles = A^T m A (+ bias), m [P][O][ld]; out: the chunk's first image. */
template <int M, typename I>
static __global__ void output_kernel(wino_ix<I> g, float *__restrict__ out, const float *__restrict__ m,
                                     const float *__restrict__ bias)
{
    typedef signed_of<I> S;
    constexpr int A = M + 2;
    const I plane = (I)g.o * g.ld;
    FACET_CUDA_FOR_T(I, e, (I)g.o * g.tiles) {
        const I o = g.by_tiles.div(e), t = g.by_tiles.mod(e);
        const tile_pos<I> at = tile_of<M>(g, t);
        const float *mp = m + o * g.ld + t;
        float d[A * A], y[M * M];
#pragma unroll
        for (int k = 0; k < A * A; k++) d[k] = mp[k * plane];
        tile_2d<A, M>(d, y, [](const float *a, int as, float *b, int bs) { wino_1d<M>::at(a, as, b, bs); });
        const float b = bias ? bias[o] : 0.0f;
        float *op = out + ((at.n * (I)g.o + o) * (I)g.ho) * (I)g.wo;
#pragma unroll
        for (int i = 0; i < M; i++) {
#pragma unroll
            for (int j = 0; j < M; j++) {
                const S h = at.y + i, w = at.x + j;
                if (h < g.ho && w < g.wo) op[h * g.wo + w] = y[i * M + j] + b;
            }
        }
    }
}

/* v [P][C][ld] = B v B^T in place: each (channel, tile)'s share of grad_x,
 * element (i, j) of the A x A input tile in plane i A + j. */
template <int M, typename I>
static __global__ void grad_tile_kernel(wino_ix<I> g, float *__restrict__ v)
{
    constexpr int A = M + 2;
    const I plane = (I)g.c * g.ld;
    FACET_CUDA_FOR_T(I, e, (I)g.c * g.tiles) {
        const I c = g.by_tiles.div(e), t = g.by_tiles.mod(e);
        float *vp = v + c * g.ld + t;
        float d[A * A], r[A * A];
#pragma unroll
        for (int k = 0; k < A * A; k++) d[k] = vp[k * plane];
        tile_2d<A, A>(d, r, [](const float *a, int as, float *b, int bs) { wino_1d<M>::b(a, as, b, bs); });
#pragma unroll
        for (int k = 0; k < A * A; k++) vp[k * plane] = r[k];
    }
}

/* grad_x [nb][C][H][W] = the sum of the tiles' shares that cover each
 * element (tile rows whose A input rows span it: at most 2, likewise
 * columns), in a fixed order; overwrites. gx: the chunk's first image. */
template <int M, typename I>
static __global__ void gather_kernel(wino_ix<I> g, float *__restrict__ gx, const float *__restrict__ v, int64_t total)
{
    typedef signed_of<I> S;
    constexpr int A = M + 2;
    const I plane = (I)g.c * g.ld;
    const S th = (g.ho + M - 1) / M;
    FACET_CUDA_FOR_T(I, e, total) {
        const plane_pos<I> p = plane_pos_of(e, g.by_h, g.by_w);   /* plane n C + c */
        const I n = g.by_c.div(p.plane), c = g.by_c.mod(p.plane);
        const S hp = (S)p.row + g.ph, wp = (S)p.col + g.pw;   /* in padded coordinates */
        const float *vc = v + c * g.ld + n * (I)(th * g.tw);
        S ty = hp / M < th - 1 ? hp / M : th - 1;
        float s = 0.0f;
        for (; ty >= 0 && hp - ty * M < A; ty--) {
            S tx = wp / M < g.tw - 1 ? wp / M : g.tw - 1;
            for (; tx >= 0 && wp - tx * M < A; tx--)
                s += vc[(I)((hp - ty * M) * A + (wp - tx * M)) * plane + (I)(ty * g.tw + tx)];
        }
        gx[e] = s;
    }
}

/* ---- entry points ---------------------------------------------------------------------- */

/* The output tile's side on the GPU: the CPU path's, and 2 under TF32. */
static int64_t tile_side(const struct facet_conv_geom &g)
{
    return facet_tf32_enabled() ? 2 : facet_conv_winograd_tile(&g);
}

static int64_t round8(int64_t v) { return (v + 7) / 8 * 8; }

int64_t wino_images(const struct facet_conv_geom &g, int64_t ws_elems)
{
    if (!facet_conv_winograd_fits(&g) || g.n < 1) return 0;
    const int64_t m = tile_side(g), a = m + 2, tpi = ((g.ho + m - 1) / m) * ((g.wo + m - 1) / m);
    const int64_t per = a * a * (g.c + g.o);   /* floats a column of tiles takes in V and M */
    if (ws_elems / per < tpi) return 0;
    int64_t nb = ws_elems / per / tpi;
    if (nb > g.n) nb = g.n;
    /* cuBLAS's int sizes: T columns a GEMM */
    while (nb > 1 && nb * tpi > INT32_MAX - 8) nb /= 2;
    return nb;
}

/* Whether the call's index math fits 32 bits: x, out, the workspace, the transformed filters. */
static bool wino_fits32(const struct facet_conv_geom &g, int64_t ws_elems)
{
    const int64_t a = tile_side(g) + 2;
    return fits_int32(g.n * g.c * g.h * g.w, g.n * g.o * g.p, ws_elems, a * a * g.o * g.c, g.h + 2 * g.ph + a,
                      g.w + 2 * g.pw + a);
}

/* A chunk of nb images: its tiles T and the row length of V and M, T
 * rounded up to 8 floats (aligned rows for the GEMMs) where the workspace
 * holds that, else T (a batch of one on small outputs, where rounding up
 * would double the room a workspace needs). */
struct wino_chunk {
    int64_t tiles, ld;
};

template <int M>
static wino_chunk chunk_of(const struct facet_conv_geom &g, int64_t nb, int64_t ws_elems)
{
    const int64_t tiles = nb * (((g.ho + M - 1) / M) * ((g.wo + M - 1) / M)), per = (M + 2) * (M + 2) * (g.c + g.o);
    wino_chunk c = { tiles, per * round8(tiles) <= ws_elems ? round8(tiles) : tiles };
    return c;
}

/* V = B^T d B of the chunk's input tiles (x: its first image). */
template <int M, typename I>
static int input_tiles(const char *fn, const struct facet_conv_geom &g, const wino_ix<I> &ix, float *v, const float *x,
                       int64_t tiles)
{
    typedef signed_of<I> S;
    return launch_flat(fn, g.c * tiles, tiles_in_kernel<M, M + 2, I>, ix, v, x, (S)g.c, (S)g.h, (S)g.w,
                       (S)g.ph, (S)g.pw);
}

template <int M, typename I>
static int forward_m(const struct facet_conv_geom &g, float *out, const float *x, const float *w, const float *bias,
                     float *ws, int64_t ws_elems)
{
    const char *fn = "facet_conv2d_forward";
    constexpr int64_t P = (M + 2) * (M + 2);
    const int64_t filters = g.o * g.c, xs = g.c * g.h * g.w, os = g.o * g.p, per = wino_images(g, ws_elems);
    scratch u;
    int rc = scratch_alloc(&u, (size_t)(P * filters) * sizeof(float), fn);
    float *U = (float *)u.p;
    if (!rc) rc = launch_flat(fn, filters, filter_kernel<M>, U, w, filters);
    for (int64_t n0 = 0; n0 < g.n && !rc; n0 += per) {
        const int64_t nb = g.n - n0 < per ? g.n - n0 : per;
        const wino_chunk ch = chunk_of<M>(g, nb, ws_elems);
        const wino_ix<I> ix = wino_ix_of<I>(g, M, ch.tiles, ch.ld);
        float *V = ws, *Mt = ws + P * g.c * ch.ld;
        rc = input_tiles<M, I>(fn, g, ix, V, x + n0 * xs, ch.tiles);
        if (!rc)
            rc = facet_cuda_sgemm(0, 0, g.o, ch.tiles, g.c, 1.0f, U, g.c, filters, V, ch.ld, g.c * ch.ld, 0.0f, Mt,
                                  ch.ld, g.o * ch.ld, P);
        if (!rc) rc = launch_flat(fn, g.o * ch.tiles, output_kernel<M, I>, ix, out + n0 * os, Mt, bias);
    }
    int rc_u = scratch_free(&u, fn);
    return rc ? rc : rc_u;
}

template <int M, typename I>
static int backward_m(const struct facet_conv_geom &g, float *gx, float *gw, const float *gout, const float *x,
                      const float *w, float *ws, int64_t ws_elems)
{
    typedef signed_of<I> S;
    const char *fn = "facet_conv2d_backward";
    constexpr int64_t P = (M + 2) * (M + 2);
    const int64_t filters = g.o * g.c, xs = g.c * g.h * g.w, os = g.o * g.p, per = wino_images(g, ws_elems);
    scratch u, du;
    u.p = du.p = NULL;
    int rc = FACET_STATUS_OK;
    if (gx) rc = scratch_alloc(&u, (size_t)(P * filters) * sizeof(float), fn);
    if (!rc && gw) rc = scratch_alloc(&du, (size_t)(P * filters) * sizeof(float), fn);
    float *U = (float *)u.p, *dU = (float *)du.p;
    if (!rc && gx) rc = launch_flat(fn, filters, filter_kernel<M>, U, w, filters);
    for (int64_t n0 = 0; n0 < g.n && !rc; n0 += per) {
        const int64_t nb = g.n - n0 < per ? g.n - n0 : per;
        const wino_chunk ch = chunk_of<M>(g, nb, ws_elems);
        const wino_ix<I> ix = wino_ix_of<I>(g, M, ch.tiles, ch.ld);
        float *V = ws, *dM = ws + P * g.c * ch.ld;
        rc = launch_flat(fn, g.o * ch.tiles, tiles_in_kernel<M, M, I>, ix, dM, gout + n0 * os, (S)g.o, (S)g.ho, (S)g.wo,
                         (S)0, (S)0);
        if (!rc && gw) {
            /* dU = dM V^T summed over the chunk's tiles (the first chunk writes) */
            rc = input_tiles<M, I>(fn, g, ix, V, x + n0 * xs, ch.tiles);
            if (!rc)
                rc = facet_cuda_sgemm(0, 1, g.o, g.c, ch.tiles, 1.0f, dM, ch.ld, g.o * ch.ld, V, ch.ld, g.c * ch.ld,
                                      n0 ? 1.0f : 0.0f, dU, g.c, filters, P);
        }
        if (!rc && gx) {
            rc = facet_cuda_sgemm(1, 0, g.c, ch.tiles, g.o, 1.0f, U, g.c, filters, dM, ch.ld, g.o * ch.ld, 0.0f, V,
                                  ch.ld, g.c * ch.ld, P);
            if (!rc) rc = launch_flat(fn, g.c * ch.tiles, grad_tile_kernel<M, I>, ix, V);
            if (!rc) rc = launch_flat(fn, nb * xs, gather_kernel<M, I>, ix, gx + n0 * xs, V, nb * xs);
        }
    }
    if (!rc && gw) rc = launch_flat(fn, filters, filter_grad_kernel<M>, gw, dU, filters);
    int rc_u = scratch_free(&u, fn), rc_du = scratch_free(&du, fn);
    return rc ? rc : rc_u ? rc_u : rc_du;
}

int wino_forward(const struct facet_conv_geom &g, float *out, const float *x, const float *w, const float *bias,
                 float *ws, int64_t ws_elems)
{
    int rc = 0;
    const int64_t m = tile_side(g);
    FACET_INDEX_DISPATCH(wino_fits32(g, ws_elems), I,
        rc = m == 4 ? forward_m<4, I>(g, out, x, w, bias, ws, ws_elems) : forward_m<2, I>(g, out, x, w, bias, ws, ws_elems));
    return rc;
}

int wino_backward(const struct facet_conv_geom &g, float *gx, float *gw, const float *gout, const float *x,
                  const float *w, float *ws, int64_t ws_elems)
{
    int rc = 0;
    if (!gx && !gw) return rc;
    const int64_t m = tile_side(g);
    FACET_INDEX_DISPATCH(wino_fits32(g, ws_elems), I,
        rc = m == 4 ? backward_m<4, I>(g, gx, gw, gout, x, w, ws, ws_elems)
                    : backward_m<2, I>(g, gx, gw, gout, x, w, ws, ws_elems));
    return rc;
}
