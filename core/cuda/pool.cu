/*
 * pool.cu - 2-D max and average pooling on CUDA, with the contracts of
 * core/src/pool.c (which checks the arguments and fills the geometry) and
 * the windows, divisors and tie rule of pool_math.h.
 *
 * Forward: one thread per output, scanning its window clipped to the image
 * row by row exactly as the CPU does (first maximum wins, the first NaN
 * beats every number). Backward: one thread per input pixel gathers from the
 * outputs whose windows hold it, in increasing output order: no atomics, a
 * deterministic result, and the same summation order as the CPU's scatter.
 * Max pooling takes the outputs whose argmax names the pixel. x, out and
 * the gradients are float32, float16 or bfloat16 (kernels templated over the
 * storage type, float32 sums, results rounded once).
 */
#include "cuda_common.cuh"
#include "pool_math.h"

template <typename T>
static __global__ void max_forward_kernel(T *out, int32_t *argmax, const T *x, facet_pool_geom g, int64_t total)
{
    FACET_CUDA_FOR(i, total) {
        const int64_t ow = i % g.wo, t = i / g.wo, oh = t % g.ho, p = t / g.ho;
        const facet_pool_window r = facet_pool_window_of(&g, oh, ow);
        const T *xp = x + p * g.h * g.w;
        float best = -INFINITY;
        int64_t bi = r.hs * g.w + r.ws;
        for (int64_t h = r.hs; h < r.he; h++)
            for (int64_t w = r.ws; w < r.we; w++) {
                const float v = ld(xp[h * g.w + w]);
                if (facet_pool_max_wins(v, best)) {
                    best = v;
                    bi = h * g.w + w;
                }
            }
        st(out, i, best);
        if (argmax) argmax[i] = (int32_t)bi;
    }
}

template <typename T>
static __global__ void avg_forward_kernel(T *out, const T *x, facet_pool_geom g, int64_t total)
{
    FACET_CUDA_FOR(i, total) {
        const int64_t ow = i % g.wo, t = i / g.wo, oh = t % g.ho, p = t / g.ho;
        const facet_pool_window r = facet_pool_window_of(&g, oh, ow);
        const T *xp = x + p * g.h * g.w;
        float sum = 0.0f;
        for (int64_t h = r.hs; h < r.he; h++)
            for (int64_t w = r.ws; w < r.we; w++) sum += ld(xp[h * g.w + w]);
        st(out, i, sum / facet_pool_divisor(&g, &r));
    }
}

extern "C" int facet_cuda_pool2d_forward(int dtype, void *out, int32_t *argmax, const void *x, int kind,
                                         const struct facet_pool_geom *g)
{
    const char *fn = "facet_cuda_pool2d_forward";
    const int64_t total = g->planes * g->ho * g->wo;
    int rc = 0;
    if (kind == FACET_POOL_KIND_MAX)
        FACET_ACT_DISPATCH(dtype, T,
            rc = launch_flat(fn, total, max_forward_kernel<T>, (T *)out, argmax, (const T *)x, *g, total));
    else
        FACET_ACT_DISPATCH(dtype, T, rc = launch_flat(fn, total, avg_forward_kernel<T>, (T *)out, (const T *)x, *g, total));
    return rc;
}

template <typename T>
static __global__ void pool_backward_kernel(T *grad_x, const T *grad_out, const int32_t *argmax, int kind,
                                            facet_pool_geom g, int64_t total)
{
    FACET_CUDA_FOR(i, total) {
        const int64_t w = i % g.w, t = i / g.w, h = t % g.h, p = t / g.h;
        int64_t oh0, oh1, ow0, ow1;
        facet_pool_outputs_holding(h, g.kh, g.sh, g.ph, g.ho, &oh0, &oh1);
        facet_pool_outputs_holding(w, g.kw, g.sw, g.pw, g.wo, &ow0, &ow1);
        const int64_t base = p * g.ho * g.wo;
        const int32_t self = (int32_t)(h * g.w + w);
        float acc = 0.0f;
        for (int64_t oh = oh0; oh <= oh1; oh++)
            for (int64_t ow = ow0; ow <= ow1; ow++) {
                const int64_t o = base + oh * g.wo + ow;
                if (kind == FACET_POOL_KIND_MAX) {
                    if (argmax[o] == self) acc += ld(grad_out[o]);
                } else {
                    const facet_pool_window r = facet_pool_window_of(&g, oh, ow);
                    acc += ld(grad_out[o]) / facet_pool_divisor(&g, &r);
                }
            }
        st(grad_x, i, acc);
    }
}

extern "C" int facet_cuda_pool2d_backward(int dtype, void *grad_x, const void *grad_out, const int32_t *argmax,
                                          int kind, const struct facet_pool_geom *g)
{
    const int64_t total = g->planes * g->h * g->w;
    int rc = 0;
    FACET_ACT_DISPATCH(dtype, T,
        rc = launch_flat("facet_cuda_pool2d_backward", total, pool_backward_kernel<T>, (T *)grad_x,
                         (const T *)grad_out, argmax, kind, *g, total));
    return rc;
}
