/*
 * conv.cu - 2-D convolution (NCHW float32) on CUDA, behind the checks of
 * core/src/conv.c; the paths are those of conv_math.h.
 *
 * IM2COL: the columns of a chunk of images go to the workspace as
 * [image][C kh kw][Ho Wo] (group g's K rows are rows g K .. g K + K - 1 of
 * an image), and one strided-batched GEMM per group covers the chunk: the
 * weight has batch stride 0. Backward: grad_weight adds one GEMM per image
 * (batched over groups; images cannot batch since they add into the same
 * gradient), and grad_x is weight_g^T grad_out_g into the workspace, then
 * col2im, which gathers (one thread per input element) instead of
 * scattering, so it overwrites grad_x without atomics or a zeroing pass.
 * POINTWISE: the same GEMMs on x itself. DIRECT (depthwise): one thread per
 * output or input element; grad_weight and grad_bias are block reductions
 * (block_sum, a fixed order), one block per weight tap or channel, adding
 * into the gradient once: no atomics anywhere, so the result is the same on
 * every run (cuBLAS's GEMMs are deterministic on one GPU and stream for a
 * fixed problem; the sums run in another order than on the CPU).
 *
 * GEMMs go through facet_cuda_sgemm (blas.cu), which owns the cuBLAS handle
 * and turns row-major calls into cuBLAS's column-major ones.
 */
#include "cuda_common.cuh"
#include "conv_math.h"

/* ---- kernels ------------------------------------------------------------------------ */

/* col [nb][C kh kw][P]: one thread per entry, so stores coalesce along P. */
static __global__ void im2col_kernel(struct facet_conv_geom g, const float *__restrict__ x, float *__restrict__ col,
                                     int64_t nb)
{
    const int64_t taps = g.kh * g.kw, rows = g.c * taps;
    FACET_CUDA_FOR(e, nb * rows * g.p) {
        int64_t q = e % g.p, r = (e / g.p) % rows, b = e / (g.p * rows);
        int64_t c = r / taps, t = r % taps, i = t / g.kw, j = t % g.kw;
        int64_t h = (q / g.wo) * g.sh - g.ph + i * g.dh, w = (q % g.wo) * g.sw - g.pw + j * g.dw;
        bool inside = h >= 0 && h < g.h && w >= 0 && w < g.w;
        col[e] = inside ? x[((b * g.c + c) * g.h + h) * g.w + w] : 0.0f;
    }
}

/* x [nb][C][H][W] = the sum of the column entries that sampled each
 * element: output row ho sees input row h through tap i when
 * h + pad - i dil = ho stride. Overwrites x. */
static __global__ void col2im_kernel(struct facet_conv_geom g, const float *__restrict__ col, float *__restrict__ x,
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
        x[e] = s;
    }
}

/* out[n][o][:] = bias[o], so the GEMMs can add onto it (beta 1) */
static __global__ void bias_fill_kernel(float *__restrict__ out, const float *__restrict__ bias, int64_t total,
                                        int64_t o, int64_t p)
{
    FACET_CUDA_FOR(e, total) out[e] = bias[(e / p) % o];
}

/* grad_bias[o] += sum over images and positions of grad_out[n][o]: one block per channel */
static __global__ void bias_grad_kernel(float *__restrict__ gb, const float *__restrict__ gout, int64_t n, int64_t o,
                                        int64_t p)
{
    for (int64_t ch = blockIdx.x; ch < o; ch += gridDim.x) {
        float s = 0.0f;
        for (int64_t e = threadIdx.x; e < n * p; e += blockDim.x) s += gout[((e / p) * o + ch) * p + e % p];
        s = block_sum(s);
        if (threadIdx.x == 0) gb[ch] += s;
    }
}

/* Depthwise forward: one thread per output; channel o reads input o / og. */
static __global__ void direct_forward_kernel(struct facet_conv_geom g, float *__restrict__ out,
                                             const float *__restrict__ x, const float *__restrict__ w,
                                             const float *__restrict__ bias)
{
    const int64_t taps = g.kh * g.kw;
    FACET_CUDA_FOR(e, g.n * g.o * g.p) {
        int64_t q = e % g.p, no = e / g.p, o = no % g.o, n = no / g.o;
        const float *xp = x + (n * g.c + o / g.og) * g.h * g.w, *wp = w + o * taps;
        int64_t h0 = (q / g.wo) * g.sh - g.ph, w0 = (q % g.wo) * g.sw - g.pw;
        float s = bias ? bias[o] : 0.0f;
        for (int64_t i = 0; i < g.kh; i++) {
            int64_t h = h0 + i * g.dh;
            if (h < 0 || h >= g.h) continue;
            for (int64_t j = 0; j < g.kw; j++) {
                int64_t ww = w0 + j * g.dw;
                if (ww >= 0 && ww < g.w) s += wp[i * g.kw + j] * xp[h * g.w + ww];
            }
        }
        out[e] = s;
    }
}

/* Depthwise grad_x: one thread per input element, gathering from the og
 * output channels of its channel as col2im does. Overwrites. */
static __global__ void direct_grad_x_kernel(struct facet_conv_geom g, float *__restrict__ gx,
                                            const float *__restrict__ gout, const float *__restrict__ w)
{
    const int64_t taps = g.kh * g.kw;
    FACET_CUDA_FOR(e, g.n * g.c * g.h * g.w) {
        int64_t ww0 = e % g.w, h = (e / g.w) % g.h, c = (e / (g.w * g.h)) % g.c, n = e / (g.w * g.h * g.c);
        float s = 0.0f;
        for (int64_t m = 0; m < g.og; m++) {
            int64_t o = c * g.og + m;
            const float *gp = gout + (n * g.o + o) * g.p, *wp = w + o * taps;
            for (int64_t i = 0; i < g.kh; i++) {
                int64_t hh = h + g.ph - i * g.dh;
                if (hh < 0) break;
                if (hh % g.sh || hh / g.sh >= g.ho) continue;
                for (int64_t j = 0; j < g.kw; j++) {
                    int64_t ww = ww0 + g.pw - j * g.dw;
                    if (ww < 0) break;
                    if (ww % g.sw || ww / g.sw >= g.wo) continue;
                    s += wp[i * g.kw + j] * gp[(hh / g.sh) * g.wo + ww / g.sw];
                }
            }
        }
        gx[e] = s;
    }
}

/* Depthwise grad_weight: one block per (channel, tap) reduces grad_out
 * times the tap-shifted input over images and positions, then adds once. */
static __global__ void direct_grad_w_kernel(struct facet_conv_geom g, float *__restrict__ gw,
                                            const float *__restrict__ gout, const float *__restrict__ x)
{
    const int64_t taps = g.kh * g.kw;
    for (int64_t item = blockIdx.x; item < g.o * taps; item += gridDim.x) {
        int64_t o = item / taps, t = item % taps, i = t / g.kw, j = t % g.kw, c = o / g.og;
        float s = 0.0f;
        for (int64_t e = threadIdx.x; e < g.n * g.p; e += blockDim.x) {
            int64_t n = e / g.p, q = e % g.p;
            int64_t h = (q / g.wo) * g.sh - g.ph + i * g.dh, ww = (q % g.wo) * g.sw - g.pw + j * g.dw;
            if (h >= 0 && h < g.h && ww >= 0 && ww < g.w)
                s += gout[(n * g.o + o) * g.p + q] * x[((n * g.c + c) * g.h + h) * g.w + ww];
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

extern "C" int facet_cuda_conv2d_forward(const struct facet_conv_geom *gp, float *out, const float *x, const float *w,
                                         const float *bias, float *ws, int64_t ws_elems)
{
    const char *fn = "facet_conv2d_forward";
    const struct facet_conv_geom g = *gp;
    const int64_t total = g.n * g.o * g.p, xs = g.c * g.h * g.w, os = g.o * g.p;
    int path = facet_conv_path(&g);
    if (path == FACET_CONV_DIRECT) {
        direct_forward_kernel<<<grid_blocks(total), FACET_CUDA_THREADS>>>(g, out, x, w, bias);
        return check_launch(fn);
    }
    int rc = FACET_STATUS_OK;
    float beta = 0.0f;
    if (bias) {
        bias_fill_kernel<<<grid_blocks(total), FACET_CUDA_THREADS>>>(out, bias, total, g.o, g.p);
        rc = check_launch(fn);
        beta = 1.0f;
    }
    if (path == FACET_CONV_POINTWISE) {
        for (int64_t gi = 0; gi < g.groups && !rc; gi++)
            rc = facet_cuda_sgemm(0, 0, g.og, g.p, g.cg, 1.0f, w + gi * g.og * g.cg, g.cg, 0, x + gi * g.cg * g.p,
                                  g.p, xs, beta, out + gi * g.og * g.p, g.p, os, g.n);
        return rc;
    }
    const int64_t cs = facet_conv_cuda_min_workspace(&g), chunk = chunk_images(&g, ws_elems);
    for (int64_t n0 = 0; n0 < g.n && !rc; n0 += chunk) {
        int64_t nb = g.n - n0 < chunk ? g.n - n0 : chunk;
        im2col_kernel<<<grid_blocks(nb * cs), FACET_CUDA_THREADS>>>(g, x + n0 * xs, ws, nb);
        rc = check_launch(fn);
        for (int64_t gi = 0; gi < g.groups && !rc; gi++)
            rc = facet_cuda_sgemm(0, 0, g.og, g.p, g.k, 1.0f, w + gi * g.og * g.k, g.k, 0, ws + gi * g.k * g.p, g.p,
                                  cs, beta, out + n0 * os + gi * g.og * g.p, g.p, os, nb);
    }
    return rc;
}

extern "C" int facet_cuda_conv2d_backward(const struct facet_conv_geom *gp, float *gx, float *gw, float *gb,
                                          const float *gout, const float *x, const float *w, float *ws,
                                          int64_t ws_elems)
{
    const char *fn = "facet_conv2d_backward";
    const struct facet_conv_geom g = *gp;
    const int64_t xs = g.c * g.h * g.w, os = g.o * g.p, taps = g.kh * g.kw;
    int rc = FACET_STATUS_OK;
    if (gb) {
        bias_grad_kernel<<<item_blocks(g.o), FACET_CUDA_THREADS>>>(gb, gout, g.n, g.o, g.p);
        rc = check_launch(fn);
        if (rc) return rc;
    }
    int path = facet_conv_path(&g);
    if (path == FACET_CONV_DIRECT) {
        if (gx) {
            direct_grad_x_kernel<<<grid_blocks(g.n * xs), FACET_CUDA_THREADS>>>(g, gx, gout, w);
            rc = check_launch(fn);
        }
        if (gw && !rc) {
            direct_grad_w_kernel<<<item_blocks(g.o * taps), FACET_CUDA_THREADS>>>(g, gw, gout, x);
            rc = check_launch(fn);
        }
        return rc;
    }
    if (path == FACET_CONV_POINTWISE) {
        /* grad_weight_g += grad_out_g x_g^T per image, batched over groups */
        for (int64_t n = 0; gw && n < g.n && !rc; n++)
            rc = facet_cuda_sgemm(0, 1, g.og, g.cg, g.p, 1.0f, gout + n * os, g.p, g.og * g.p, x + n * xs, g.p,
                                  g.cg * g.p, 1.0f, gw, g.cg, g.og * g.cg, g.groups);
        /* grad_x_g = weight_g^T grad_out_g, batched over images */
        for (int64_t gi = 0; gx && gi < g.groups && !rc; gi++)
            rc = facet_cuda_sgemm(1, 0, g.cg, g.p, g.og, 1.0f, w + gi * g.og * g.cg, g.cg, 0, gout + gi * g.og * g.p,
                                  g.p, os, 0.0f, gx + gi * g.cg * g.p, g.p, xs, g.n);
        return rc;
    }
    const int64_t cs = facet_conv_cuda_min_workspace(&g), chunk = chunk_images(&g, ws_elems);
    for (int64_t n0 = 0; n0 < g.n && !rc; n0 += chunk) {
        int64_t nb = g.n - n0 < chunk ? g.n - n0 : chunk;
        if (gw) {
            im2col_kernel<<<grid_blocks(nb * cs), FACET_CUDA_THREADS>>>(g, x + n0 * xs, ws, nb);
            rc = check_launch(fn);
            for (int64_t s = 0; s < nb && !rc; s++)
                rc = facet_cuda_sgemm(0, 1, g.og, g.k, g.p, 1.0f, gout + (n0 + s) * os, g.p, g.og * g.p, ws + s * cs,
                                      g.p, g.k * g.p, 1.0f, gw, g.k, g.og * g.k, g.groups);
        }
        if (gx && !rc) {
            for (int64_t gi = 0; gi < g.groups && !rc; gi++)
                rc = facet_cuda_sgemm(1, 0, g.k, g.p, g.og, 1.0f, w + gi * g.og * g.k, g.k, 0,
                                      gout + n0 * os + gi * g.og * g.p, g.p, os, 0.0f, ws + gi * g.k * g.p, g.p, cs, nb);
            if (!rc) {
                col2im_kernel<<<grid_blocks(nb * xs), FACET_CUDA_THREADS>>>(g, ws, gx + n0 * xs, nb);
                rc = check_launch(fn);
            }
        }
    }
    return rc;
}
