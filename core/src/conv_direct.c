/*
 * conv_direct.c - the CPU kernels of the DIRECT convolution path (one input
 * channel per output channel: depthwise, C/groups == 1; see conv.c for the
 * paths and conv_math.h for the geometry), forward and backward.
 *
 * Output channel o reads input channel o / og. The fast kernels first copy
 * a plane into a zero-padded buffer on the stack, split into stride_w column
 * phases, so that no tap needs a bounds test and every tap sweeps contiguous
 * memory whatever the stride. Forward computes a row of outputs in register
 * blocks of 16 (or 8) with the taps innermost, one broadcast multiply-add
 * per tap and block; the last block of a row overlaps the one before it
 * instead of falling back to scalar code. grad_x at stride 1 is that same
 * forward kernel (grad_out correlated with the flipped kernel); otherwise
 * each output row is scattered into the padded buffer (contiguous
 * read-modify-write sweeps) and the inside copied out. grad_weight is one
 * dot product per tap over the plane. Planes larger than the buffer
 * (beyond ~126 x 126) or kernels over DW_MAX_TAPS take the plain loops,
 * which bound each row sweep with facet_conv_range. Backward runs per input
 * channel: the grad_x planes and the grad_weight/grad_bias sums of its
 * output channels come from one pass over its planes, while they are in
 * cache. Multiply and add stay separate (C11 mode: no FP contraction), so
 * every clone (AVX-512, AVX2, baseline) gives the same bits.
 */
#include "internal.h"
#include "conv_math.h"
#include "conv_direct.h"
#include <string.h>

enum { DW_SCRATCH = 16384, DW_MAX_TAPS = 64 };

/* The zero-padded plane the taps read: padded row r = input row r - pad_h,
 * column c = input column c - pad_w, stored at
 * buf[((c % S) rows + r) wq + c / S] with S = stride_w. */
struct dw_plane {
    float *buf;
    int64_t S, rows, wq;
};

static bool dw_plane_init(struct dw_plane *p, float *buf, const struct facet_conv_geom *g)
{
    p->buf = buf;
    p->S = g->sw;
    p->rows = (g->ho - 1) * g->sh + (g->kh - 1) * g->dh + 1;
    p->wq = g->wo + (g->kw - 1) * g->dw / g->sw;
    return p->S * p->rows * p->wq <= DW_SCRATCH && g->kh * g->kw <= DW_MAX_TAPS;
}

/* Where each tap reads for output (0, 0), as offsets into the buffer; output
 * row ho adds ho stride_h wq, output column q adds q. */
static void dw_taps(const struct dw_plane *p, const struct facet_conv_geom *g, int64_t *off)
{
    for (int64_t i = 0; i < g->kh; i++)
        for (int64_t j = 0; j < g->kw; j++) {
            int64_t r = i * g->dh, c = j * g->dw;
            off[i * g->kw + j] = ((c % p->S) * p->rows + r) * p->wq + c / p->S;
        }
}

/* The buffer = x's plane, padded. */
static void dw_fill(const struct dw_plane *p, const struct facet_conv_geom *g, const float *x)
{
    for (int64_t ph = 0; ph < p->S; ph++) {
        int64_t lo, hi;   /* phase columns u with an input column u S + ph - pad_w */
        facet_conv_range(ph - g->pw, p->S, g->w, p->wq, &lo, &hi);
        for (int64_t r = 0; r < p->rows; r++) {
            float *d = p->buf + (ph * p->rows + r) * p->wq;
            int64_t h = r - g->ph;
            if (h < 0 || h >= g->h) {
                memset(d, 0, (size_t)p->wq * sizeof(float));
                continue;
            }
            const float *xr = x + h * g->w + ph - g->pw;
            for (int64_t u = 0; u < lo; u++) d[u] = 0.0f;
            if (p->S == 1) memcpy(d + lo, xr + lo, (size_t)(hi - lo) * sizeof(float));
            else if (p->S == 2) for (int64_t u = lo; u < hi; u++) d[u] = xr[2 * u];   /* vectorises */
            else for (int64_t u = lo; u < hi; u++) d[u] = xr[u * p->S];
            for (int64_t u = hi; u < p->wq; u++) d[u] = 0.0f;
        }
    }
}

/* x's plane = the inside of the buffer (the adjoint of dw_fill). */
static void dw_unfill(const struct dw_plane *p, const struct facet_conv_geom *g, float *x)
{
    memset(x, 0, (size_t)(g->h * g->w) * sizeof(float));   /* columns past the buffer get nothing */
    for (int64_t ph = 0; ph < p->S; ph++) {
        int64_t lo, hi;
        facet_conv_range(ph - g->pw, p->S, g->w, p->wq, &lo, &hi);
        for (int64_t h = 0; h < g->h && h + g->ph < p->rows; h++) {
            const float *s = p->buf + (ph * p->rows + h + g->ph) * p->wq;
            float *xr = x + h * g->w + ph - g->pw;
            if (p->S == 1) memcpy(xr + lo, s + lo, (size_t)(hi - lo) * sizeof(float));
            else for (int64_t u = lo; u < hi; u++) xr[u * p->S] = s[u];
        }
    }
}

/* B outputs o[q + l] = bias + sum over taps t of wk[t] tp[t][q + l]; B is a
 * constant where this is inlined, so acc lives in a register. */
static inline __attribute__((always_inline)) void dw_block(float *o, const float *const *tp, const float *wk,
                                                           int64_t taps, int64_t q, const int B, float bias)
{
    float acc[16];
    for (int l = 0; l < B; l++) acc[l] = bias;
    for (int64_t t = 0; t < taps; t++) {
        const float wv = wk[t], *xs = tp[t] + q;
        #pragma omp simd
        for (int l = 0; l < B; l++) acc[l] += wv * xs[l];
    }
    for (int l = 0; l < B; l++) o[q + l] = acc[l];
}

/* A row of n outputs; tp[t] is where tap t reads for output 0. */
static inline __attribute__((always_inline)) void dw_row(float *o, int64_t n, const float *const *tp, const float *wk,
                                                         int64_t taps, float bias)
{
    if (n >= 16) {
        int64_t q = 0;
        for (; q + 16 <= n; q += 16) dw_block(o, tp, wk, taps, q, 16, bias);
        if (q < n) dw_block(o, tp, wk, taps, n - 16, 16, bias);
    } else if (n >= 8) {
        dw_block(o, tp, wk, taps, 0, 8, bias);
        if (n > 8) dw_block(o, tp, wk, taps, n - 8, 8, bias);
    } else {
        for (int64_t q = 0; q < n; q++) {
            float s = bias;
            for (int64_t t = 0; t < taps; t++) s += wk[t] * tp[t][q];
            o[q] = s;
        }
    }
}

/* Adds the dot of g[0, n) and x[0, n) (n >= B) into two vectors of partial
 * sums, alternating blocks of B lanes so that two addition chains run side
 * by side; the last block overlaps the one before it with the repeated
 * lanes masked off. */
static inline __attribute__((always_inline)) void dw_dot_row(float *acc0, float *acc1, const float *g, const float *x,
                                                             int64_t n, const int B)
{
    int64_t q = 0;
    for (; q + 2 * B <= n; q += 2 * B) {
        #pragma omp simd
        for (int l = 0; l < B; l++) acc0[l] += g[q + l] * x[q + l];
        #pragma omp simd
        for (int l = 0; l < B; l++) acc1[l] += g[q + B + l] * x[q + B + l];
    }
    if (q + B <= n) {
        #pragma omp simd
        for (int l = 0; l < B; l++) acc0[l] += g[q + l] * x[q + l];
        q += B;
    }
    if (q < n) {
        const int64_t q0 = n - B;
        const int skip = (int)(q - q0);
        #pragma omp simd
        for (int l = 0; l < B; l++) acc1[l] += l >= skip ? g[q0 + l] * x[q0 + l] : 0.0f;
    }
}

/* sum over r < rows, q < n of g[r n + q] x[r pitch + q]: vectors of partial
 * sums for the whole plane, reduced once. */
static inline __attribute__((always_inline)) float dw_plane_dot(const float *g, const float *x, int64_t rows,
                                                                int64_t n, int64_t pitch)
{
    float s = 0.0f;
    if (n < 8) {
        for (int64_t r = 0; r < rows; r++)
            for (int64_t q = 0; q < n; q++) s += g[r * n + q] * x[r * pitch + q];
        return s;
    }
    float acc0[16] = { 0.0f }, acc1[16] = { 0.0f };
    if (n >= 16) {
        for (int64_t r = 0; r < rows; r++) dw_dot_row(acc0, acc1, g + r * n, x + r * pitch, n, 16);
    } else {
        for (int64_t r = 0; r < rows; r++) dw_dot_row(acc0, acc1, g + r * n, x + r * pitch, n, 8);
    }
    for (int l = 0; l < 16; l++) s += acc0[l] + acc1[l];
    return s;
}

/* A kernel exactly as large as the unpadded input (MobileFaceNet's global
 * depthwise layer): the one output is a dot product of kernel and plane. */
static bool dw_global(const struct facet_conv_geom *g)
{
    return g->kh == g->h && g->kw == g->w && g->ph == 0 && g->pw == 0 && g->dh == 1 && g->dw == 1;
}

/* out plane = bias + the taps over x's plane; false if it does not fit. */
FACET_CLONES static bool direct_forward_fast(const struct facet_conv_geom *g, float *out, const float *x,
                                             const float *w, float bias)
{
    const int64_t taps = g->kh * g->kw;
    if (dw_global(g)) {
        float s = 0.0f;
        #pragma omp simd reduction(+ : s)
        for (int64_t t = 0; t < taps; t++) s += w[t] * x[t];
        out[0] = bias + s;
        return true;
    }
    float buf[DW_SCRATCH];
    struct dw_plane p;
    if (!dw_plane_init(&p, buf, g)) return false;
    dw_fill(&p, g, x);
    int64_t off[DW_MAX_TAPS];
    const float *tp[DW_MAX_TAPS];
    dw_taps(&p, g, off);
    for (int64_t ho = 0; ho < g->ho; ho++) {
        for (int64_t t = 0; t < taps; t++) tp[t] = buf + off[t] + ho * g->sh * p.wq;
        dw_row(out + ho * g->wo, g->wo, tp, w, taps, bias);
    }
    return true;
}

/* grad_x plane by scattering each output row of the og output channels
 * (gout and w point at the first) into the padded buffer. Overwrites. */
FACET_CLONES static bool direct_grad_x_scatter(const struct facet_conv_geom *g, float *gx, const float *gout,
                                               const float *w)
{
    const int64_t taps = g->kh * g->kw;
    float buf[DW_SCRATCH];
    struct dw_plane p;
    if (!dw_plane_init(&p, buf, g)) return false;
    memset(buf, 0, (size_t)(p.S * p.rows * p.wq) * sizeof(float));
    int64_t off[DW_MAX_TAPS];
    dw_taps(&p, g, off);
    for (int64_t m = 0; m < g->og; m++)
        for (int64_t ho = 0; ho < g->ho; ho++) {
            const float *grow = gout + (m * g->ho + ho) * g->wo;
            for (int64_t t = 0; t < taps; t++) {
                float *d = buf + off[t] + ho * g->sh * p.wq;
                const float wv = w[m * taps + t];
                #pragma omp simd
                for (int64_t q = 0; q < g->wo; q++) d[q] += wv * grow[q];
            }
        }
    dw_unfill(&p, g, gx);
    return true;
}

/* grad_x plane of input channel c from its og output channels (gout and w
 * point at the first of them). Overwrites. The stack buffer lives in the
 * callees, one at a time. */
static bool direct_grad_x_fast(const struct facet_conv_geom *g, float *gx, const float *gout, const float *w)
{
    const int64_t taps = g->kh * g->kw;
    if (dw_global(g)) {
        for (int64_t t = 0; t < taps; t++) gx[t] = 0.0f;
        for (int64_t m = 0; m < g->og; m++)
            for (int64_t t = 0; t < taps; t++) gx[t] += gout[m] * w[m * taps + t];
        return true;
    }
    if (g->sh == 1 && g->sw == 1 && g->og == 1 && g->ph <= (g->kh - 1) * g->dh && g->pw <= (g->kw - 1) * g->dw &&
        4 * g->p >= 3 * g->h * g->w && taps <= DW_MAX_TAPS) {
        /* stride 1: grad_x is grad_out, padded by the kernel's reach less the
         * padding, correlated with the flipped kernel - a forward layer from
         * Ho x Wo to H x W (used while most of that correlation is not padding) */
        struct facet_conv_geom t = *g;
        t.h = g->ho, t.w = g->wo, t.ho = g->h, t.wo = g->w, t.p = g->h * g->w;
        t.ph = (g->kh - 1) * g->dh - g->ph, t.pw = (g->kw - 1) * g->dw - g->pw;
        float wf[DW_MAX_TAPS];
        for (int64_t k = 0; k < taps; k++) wf[k] = w[taps - 1 - k];   /* both axes flipped */
        if (direct_forward_fast(&t, gx, gout, wf, 0.0f)) return true;
    }
    return direct_grad_x_scatter(g, gx, gout, w);
}

/* gw[t] += the dot of a grad_out plane with x's plane seen through tap t. */
FACET_CLONES static bool direct_grad_w_fast(const struct facet_conv_geom *g, float *gw, const float *gout,
                                            const float *x)
{
    const int64_t taps = g->kh * g->kw;
    if (dw_global(g)) {
        const float gv = gout[0];
        #pragma omp simd
        for (int64_t t = 0; t < taps; t++) gw[t] += gv * x[t];
        return true;
    }
    float buf[DW_SCRATCH];
    struct dw_plane p;
    if (!dw_plane_init(&p, buf, g)) return false;
    dw_fill(&p, g, x);
    int64_t off[DW_MAX_TAPS];
    dw_taps(&p, g, off);
    for (int64_t t = 0; t < taps; t++) gw[t] += dw_plane_dot(gout, buf + off[t], g->ho, g->wo, g->sh * p.wq);
    return true;
}

/* The plain loops: every tap sweeps whole rows between the bounds
 * facet_conv_range gives. */
static void direct_forward_plane(const struct facet_conv_geom *g, float *out, const float *x, const float *w,
                                 float bias)
{
    if (direct_forward_fast(g, out, x, w, bias)) return;
    const int64_t W = g->w, Wo = g->wo, sw = g->sw;
    for (int64_t q = 0; q < g->p; q++) out[q] = bias;
    for (int64_t i = 0; i < g->kh; i++) {
        int64_t hlo, hhi;
        facet_conv_range(i * g->dh - g->ph, g->sh, g->h, g->ho, &hlo, &hhi);
        for (int64_t j = 0; j < g->kw; j++) {
            const float wv = w[i * g->kw + j];
            int64_t off = j * g->dw - g->pw, lo, hi;
            facet_conv_range(off, sw, W, Wo, &lo, &hi);
            for (int64_t ho = hlo; ho < hhi; ho++) {
                float *orow = out + ho * Wo;
                const float *xr = x + (ho * g->sh + i * g->dh - g->ph) * W;
                for (int64_t q = lo; q < hi; q++) orow[q] += wv * xr[q * sw + off];
            }
        }
    }
}

/* grad_x plane of input channel c from its og output channels (gout and w
 * point at the first of them). Overwrites. */
static void direct_grad_x_plane(const struct facet_conv_geom *g, float *gx, const float *gout, const float *w)
{
    if (direct_grad_x_fast(g, gx, gout, w)) return;
    const int64_t W = g->w, Wo = g->wo, sw = g->sw, taps = g->kh * g->kw;
    memset(gx, 0, (size_t)(g->h * W) * sizeof(float));
    for (int64_t m = 0; m < g->og; m++) {
        const float *gp = gout + m * g->p, *wm = w + m * taps;
        for (int64_t i = 0; i < g->kh; i++) {
            int64_t hlo, hhi;
            facet_conv_range(i * g->dh - g->ph, g->sh, g->h, g->ho, &hlo, &hhi);
            for (int64_t j = 0; j < g->kw; j++) {
                const float wv = wm[i * g->kw + j];
                int64_t off = j * g->dw - g->pw, lo, hi;
                facet_conv_range(off, sw, W, Wo, &lo, &hi);
                for (int64_t ho = hlo; ho < hhi; ho++) {
                    const float *grow = gp + ho * Wo;
                    float *xr = gx + (ho * g->sh + i * g->dh - g->ph) * W;
                    for (int64_t q = lo; q < hi; q++) xr[q * sw + off] += wv * grow[q];
                }
            }
        }
    }
}

/* gw (taps floats) += grad_out plane . x plane shifted by each tap. */
static void direct_grad_w_plane(const struct facet_conv_geom *g, float *gw, const float *gout, const float *x)
{
    if (direct_grad_w_fast(g, gw, gout, x)) return;
    const int64_t W = g->w, Wo = g->wo, sw = g->sw;
    for (int64_t i = 0; i < g->kh; i++) {
        int64_t hlo, hhi;
        facet_conv_range(i * g->dh - g->ph, g->sh, g->h, g->ho, &hlo, &hhi);
        for (int64_t j = 0; j < g->kw; j++) {
            int64_t off = j * g->dw - g->pw, lo, hi;
            facet_conv_range(off, sw, W, Wo, &lo, &hi);
            float s = 0.0f;
            for (int64_t ho = hlo; ho < hhi; ho++) {
                const float *grow = gout + ho * Wo, *xr = x + (ho * g->sh + i * g->dh - g->ph) * W;
                for (int64_t q = lo; q < hi; q++) s += grow[q] * xr[q * sw + off];
            }
            gw[i * g->kw + j] += s;
        }
    }
}

/* Threads split the work only when it is worth a parallel region. */
static bool direct_parallel(const struct facet_conv_geom *g)
{
    return g->n * g->o * g->p * g->kh * g->kw >= FACET_PARALLEL_GRAIN;
}

void facet_conv_direct_forward(const struct facet_conv_geom *g, float *out, const float *x, const float *w,
                               const float *b)
{
    const int64_t planes = g->n * g->o, taps = g->kh * g->kw;
    #pragma omp parallel for schedule(static) num_threads(facet_threads()) if (direct_parallel(g))
    for (int64_t e = 0; e < planes; e++) {
        int64_t n = e / g->o, o = e % g->o, c = o / g->og;
        direct_forward_plane(g, out + e * g->p, x + (n * g->c + c) * g->h * g->w, w + o * taps, b ? b[o] : 0.0f);
    }
}

/* Everything backward computes for input channel c of image n. */
static void direct_backward_plane(const struct facet_conv_geom *g, int64_t n, int64_t c, float *gx, float *gw,
                                  float *gb, const float *gout, const float *x, const float *w)
{
    const int64_t taps = g->kh * g->kw, HW = g->h * g->w, o0 = c * g->og;
    const float *gp = gout + (n * g->o + o0) * g->p, *xp = x + (n * g->c + c) * HW;
    if (gx) direct_grad_x_plane(g, gx + (n * g->c + c) * HW, gp, w + o0 * taps);
    for (int64_t m = 0; m < g->og; m++) {
        if (gw) direct_grad_w_plane(g, gw + (o0 + m) * taps, gp + m * g->p, xp);
        if (gb) gb[o0 + m] += facet_conv_plane_sum(gp + m * g->p, g->p);
    }
}

void facet_conv_direct_backward(const struct facet_conv_geom *g, float *gx, float *gw, float *gb,
                                const float *gout, const float *x, const float *w)
{
    int threads = facet_threads();
    bool par = direct_parallel(g);
    if (g->c >= threads || !par) {
        /* channels split across threads; each adds to its own outputs' gradients */
        #pragma omp parallel for schedule(static) num_threads(threads) if (par)
        for (int64_t c = 0; c < g->c; c++)
            for (int64_t n = 0; n < g->n; n++) direct_backward_plane(g, n, c, gx, gw, gb, gout, x, w);
        return;
    }
    /* fewer input channels than threads (a 1-channel input): grad_x split by
     * image, the sums by output channel */
    const int64_t taps = g->kh * g->kw, HW = g->h * g->w;
    if (gx) {
        #pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t e = 0; e < g->n * g->c; e++)
            direct_backward_plane(g, e / g->c, e % g->c, gx, NULL, NULL, gout, x, w);
    }
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t o = 0; o < g->o; o++)
        for (int64_t n = 0; n < g->n; n++) {
            const float *gp = gout + (n * g->o + o) * g->p;
            if (gw) direct_grad_w_plane(g, gw + o * taps, gp, x + (n * g->c + o / g->og) * HW);
            if (gb) gb[o] += facet_conv_plane_sum(gp, g->p);
        }
}
