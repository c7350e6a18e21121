/*
 * pool.cu - 2-D max and average pooling on CUDA, with the contracts of
 * core/src/pool.c (which checks the arguments and fills the geometry).
 *
 * Forward: one thread per output, scanning its window clipped to the image
 * row by row exactly as the CPU does (first maximum wins, the first NaN
 * beats every number). Backward: one thread per input pixel gathers from the
 * outputs whose windows hold it, in increasing output order: no atomics, a
 * deterministic result, and the same summation order as the CPU's scatter.
 * Max pooling takes the outputs whose argmax names the pixel.
 */
#include "cuda_common.cuh"
#include "norm_pool_cuda.h"

/* The window of output (oh, ow) clipped to the image: [hs, he) x [ws, we). */
struct window {
    int64_t hs, he, ws, we;
};

static __device__ __forceinline__ window window_of(const facet_pool_geom &g, int64_t oh, int64_t ow)
{
    const int64_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
    window r;
    r.hs = h0 > 0 ? h0 : 0;
    r.he = h0 + g.kh < g.h ? h0 + g.kh : g.h;
    r.ws = w0 > 0 ? w0 : 0;
    r.we = w0 + g.kw < g.w ? w0 + g.kw : g.w;
    return r;
}

static __device__ __forceinline__ float avg_divisor(const facet_pool_geom &g, const window &r)
{
    return (float)(g.count_pad ? g.kh * g.kw : (r.he - r.hs) * (r.we - r.ws));
}

static __global__ void max_forward_kernel(float *out, int32_t *argmax, const float *x, facet_pool_geom g,
                                          int64_t total)
{
    FACET_CUDA_FOR(i, total) {
        const int64_t ow = i % g.wo, t = i / g.wo, oh = t % g.ho, p = t / g.ho;
        const window r = window_of(g, oh, ow);
        const float *xp = x + p * g.h * g.w;
        float best = -INFINITY;
        int64_t bi = r.hs * g.w + r.ws;
        for (int64_t h = r.hs; h < r.he; h++)
            for (int64_t w = r.ws; w < r.we; w++) {
                const float v = xp[h * g.w + w];
                if (v > best || (isnan(v) && !isnan(best))) {
                    best = v;
                    bi = h * g.w + w;
                }
            }
        out[i] = best;
        if (argmax) argmax[i] = (int32_t)bi;
    }
}

static __global__ void avg_forward_kernel(float *out, const float *x, facet_pool_geom g, int64_t total)
{
    FACET_CUDA_FOR(i, total) {
        const int64_t ow = i % g.wo, t = i / g.wo, oh = t % g.ho, p = t / g.ho;
        const window r = window_of(g, oh, ow);
        const float *xp = x + p * g.h * g.w;
        float sum = 0.0f;
        for (int64_t h = r.hs; h < r.he; h++)
            for (int64_t w = r.ws; w < r.we; w++) sum += xp[h * g.w + w];
        out[i] = sum / avg_divisor(g, r);
    }
}

extern "C" int facet_cuda_pool2d_forward(float *out, int32_t *argmax, const float *x, int kind,
                                         const struct facet_pool_geom *g)
{
    const int64_t total = g->planes * g->ho * g->wo;
    if (total <= 0) return FACET_STATUS_OK;
    if (kind == FACET_POOL_KIND_MAX)
        max_forward_kernel<<<grid_blocks(total), FACET_CUDA_THREADS>>>(out, argmax, x, *g, total);
    else
        avg_forward_kernel<<<grid_blocks(total), FACET_CUDA_THREADS>>>(out, x, *g, total);
    return check_launch("facet_pool2d_forward");
}

/* Outputs along one axis whose window [o s - p, o s - p + k) holds pixel v:
 * [lo, hi] (empty when lo > hi). */
static __device__ __forceinline__ void outputs_holding(int64_t v, int64_t k, int64_t s, int64_t p, int64_t n,
                                                       int64_t *lo, int64_t *hi)
{
    const int64_t t = v + p - k;        /* o s > t */
    *lo = t < 0 ? 0 : t / s + 1;
    const int64_t h = (v + p) / s;      /* o s <= v + p */
    *hi = h < n - 1 ? h : n - 1;
}

static __global__ void pool_backward_kernel(float *grad_x, const float *grad_out, const int32_t *argmax, int kind,
                                            facet_pool_geom g, int64_t total)
{
    FACET_CUDA_FOR(i, total) {
        const int64_t w = i % g.w, t = i / g.w, h = t % g.h, p = t / g.h;
        int64_t oh0, oh1, ow0, ow1;
        outputs_holding(h, g.kh, g.sh, g.ph, g.ho, &oh0, &oh1);
        outputs_holding(w, g.kw, g.sw, g.pw, g.wo, &ow0, &ow1);
        const int64_t base = p * g.ho * g.wo;
        const int32_t self = (int32_t)(h * g.w + w);
        float acc = 0.0f;
        for (int64_t oh = oh0; oh <= oh1; oh++)
            for (int64_t ow = ow0; ow <= ow1; ow++) {
                const int64_t o = base + oh * g.wo + ow;
                if (kind == FACET_POOL_KIND_MAX) {
                    if (argmax[o] == self) acc += grad_out[o];
                } else {
                    acc += grad_out[o] / avg_divisor(g, window_of(g, oh, ow));
                }
            }
        grad_x[i] = acc;
    }
}

extern "C" int facet_cuda_pool2d_backward(float *grad_x, const float *grad_out, const int32_t *argmax, int kind,
                                          const struct facet_pool_geom *g)
{
    const int64_t total = g->planes * g->h * g->w;
    if (total <= 0) return FACET_STATUS_OK;
    pool_backward_kernel<<<grid_blocks(total), FACET_CUDA_THREADS>>>(grad_x, grad_out, argmax, kind, *g, total);
    return check_launch("facet_pool2d_backward");
}
