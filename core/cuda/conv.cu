/*
 * conv.cu - 2-D convolution (NCHW) on CUDA, behind the checks of
 * core/src/conv.c; the paths are those of conv_math.h. x, out, grad_out and
 * grad_x are float32, float16 or bfloat16 (one dtype T; the kernels are
 * templated over it); weight, bias, their gradients and the workspace are
 * float32.
 *
 * IM2COL: the columns of a chunk of images go to the workspace as
 * [image][C kh kw][Ho Wo] (group g's K rows are rows g K .. g K + K - 1 of
 * an image), and one strided-batched GEMM per group covers the chunk: the
 * weight has batch stride 0. Backward: grad_weight lays a chunk of images'
 * columns and grad_out out as [rows][images x Ho Wo] and adds one GEMM per
 * group that reduces over images and positions together (image by image only
 * when the workspace is too small for two images of that layout), and grad_x
 * is weight_g^T grad_out_g into the workspace, then col2im, which gathers
 * (one thread per input element) instead of scattering, so it overwrites
 * grad_x without atomics or a zeroing pass. POINTWISE: the same GEMMs on x
 * itself (x's planes take the columns' place in the weight gradient's layout). DIRECT (depthwise): one thread per
 * output or input element; grad_weight and grad_bias are block reductions
 * (block_sum, a fixed order), one block per weight tap or channel, adding
 * into the gradient once: no atomics anywhere, so the result is the same on
 * every run (cuBLAS's GEMMs are deterministic on one GPU and stream for a
 * fixed problem; the sums run in another order than on the CPU).
 *
 * GEMMs go through facet_cuda_sgemm (blas.cu), which owns the cuBLAS handle
 * and turns row-major calls into cuBLAS's column-major ones.
 *
 * 16-bit T: the weight is rounded once per call into a T copy (scratch), the
 * columns are T (in the workspace, which holds twice as many of them as
 * floats), and the GEMMs are facet_cuda_gemm_ex (cublasGemmEx, tensor cores,
 * float32 accumulation): forward writes out as T (rounded once from the
 * float32 sums by cuBLAS's epilogue, to nearest even as half_math.h; no
 * float32 copy of the output) or, with a bias, float32 scratch that one kernel adds the
 * bias to and rounds; grad_weight is C = float32 (beta 1: the weight
 * gradient accumulates in float32); grad_x's columns are float32 in the
 * workspace as for float32, and col2im rounds each sum once. The depthwise
 * kernels and the bias gradient load T and sum in float32.
 */
#include "cuda_common.cuh"
#include "conv_math.h"

/* ---- kernels ------------------------------------------------------------------------ */

/* Column entry (image b, row r = c kh kw + tap, position q) into dst[i]:
 * the input value the tap samples, or 0 in the padding. */
template <typename T>
static __device__ __forceinline__ void im2col_entry(const struct facet_conv_geom &g, const T *__restrict__ x,
                                                    T *__restrict__ dst, int64_t i, int64_t b, int64_t r, int64_t q)
{
    const int64_t taps = g.kh * g.kw, c = r / taps, t = r % taps, ki = t / g.kw, kj = t % g.kw;
    const int64_t h = (q / g.wo) * g.sh - g.ph + ki * g.dh, w = (q % g.wo) * g.sw - g.pw + kj * g.dw;
    if (h >= 0 && h < g.h && w >= 0 && w < g.w) dst[i] = x[((b * g.c + c) * g.h + h) * g.w + w];
    else st(dst, i, 0.0f);
}

/* col [nb][C kh kw][P]: one thread per entry, so stores coalesce along P. */
template <typename T>
static __global__ void im2col_kernel(struct facet_conv_geom g, const T *__restrict__ x, T *__restrict__ col, int64_t nb)
{
    const int64_t rows = g.c * g.kh * g.kw;
    FACET_CUDA_FOR(e, nb * rows * g.p) im2col_entry(g, x, col, e, e / (g.p * rows), (e / g.p) % rows, e % g.p);
}

/* The weight gradient's layout, col [C kh kw][ld] with row r holding the nb
 * images' P entries back to back (the images run along the GEMM's
 * reduction); the ld - nb P padding is never read. */
template <typename T>
static __global__ void im2col_rows_kernel(struct facet_conv_geom g, const T *__restrict__ x, T *__restrict__ col,
                                          int64_t nb, int64_t ld)
{
    const int64_t rows = g.c * g.kh * g.kw, span = nb * g.p;
    FACET_CUDA_FOR(e, rows * span) {
        const int64_t r = e / span, bq = e % span;
        im2col_entry(g, x, col, r * ld + bq, bq / g.p, r, bq % g.p);
    }
}

/* dst [rows][ld] from src [nb][rows][P] (image stride src_stride): the same
 * layout for grad_out (and for x on the pointwise path). */
template <typename T>
static __global__ void rows_outer_kernel(T *__restrict__ dst, const T *__restrict__ src, int64_t nb, int64_t rows,
                                         int64_t p, int64_t src_stride, int64_t ld)
{
    const int64_t span = nb * p;
    FACET_CUDA_FOR(e, rows * span) {
        const int64_t r = e / span, bq = e % span, b = bq / p, q = bq % p;
        dst[r * ld + bq] = src[b * src_stride + r * p + q];
    }
}

/* x [nb][C][H][W] = the sum of the column entries that sampled each
 * element: output row ho sees input row h through tap i when
 * h + pad - i dil = ho stride. Overwrites x. */
template <typename T>
static __global__ void col2im_kernel(struct facet_conv_geom g, const float *__restrict__ col, T *__restrict__ x,
                                     int64_t nb)
{
    const int64_t taps = g.kh * g.kw;
    FACET_CUDA_FOR(e, nb * g.c * g.h * g.w) {
        int64_t w = e % g.w, h = (e / g.w) % g.h, bc = e / (g.w * g.h);   /* bc = b C + c */
        const float *rows = col + bc * taps * g.p;
        float s = 0.0f;
        for (int64_t i = 0; i < g.kh; i++) {
            int64_t hh = h + g.ph - i * g.dh;
            if (hh < 0) break;
            if (hh % g.sh || hh / g.sh >= g.ho) continue;
            for (int64_t j = 0; j < g.kw; j++) {
                int64_t ww = w + g.pw - j * g.dw;
                if (ww < 0) break;
                if (ww % g.sw || ww / g.sw >= g.wo) continue;
                s += rows[(i * g.kw + j) * g.p + (hh / g.sh) * g.wo + ww / g.sw];
            }
        }
        st(x, e, s);
    }
}

/* dst = src rounded once to T (the weight's 16-bit copy) */
template <typename T>
static __global__ void narrow_kernel(T *__restrict__ dst, const float *__restrict__ src, int64_t n)
{
    FACET_CUDA_FOR(e, n) st(dst, e, src[e]);
}

/* out = (acc + bias[o]) rounded once to T: the forward epilogue of a 16-bit
 * GEMM with a bias */
template <typename T>
static __global__ void bias_round_kernel(T *__restrict__ out, const float *__restrict__ acc,
                                         const float *__restrict__ bias, int64_t total, int64_t o, int64_t p)
{
    FACET_CUDA_FOR(e, total) st(out, e, acc[e] + bias[(e / p) % o]);
}

/* out[n][o][:] = bias[o], so the GEMMs can add onto it (beta 1) */
static __global__ void bias_fill_kernel(float *__restrict__ out, const float *__restrict__ bias, int64_t total,
                                        int64_t o, int64_t p)
{
    FACET_CUDA_FOR(e, total) out[e] = bias[(e / p) % o];
}

/* grad_bias[o] += sum over images and positions of grad_out[n][o]: one block per channel */
template <typename T>
static __global__ void bias_grad_kernel(float *__restrict__ gb, const T *__restrict__ gout, int64_t n, int64_t o,
                                        int64_t p)
{
    for (int64_t ch = blockIdx.x; ch < o; ch += gridDim.x) {
        float s = 0.0f;
        for (int64_t e = threadIdx.x; e < n * p; e += blockDim.x) s += ld(gout[((e / p) * o + ch) * p + e % p]);
        s = block_sum(s);
        if (threadIdx.x == 0) gb[ch] += s;
    }
}

/* Depthwise forward: one thread per output; channel o reads input o / og. */
template <typename T>
static __global__ void direct_forward_kernel(struct facet_conv_geom g, T *__restrict__ out, const T *__restrict__ x,
                                             const float *__restrict__ w, const float *__restrict__ bias)
{
    const int64_t taps = g.kh * g.kw;
    FACET_CUDA_FOR(e, g.n * g.o * g.p) {
        int64_t q = e % g.p, no = e / g.p, o = no % g.o, n = no / g.o;
        const T *xp = x + (n * g.c + o / g.og) * g.h * g.w;
        const float *wp = w + o * taps;
        int64_t h0 = (q / g.wo) * g.sh - g.ph, w0 = (q % g.wo) * g.sw - g.pw;
        float s = bias ? bias[o] : 0.0f;
        for (int64_t i = 0; i < g.kh; i++) {
            int64_t h = h0 + i * g.dh;
            if (h < 0 || h >= g.h) continue;
            for (int64_t j = 0; j < g.kw; j++) {
                int64_t ww = w0 + j * g.dw;
                if (ww >= 0 && ww < g.w) s += wp[i * g.kw + j] * ld(xp[h * g.w + ww]);
            }
        }
        st(out, e, s);
    }
}

/* Depthwise grad_x: one thread per input element, gathering from the og
 * output channels of its channel as col2im does. Overwrites. */
template <typename T>
static __global__ void direct_grad_x_kernel(struct facet_conv_geom g, T *__restrict__ gx, const T *__restrict__ gout,
                                            const float *__restrict__ w)
{
    const int64_t taps = g.kh * g.kw;
    FACET_CUDA_FOR(e, g.n * g.c * g.h * g.w) {
        int64_t ww0 = e % g.w, h = (e / g.w) % g.h, c = (e / (g.w * g.h)) % g.c, n = e / (g.w * g.h * g.c);
        float s = 0.0f;
        for (int64_t m = 0; m < g.og; m++) {
            int64_t o = c * g.og + m;
            const T *gp = gout + (n * g.o + o) * g.p;
            const float *wp = w + o * taps;
            for (int64_t i = 0; i < g.kh; i++) {
                int64_t hh = h + g.ph - i * g.dh;
                if (hh < 0) break;
                if (hh % g.sh || hh / g.sh >= g.ho) continue;
                for (int64_t j = 0; j < g.kw; j++) {
                    int64_t ww = ww0 + g.pw - j * g.dw;
                    if (ww < 0) break;
                    if (ww % g.sw || ww / g.sw >= g.wo) continue;
                    s += wp[i * g.kw + j] * ld(gp[(hh / g.sh) * g.wo + ww / g.sw]);
                }
            }
        }
        st(gx, e, s);
    }
}

/* Depthwise grad_weight: one block per (channel, tap) reduces grad_out
 * times the tap-shifted input over images and positions, then adds once. */
template <typename T>
static __global__ void direct_grad_w_kernel(struct facet_conv_geom g, float *__restrict__ gw,
                                            const T *__restrict__ gout, const T *__restrict__ x)
{
    const int64_t taps = g.kh * g.kw;
    for (int64_t item = blockIdx.x; item < g.o * taps; item += gridDim.x) {
        int64_t o = item / taps, t = item % taps, i = t / g.kw, j = t % g.kw, c = o / g.og;
        float s = 0.0f;
        for (int64_t e = threadIdx.x; e < g.n * g.p; e += blockDim.x) {
            int64_t n = e / g.p, q = e % g.p;
            int64_t h = (q / g.wo) * g.sh - g.ph + i * g.dh, ww = (q % g.wo) * g.sw - g.pw + j * g.dw;
            if (h >= 0 && h < g.h && ww >= 0 && ww < g.w)
                s += ld(gout[(n * g.o + o) * g.p + q]) * ld(x[((n * g.c + c) * g.h + h) * g.w + ww]);
        }
        s = block_sum(s);
        if (threadIdx.x == 0) gw[item] += s;
    }
}

/* ---- entry points -------------------------------------------------------------------- */

/* Images whose columns fit in the workspace at once (conv.c checked >= 1). */
static int64_t chunk_images(const struct facet_conv_geom *g, int64_t ws_elems)
{
    int64_t unit = facet_conv_cuda_min_workspace(g), nb = ws_elems / unit;
    if (nb > g->n) nb = g->n;
    return nb < 1 ? 1 : nb;
}

/* The storage type's dtype. */
template <typename T> struct dtype_of { static constexpr int v = FACET_DTYPE_FLOAT32; };
template <> struct dtype_of<act_f16> { static constexpr int v = FACET_DTYPE_FLOAT16; };
template <> struct dtype_of<act_bf16> { static constexpr int v = FACET_DTYPE_BFLOAT16; };

/* Row-major C = alpha op(A) op(B) + beta C, batched: SGEMM for float32 T,
 * else cublasGemmEx with A and B of T, C of T or float32 (c32). */
template <typename T>
static int gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, const T *a, int64_t lda, int64_t sa, const T *b,
                int64_t ldb, int64_t sb, float beta, bool c32, void *c, int64_t ldc, int64_t sc, int64_t batch)
{
    constexpr int dt = dtype_of<T>::v;
    if constexpr (dt == FACET_DTYPE_FLOAT32)
        return facet_cuda_sgemm(ta, tb, m, n, k, 1.0f, (const float *)a, lda, sa, (const float *)b, ldb, sb, beta,
                                (float *)c, ldc, sc, batch);
    else
        return facet_cuda_gemm_ex(ta, tb, m, n, k, 1.0f, dt, a, lda, sa, b, ldb, sb, beta,
                                  c32 ? FACET_DTYPE_FLOAT32 : dt, c, ldc, sc, batch);
}

/* The weight as T: w itself for float32, else a copy rounded once into
 * scratch (freed by the caller). */
template <typename T>
static int weight_as(const T **wt, scratch *buf, const float *w, int64_t n, const char *fn)
{
    buf->p = NULL;
    if constexpr (dtype_of<T>::v == FACET_DTYPE_FLOAT32) {
        *wt = (const T *)w;
        return FACET_STATUS_OK;
    } else {
        int rc = scratch_alloc(buf, (size_t)n * sizeof(T), fn);
        if (!rc) rc = launch_flat(fn, n, narrow_kernel<T>, (T *)buf->p, w, n);
        *wt = (const T *)buf->p;
        return rc;
    }
}

template <typename T>
static int conv_forward(const struct facet_conv_geom &g, T *out, const T *x, const float *w, const float *bias,
                        float *ws, int64_t ws_elems)
{
    const char *fn = "facet_conv2d_forward";
    constexpr bool half = dtype_of<T>::v != FACET_DTYPE_FLOAT32;
    const int64_t total = g.n * g.o * g.p, xs = g.c * g.h * g.w, os = g.o * g.p;
    int path = facet_conv_path(&g);
    if (path == FACET_CONV_DIRECT)
        return launch_flat(fn, total, direct_forward_kernel<T>, g, out, x, w, bias);
    const T *wt;
    scratch wbuf, acc;
    acc.p = NULL;
    int rc = weight_as<T>(&wt, &wbuf, w, g.o * g.k, fn);
    /* where the GEMMs write: out, or (16-bit with a bias) float32 sums that
     * bias_round_kernel finishes */
    void *dst = out;
    size_t dst_el = sizeof(T);
    float beta = 0.0f;
    if (!rc && bias && half) {
        rc = scratch_alloc(&acc, (size_t)total * sizeof(float), fn);
        dst = acc.p;
        dst_el = sizeof(float);
    } else if (!rc && bias) {
        rc = launch_flat(fn, total, bias_fill_kernel, (float *)out, bias, total, g.o, g.p);
        beta = 1.0f;
    }
    char *d = (char *)dst;
    if (!rc && path == FACET_CONV_POINTWISE) {
        for (int64_t gi = 0; gi < g.groups && !rc; gi++)
            rc = gemm<T>(0, 0, g.og, g.p, g.cg, wt + gi * g.og * g.cg, g.cg, 0, x + gi * g.cg * g.p, g.p, xs, beta,
                         dst != out, d + gi * g.og * g.p * dst_el, g.p, os, g.n);
    } else if (!rc) {
        const int64_t cs = facet_conv_cuda_min_workspace(&g), chunk = chunk_images(&g, ws_elems);
        T *col = (T *)ws;
        for (int64_t n0 = 0; n0 < g.n && !rc; n0 += chunk) {
            int64_t nb = g.n - n0 < chunk ? g.n - n0 : chunk;
            rc = launch_flat(fn, nb * cs, im2col_kernel<T>, g, x + n0 * xs, col, nb);
            for (int64_t gi = 0; gi < g.groups && !rc; gi++)
                rc = gemm<T>(0, 0, g.og, g.p, g.k, wt + gi * g.og * g.k, g.k, 0, col + gi * g.k * g.p, g.p, cs, beta,
                             dst != out, d + (n0 * os + gi * g.og * g.p) * dst_el, g.p, os, nb);
        }
    }
    if (!rc && acc.p) rc = launch_flat(fn, total, bias_round_kernel<T>, out, (const float *)acc.p, bias, total, g.o, g.p);
    int rc_acc = scratch_free(&acc, fn), rc_w = scratch_free(&wbuf, fn);
    return rc ? rc : rc_acc ? rc_acc : rc_w;
}

extern "C" int facet_cuda_conv2d_forward(int dtype, const struct facet_conv_geom *g, void *out, const void *x,
                                         const float *w, const float *bias, float *ws, int64_t ws_elems)
{
    int rc = 0;
    FACET_ACT_DISPATCH(dtype, T, rc = conv_forward<T>(*g, (T *)out, (const T *)x, w, bias, ws, ws_elems));
    return rc;
}

/* grad_weight += sum over images of grad_out_n cols_n^T (C float32: the
 * weight gradient accumulates in float32). Batched: a chunk of images laid
 * out [rows][images x P] (im2col_rows_kernel, rows_outer_kernel), so one GEMM
 * per group reduces over images and positions at once, K = nb P; that keeps
 * late layers (P = 49) from running one GEMM with K = 49 and a full weight
 * read-modify-write per image. Image by image when the workspace holds less
 * than two images of that layout (the pointwise path without a workspace, or
 * the minimum workspace of the im2col path). */
template <typename T>
static int weight_grad(const struct facet_conv_geom &g, float *gw, const T *gout, const T *x, float *ws,
                       int64_t ws_elems)
{
    const char *fn = "facet_conv2d_backward";
    const bool pointwise = facet_conv_path(&g) == FACET_CONV_POINTWISE;
    const int64_t xs = g.c * g.h * g.w, os = g.o * g.p, xrows = g.c * g.kh * g.kw;
    const int64_t kg = pointwise ? g.cg : g.k;   /* a group's column rows */
    int64_t chunk = ws ? facet_conv_cuda_gw_images(&g, ws_elems * (int64_t)sizeof(float), (int64_t)sizeof(T)) : 0;
    int rc = FACET_STATUS_OK;
    if (chunk >= 2) {
        for (int64_t n0 = 0; n0 < g.n && !rc; n0 += chunk) {
            const int64_t nb = g.n - n0 < chunk ? g.n - n0 : chunk, ld = facet_conv_cuda_gw_ld(&g, nb);
            T *cols = (T *)ws, *gouts = cols + xrows * ld;
            if (pointwise) rc = launch_flat(fn, xrows * nb * g.p, rows_outer_kernel<T>, cols, x + n0 * xs, nb, xrows, g.p, xs, ld);
            else rc = launch_flat(fn, xrows * nb * g.p, im2col_rows_kernel<T>, g, x + n0 * xs, cols, nb, ld);
            if (!rc) rc = launch_flat(fn, g.o * nb * g.p, rows_outer_kernel<T>, gouts, gout + n0 * os, nb, g.o, g.p, os, ld);
            if (!rc) rc = gemm<T>(0, 1, g.og, kg, nb * g.p, gouts, ld, g.og * ld, cols, ld, kg * ld, 1.0f, true, gw, kg,
                                  g.og * kg, g.groups);
        }
        return rc;
    }
    if (pointwise) {
        for (int64_t n = 0; n < g.n && !rc; n++)
            rc = gemm<T>(0, 1, g.og, g.cg, g.p, gout + n * os, g.p, g.og * g.p, x + n * xs, g.p, g.cg * g.p, 1.0f,
                         true, gw, g.cg, g.og * g.cg, g.groups);
        return rc;
    }
    const int64_t cs = facet_conv_cuda_min_workspace(&g), per = chunk_images(&g, ws_elems);
    T *col = (T *)ws;
    for (int64_t n0 = 0; n0 < g.n && !rc; n0 += per) {
        int64_t nb = g.n - n0 < per ? g.n - n0 : per;
        rc = launch_flat(fn, nb * cs, im2col_kernel<T>, g, x + n0 * xs, col, nb);
        for (int64_t s = 0; s < nb && !rc; s++)
            rc = gemm<T>(0, 1, g.og, g.k, g.p, gout + (n0 + s) * os, g.p, g.og * g.p, col + s * cs, g.p, g.k * g.p,
                         1.0f, true, gw, g.k, g.og * g.k, g.groups);
    }
    return rc;
}

template <typename T>
static int conv_backward(const struct facet_conv_geom &g, T *gx, float *gw, float *gb, const T *gout, const T *x,
                         const float *w, float *ws, int64_t ws_elems)
{
    const char *fn = "facet_conv2d_backward";
    const int64_t xs = g.c * g.h * g.w, os = g.o * g.p, taps = g.kh * g.kw;
    int rc = FACET_STATUS_OK;
    if (gb) FACET_CUDA_TRY(launch_items(fn, g.o, FACET_CUDA_THREADS, bias_grad_kernel<T>, gb, gout, g.n, g.o, g.p));
    int path = facet_conv_path(&g);
    if (path == FACET_CONV_DIRECT) {
        if (gx) rc = launch_flat(fn, g.n * xs, direct_grad_x_kernel<T>, g, gx, gout, w);
        if (gw && !rc) rc = launch_items(fn, g.o * taps, FACET_CUDA_THREADS, direct_grad_w_kernel<T>, g, gw, gout, x);
        return rc;
    }
    const T *wt = NULL;
    scratch wbuf;
    wbuf.p = NULL;
    if (gx) rc = weight_as<T>(&wt, &wbuf, w, g.o * g.k, fn);
    if (gw && !rc) rc = weight_grad<T>(g, gw, gout, x, ws, ws_elems);
    if (!rc && path == FACET_CONV_POINTWISE) {
        /* grad_x_g = weight_g^T grad_out_g, batched over images */
        for (int64_t gi = 0; gx && gi < g.groups && !rc; gi++)
            rc = gemm<T>(1, 0, g.cg, g.p, g.og, wt + gi * g.og * g.cg, g.cg, 0, gout + gi * g.og * g.p, g.p, os, 0.0f,
                         false, gx + gi * g.cg * g.p, g.p, xs, g.n);
    } else if (!rc && gx) {
        const int64_t cs = facet_conv_cuda_min_workspace(&g), chunk = chunk_images(&g, ws_elems);
        for (int64_t n0 = 0; n0 < g.n && !rc; n0 += chunk) {
            int64_t nb = g.n - n0 < chunk ? g.n - n0 : chunk;
            /* float32 columns (C float32 for 16-bit T), summed and rounded once by col2im */
            for (int64_t gi = 0; gi < g.groups && !rc; gi++)
                rc = gemm<T>(1, 0, g.k, g.p, g.og, wt + gi * g.og * g.k, g.k, 0, gout + n0 * os + gi * g.og * g.p,
                             g.p, os, 0.0f, true, ws + gi * g.k * g.p, g.p, cs, nb);
            if (!rc) rc = launch_flat(fn, nb * xs, col2im_kernel<T>, g, (const float *)ws, gx + n0 * xs, nb);
        }
    }
    int rc_w = scratch_free(&wbuf, fn);
    return rc ? rc : rc_w;
}

extern "C" int facet_cuda_conv2d_backward(int dtype, const struct facet_conv_geom *g, void *gx, float *gw, float *gb,
                                          const void *gout, const void *x, const float *w, float *ws, int64_t ws_elems)
{
    int rc = 0;
    FACET_ACT_DISPATCH(dtype, T,
        rc = conv_backward<T>(*g, (T *)gx, gw, gb, (const T *)gout, (const T *)x, w, ws, ws_elems));
    return rc;
}
