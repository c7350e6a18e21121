/*
 * conv.cu - 2-D convolution (NCHW) on CUDA, behind the checks of
 * core/src/conv.c; the paths are those of conv_math.h. x, out, grad_out and
 * grad_x are float32, float16 or bfloat16 (one dtype T; the kernels are
 * templated over it); weight, bias, their gradients and the workspace are
 * float32.
 *
 * WINOGRAD: float32 3x3 stride-1 layers that the CPU also runs as Winograd
 * go to conv_winograd.cu when the workspace holds one image's transformed
 * tiles (wino_images); the rest of the im2col path below is for the others.
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
 * Index math: a call whose tensors and workspace hold fewer than 2^31
 * entries (every face-model layer) runs its kernels with 32-bit indices and
 * multiply-shift divisors (conv_ix<uint32_t>), the others with 64-bit ones;
 * cuda_common.cuh, "index math".
 *
 * 16-bit T: the weight is rounded once per call into a T copy (scratch), the
 * columns are T (in the workspace, which holds twice as many of them as
 * floats), and the GEMMs are facet_cuda_gemm_ex (cublasGemmStridedBatchedEx, tensor cores,
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
#include "conv_winograd.cuh"

/* ---- index math --------------------------------------------------------------------
 * The geometry in the kernels' index type I (cuda_common.cuh, "index math"):
 * extents and settings as S = signed_of<I> (a tap's input coordinate falls
 * below 0 in the padding), the divisors of the per-element coordinates as
 * div_by<I>. */
template <typename I>
struct conv_ix {
    typedef signed_of<I> S;
    S n, c, h, w, o, ho, wo, kh, kw, sh, sw, ph, pw, dh, dw, og, p, taps;
    div_by<I> by_p, by_wo, by_w, by_h, by_c, by_o, by_og, by_kw, by_taps, by_rows, by_sh, by_sw;
};

template <typename I>
static conv_ix<I> conv_ix_of(const struct facet_conv_geom &g)
{
    typedef signed_of<I> S;
    typedef div_by<I> D;
    const int64_t taps = g.kh * g.kw;
    const conv_ix<I> x = { (S)g.n, (S)g.c, (S)g.h, (S)g.w, (S)g.o, (S)g.ho, (S)g.wo, (S)g.kh, (S)g.kw, (S)g.sh,
                           (S)g.sw, (S)g.ph, (S)g.pw, (S)g.dh, (S)g.dw, (S)g.og, (S)g.p, (S)taps,
                           D(g.p), D(g.wo), D(g.w), D(g.h), D(g.c), D(g.o), D(g.og), D(g.kw), D(taps), D(g.c * taps),
                           D(g.sh), D(g.sw) };
    return x;
}

/* Whether a call's index math fits 32 bits: x, the output, the weight, the
 * workspace as entries of T, the divisors, and the padded extents that
 * bound every tap coordinate. A workspace of 2^31 entries or more (the
 * default one is 2^26 floats) sends the call to the 64-bit path. */
template <typename T>
static bool conv_fits32(const struct facet_conv_geom &g, int64_t ws_elems)
{
    return fits_int32(g.n * g.c * g.h * g.w, g.n * g.o * g.p, g.o * g.k, ws_elems * (int64_t)(sizeof(float) / sizeof(T)),
                      g.p, g.c * g.kh * g.kw, g.h + 2 * g.ph, g.w + 2 * g.pw, g.ho * g.sh + g.kh * g.dh,
                      g.wo * g.sw + g.kw * g.dw);
}

/* The input row and column that tap (i, j) of output position q samples
 * (outside [0, h) x [0, w) in the padding). */
template <typename I>
static __device__ __forceinline__ void tap_input(const conv_ix<I> &g, I q, signed_of<I> i, signed_of<I> j,
                                                 signed_of<I> *h, signed_of<I> *w)
{
    typedef signed_of<I> S;
    *h = (S)g.by_wo.div(q) * g.sh - g.ph + i * g.dh;
    *w = (S)g.by_wo.mod(q) * g.sw - g.pw + j * g.dw;
}

/* The output coordinate whose tap lands on input coordinate v >= 0 along an
 * axis of `out` outputs: v / stride when the stride divides v and that is an
 * output, else -1. */
template <typename I>
static __device__ __forceinline__ signed_of<I> tap_output(signed_of<I> v, const div_by<I> &stride, signed_of<I> out)
{
    const signed_of<I> q = (signed_of<I>)stride.div((I)v);
    return stride.mod((I)v) == 0 && q < out ? q : -1;
}

/* Calls f(tap, output position) for each tap that samples input (h, w), in
 * tap order: output row ho sees input row h through tap i when
 * h + pad - i dil = ho stride. The gather of col2im and depthwise grad_x. */
template <typename I, typename F>
static __device__ __forceinline__ void for_taps_sampling(const conv_ix<I> &g, signed_of<I> h, signed_of<I> w, F f)
{
    typedef signed_of<I> S;
    for (S i = 0; i < g.kh; i++) {
        const S oh = h + g.ph - i * g.dh;
        if (oh < 0) break;
        const S qh = tap_output<I>(oh, g.by_sh, g.ho);
        if (qh < 0) continue;
        for (S j = 0; j < g.kw; j++) {
            const S ow = w + g.pw - j * g.dw;
            if (ow < 0) break;
            const S qw = tap_output<I>(ow, g.by_sw, g.wo);
            if (qw >= 0) f(i * g.kw + j, qh * g.wo + qw);
        }
    }
}

/* ---- kernels ------------------------------------------------------------------------ */

/* Column entry (image b, row r = c kh kw + tap, position q) into dst[i]:
 * the input value the tap samples, or 0 in the padding. */
template <typename T, typename I>
static __device__ __forceinline__ void im2col_entry(const conv_ix<I> &g, const T *__restrict__ x, T *__restrict__ dst,
                                                    I i, I b, I r, I q)
{
    typedef signed_of<I> S;
    const I c = g.by_taps.div(r), t = g.by_taps.mod(r);
    S h, w;
    tap_input(g, q, (S)g.by_kw.div(t), (S)g.by_kw.mod(t), &h, &w);
    if (h >= 0 && h < g.h && w >= 0 && w < g.w) dst[i] = x[((b * g.c + c) * g.h + h) * g.w + w];
    else st(dst, i, 0.0f);
}

/* col [nb][C kh kw][P] (total entries): one thread per entry, so stores
 * coalesce along P. */
template <typename T, typename I>
static __global__ void im2col_kernel(conv_ix<I> g, const T *__restrict__ x, T *__restrict__ col, int64_t total)
{
    FACET_CUDA_FOR_T(I, e, total) {
        const I bq = g.by_p.div(e);   /* b rows + r */
        im2col_entry(g, x, col, e, g.by_rows.div(bq), g.by_rows.mod(bq), g.by_p.mod(e));
    }
}

/* The weight gradient's layout, col [C kh kw][ld] with row r holding the nb
 * images' P entries back to back (span = nb P; the images run along the
 * GEMM's reduction); the ld - span padding is never read. */
template <typename T, typename I>
static __global__ void im2col_rows_kernel(conv_ix<I> g, const T *__restrict__ x, T *__restrict__ col, int64_t total,
                                          div_by<I> by_span, I ld)
{
    FACET_CUDA_FOR_T(I, e, total) {
        const I r = by_span.div(e), bq = by_span.mod(e);
        im2col_entry(g, x, col, r * ld + bq, g.by_p.div(bq), r, g.by_p.mod(bq));
    }
}

/* dst [rows][ld] from src [nb][rows][P] (image stride src_stride, span = nb
 * P): the same layout for grad_out (and for x on the pointwise path). */
template <typename T, typename I>
static __global__ void rows_outer_kernel(T *__restrict__ dst, const T *__restrict__ src, int64_t total,
                                         div_by<I> by_span, div_by<I> by_p, I src_stride, I ld)
{
    FACET_CUDA_FOR_T(I, e, total) {
        const I r = by_span.div(e), bq = by_span.mod(e);
        dst[r * ld + bq] = src[by_p.div(bq) * src_stride + r * by_p.d + by_p.mod(bq)];
    }
}

/* x [nb][C][H][W] = the sum of the column entries that sampled each
 * element. Overwrites x. */
template <typename T, typename I>
static __global__ void col2im_kernel(conv_ix<I> g, const float *__restrict__ col, T *__restrict__ x, int64_t total)
{
    typedef signed_of<I> S;
    FACET_CUDA_FOR_T(I, e, total) {
        const plane_pos<I> at = plane_pos_of(e, g.by_h, g.by_w);   /* plane b C + c */
        const float *rows = col + at.plane * g.taps * g.p;
        float s = 0.0f;
        for_taps_sampling(g, (S)at.row, (S)at.col, [&](S t, S q) { s += rows[t * g.p + q]; });
        st(x, e, s);
    }
}

/* dst = src rounded once to T (the weight's 16-bit copy) */
template <typename T>
static __global__ void narrow_kernel(T *__restrict__ dst, const float *__restrict__ src, int64_t n)
{
    FACET_CUDA_FOR(e, n) st(dst, e, src[e]);
}

/* The output channel of element e of out [n][o][P]. */
template <typename I>
static __device__ __forceinline__ I out_channel(const conv_ix<I> &g, I e)
{
    return g.by_o.mod(g.by_p.div(e));
}

/* out = (acc + bias[o]) rounded once to T: the forward epilogue of a 16-bit
 * GEMM with a bias */
template <typename T, typename I>
static __global__ void bias_round_kernel(conv_ix<I> g, T *__restrict__ out, const float *__restrict__ acc,
                                         const float *__restrict__ bias, int64_t total)
{
    FACET_CUDA_FOR_T(I, e, total) st(out, e, acc[e] + bias[out_channel(g, e)]);
}

/* out[n][o][:] = bias[o], so the GEMMs can add onto it (beta 1) */
template <typename I>
static __global__ void bias_fill_kernel(conv_ix<I> g, float *__restrict__ out, const float *__restrict__ bias,
                                        int64_t total)
{
    FACET_CUDA_FOR_T(I, e, total) out[e] = bias[out_channel(g, e)];
}

/* grad_bias[o] += sum over images and positions of grad_out[n][o]: one block per channel */
template <typename T, typename I>
static __global__ void bias_grad_kernel(conv_ix<I> g, float *__restrict__ gb, const T *__restrict__ gout)
{
    for (I ch = blockIdx.x; ch < (I)g.o; ch += gridDim.x) {
        float s = 0.0f;
        for (I e = threadIdx.x; e < (I)(g.n * g.p); e += blockDim.x)
            s += ld(gout[(g.by_p.div(e) * g.o + ch) * g.p + g.by_p.mod(e)]);
        s = block_sum(s);
        if (threadIdx.x == 0) gb[ch] += s;
    }
}

/* Depthwise forward: one thread per output; channel o reads input o / og. */
template <typename T, typename I>
static __global__ void direct_forward_kernel(conv_ix<I> g, T *__restrict__ out, const T *__restrict__ x,
                                             const float *__restrict__ w, const float *__restrict__ bias)
{
    typedef signed_of<I> S;
    FACET_CUDA_FOR_T(I, e, g.n * g.o * g.p) {
        const I q = g.by_p.mod(e), no = g.by_p.div(e), o = g.by_o.mod(no), n = g.by_o.div(no);
        const T *xp = x + (n * g.c + g.by_og.div(o)) * g.h * g.w;
        const float *wp = w + o * g.taps;
        S h0, w0;
        tap_input(g, q, 0, 0, &h0, &w0);
        float s = bias ? bias[o] : 0.0f;
        for (S i = 0; i < g.kh; i++) {
            const S h = h0 + i * g.dh;
            if (h < 0 || h >= g.h) continue;
            for (S j = 0; j < g.kw; j++) {
                const S ww = w0 + j * g.dw;
                if (ww >= 0 && ww < g.w) s += wp[i * g.kw + j] * ld(xp[h * g.w + ww]);
            }
        }
        st(out, e, s);
    }
}

/* Depthwise grad_x: one thread per input element, gathering from the og
 * output channels of its channel as col2im does. Overwrites. */
template <typename T, typename I>
static __global__ void direct_grad_x_kernel(conv_ix<I> g, T *__restrict__ gx, const T *__restrict__ gout,
                                            const float *__restrict__ w)
{
    typedef signed_of<I> S;
    FACET_CUDA_FOR_T(I, e, g.n * g.c * g.h * g.w) {
        const plane_pos<I> at = plane_pos_of(e, g.by_h, g.by_w);   /* plane n C + c */
        const I c = g.by_c.mod(at.plane), n = g.by_c.div(at.plane);
        float s = 0.0f;
        for (S m = 0; m < g.og; m++) {
            const S o = (S)c * g.og + m;
            const T *gp = gout + (n * g.o + o) * g.p;
            const float *wp = w + o * g.taps;
            for_taps_sampling(g, (S)at.row, (S)at.col, [&](S t, S q) { s += wp[t] * ld(gp[q]); });
        }
        st(gx, e, s);
    }
}

/* Depthwise grad_weight: one block per (channel, tap) reduces grad_out
 * times the tap-shifted input over images and positions, then adds once. */
template <typename T, typename I>
static __global__ void direct_grad_w_kernel(conv_ix<I> g, float *__restrict__ gw, const T *__restrict__ gout,
                                            const T *__restrict__ x)
{
    typedef signed_of<I> S;
    for (I item = blockIdx.x; item < (I)(g.o * g.taps); item += gridDim.x) {
        const I o = g.by_taps.div(item), t = g.by_taps.mod(item), c = g.by_og.div(o);
        const S i = (S)g.by_kw.div(t), j = (S)g.by_kw.mod(t);
        float s = 0.0f;
        for (I e = threadIdx.x; e < (I)(g.n * g.p); e += blockDim.x) {
            const I n = g.by_p.div(e), q = g.by_p.mod(e);
            S h, ww;
            tap_input(g, q, i, j, &h, &ww);
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

template <typename T, typename I>
static int conv_forward(const struct facet_conv_geom &g, T *out, const T *x, const float *w, const float *bias,
                        float *ws, int64_t ws_elems)
{
    const char *fn = "facet_conv2d_forward";
    constexpr bool half = dtype_of<T>::v != FACET_DTYPE_FLOAT32;
    const int64_t total = g.n * g.o * g.p, xs = g.c * g.h * g.w, os = g.o * g.p;
    const conv_ix<I> ix = conv_ix_of<I>(g);
    int path = facet_conv_path(&g);
    if (path == FACET_CONV_DIRECT)
        return launch_flat(fn, total, direct_forward_kernel<T, I>, ix, out, x, w, bias);
    if constexpr (!half)
        if (path == FACET_CONV_IM2COL && wino_images(g, ws_elems) > 0)
            return wino_forward(g, out, x, w, bias, ws, ws_elems);
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
        rc = launch_flat(fn, total, bias_fill_kernel<I>, ix, (float *)out, bias, total);
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
            rc = launch_flat(fn, nb * cs, im2col_kernel<T, I>, ix, x + n0 * xs, col, nb * cs);
            for (int64_t gi = 0; gi < g.groups && !rc; gi++)
                rc = gemm<T>(0, 0, g.og, g.p, g.k, wt + gi * g.og * g.k, g.k, 0, col + gi * g.k * g.p, g.p, cs, beta,
                             dst != out, d + (n0 * os + gi * g.og * g.p) * dst_el, g.p, os, nb);
        }
    }
    if (!rc && acc.p) rc = launch_flat(fn, total, bias_round_kernel<T, I>, ix, out, (const float *)acc.p, bias, total);
    int rc_acc = scratch_free(&acc, fn), rc_w = scratch_free(&wbuf, fn);
    return rc ? rc : rc_acc ? rc_acc : rc_w;
}

extern "C" int facet_cuda_conv2d_forward(int dtype, const struct facet_conv_geom *g, void *out, const void *x,
                                         const float *w, const float *bias, float *ws, int64_t ws_elems)
{
    int rc = 0;
    FACET_ACT_DISPATCH(dtype, T, FACET_INDEX_DISPATCH(conv_fits32<T>(*g, ws_elems), I,
        rc = conv_forward<T, I>(*g, (T *)out, (const T *)x, w, bias, ws, ws_elems)));
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
template <typename T, typename I>
static int weight_grad(const struct facet_conv_geom &g, const conv_ix<I> &ix, float *gw, const T *gout, const T *x,
                       float *ws, int64_t ws_elems)
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
            const div_by<I> by_span(nb * g.p);
            T *cols = (T *)ws, *gouts = cols + xrows * ld;
            if (pointwise)
                rc = launch_flat(fn, xrows * nb * g.p, rows_outer_kernel<T, I>, cols, x + n0 * xs, xrows * nb * g.p,
                                 by_span, ix.by_p, xs, ld);
            else
                rc = launch_flat(fn, xrows * nb * g.p, im2col_rows_kernel<T, I>, ix, x + n0 * xs, cols,
                                 xrows * nb * g.p, by_span, ld);
            if (!rc)
                rc = launch_flat(fn, g.o * nb * g.p, rows_outer_kernel<T, I>, gouts, gout + n0 * os, g.o * nb * g.p,
                                 by_span, ix.by_p, os, ld);
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
        rc = launch_flat(fn, nb * cs, im2col_kernel<T, I>, ix, x + n0 * xs, col, nb * cs);
        for (int64_t s = 0; s < nb && !rc; s++)
            rc = gemm<T>(0, 1, g.og, g.k, g.p, gout + (n0 + s) * os, g.p, g.og * g.p, col + s * cs, g.p, g.k * g.p,
                         1.0f, true, gw, g.k, g.og * g.k, g.groups);
    }
    return rc;
}

template <typename T, typename I>
static int conv_backward(const struct facet_conv_geom &g, T *gx, float *gw, float *gb, const T *gout, const T *x,
                         const float *w, float *ws, int64_t ws_elems)
{
    const char *fn = "facet_conv2d_backward";
    const int64_t xs = g.c * g.h * g.w, os = g.o * g.p, taps = g.kh * g.kw;
    const conv_ix<I> ix = conv_ix_of<I>(g);
    int rc = FACET_STATUS_OK;
    if (gb) FACET_CUDA_TRY(launch_items(fn, g.o, FACET_CUDA_THREADS, bias_grad_kernel<T, I>, ix, gb, gout));
    int path = facet_conv_path(&g);
    if (path == FACET_CONV_DIRECT) {
        if (gx) rc = launch_flat(fn, g.n * xs, direct_grad_x_kernel<T, I>, ix, gx, gout, w);
        if (gw && !rc) rc = launch_items(fn, g.o * taps, FACET_CUDA_THREADS, direct_grad_w_kernel<T, I>, ix, gw, gout, x);
        return rc;
    }
    if constexpr (dtype_of<T>::v == FACET_DTYPE_FLOAT32)
        if (path == FACET_CONV_IM2COL && wino_images(g, ws_elems) > 0)
            return wino_backward(g, gx, gw, gout, x, w, ws, ws_elems);
    const T *wt = NULL;
    scratch wbuf;
    wbuf.p = NULL;
    if (gx) rc = weight_as<T>(&wt, &wbuf, w, g.o * g.k, fn);
    if (gw && !rc) rc = weight_grad<T, I>(g, ix, gw, gout, x, ws, ws_elems);
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
            if (!rc) rc = launch_flat(fn, nb * xs, col2im_kernel<T, I>, ix, (const float *)ws, gx + n0 * xs, nb * xs);
        }
    }
    int rc_w = scratch_free(&wbuf, fn);
    return rc ? rc : rc_w;
}

extern "C" int facet_cuda_conv2d_backward(int dtype, const struct facet_conv_geom *g, void *gx, float *gw, float *gb,
                                          const void *gout, const void *x, const float *w, float *ws, int64_t ws_elems)
{
    int rc = 0;
    FACET_ACT_DISPATCH(dtype, T, FACET_INDEX_DISPATCH(conv_fits32<T>(*g, ws_elems), I,
        rc = conv_backward<T, I>(*g, (T *)gx, gw, gb, (const T *)gout, (const T *)x, w, ws, ws_elems)));
    return rc;
}
