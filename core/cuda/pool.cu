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
 * storage type, float32 sums, results rounded once). A thread's plane, row
 * and column, and the backward's outputs holding a pixel (one division by
 * the stride an axis), come from 32-bit multiply-shift divisions when the
 * tensors have fewer than 2^31 elements (cuda_common.cuh, "index math").
 */
#include "cuda_common.cuh"
#include "pool_math.h"

/* The launch's geometry and its index type I: the divisors of the planes
 * it walks (out's for the forward, x's for the backward). */
template <typename I>
struct pool_ix {
    facet_pool_geom g;
    div_by<I> by_rows, by_cols;
};

template <typename T, typename I>
static __global__ void max_forward_kernel(T *out, int32_t *argmax, const T *x, pool_ix<I> ix, int64_t total)
{
    const facet_pool_geom &g = ix.g;
    FACET_CUDA_FOR_T(I, i, total) {
        const plane_pos<I> o = plane_pos_of(i, ix.by_rows, ix.by_cols);
        const facet_pool_window r = facet_pool_window_of(&g, o.row, o.col);
        const T *xp = x + o.plane * g.h * g.w;
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

template <typename T, typename I>
static __global__ void avg_forward_kernel(T *out, const T *x, pool_ix<I> ix, int64_t total)
{
    const facet_pool_geom &g = ix.g;
    FACET_CUDA_FOR_T(I, i, total) {
        const plane_pos<I> o = plane_pos_of(i, ix.by_rows, ix.by_cols);
        const facet_pool_window r = facet_pool_window_of(&g, o.row, o.col);
        const T *xp = x + o.plane * g.h * g.w;
        float sum = 0.0f;
        for (int64_t h = r.hs; h < r.he; h++)
            for (int64_t w = r.ws; w < r.we; w++) sum += ld(xp[h * g.w + w]);
        st(out, i, sum / facet_pool_divisor(&g, &r));
    }
}

/* Whether x and out have fewer than 2^31 elements, and the backward's
 * dividends (a pixel's coordinate plus the padding) stay below 2^31. */
static bool pool_fits32(const struct facet_pool_geom *g)
{
    return fits_int32(g->planes * g->h * g->w, g->planes * g->ho * g->wo, g->h + g->ph, g->w + g->pw);
}

template <typename T, typename I>
static int pool_forward(T *out, int32_t *argmax, const T *x, int kind, const struct facet_pool_geom *g)
{
    const char *fn = "facet_cuda_pool2d_forward";
    const int64_t total = g->planes * g->ho * g->wo;
    const pool_ix<I> ix = { *g, div_by<I>(g->ho), div_by<I>(g->wo) };
    if (kind == FACET_POOL_KIND_MAX) return launch_flat(fn, total, max_forward_kernel<T, I>, out, argmax, x, ix, total);
    return launch_flat(fn, total, avg_forward_kernel<T, I>, out, x, ix, total);
}

extern "C" int facet_cuda_pool2d_forward(int dtype, void *out, int32_t *argmax, const void *x, int kind,
                                         const struct facet_pool_geom *g)
{
    int rc = 0;
    FACET_ACT_DISPATCH(dtype, T, FACET_INDEX_DISPATCH(pool_fits32(g), I,
        rc = pool_forward<T, I>((T *)out, argmax, (const T *)x, kind, g)));
    return rc;
}

/* The backward's launch: x's plane divisors, each axis's stride as a
 * divisor, and k - 1 split by the stride (facet_pool_outputs_from_qr). */
template <typename I>
struct pool_back_ix {
    pool_ix<I> at;
    div_by<I> by_sh, by_sw;
    int64_t kqh, krh, kqw, krw;
};

template <typename I>
static pool_back_ix<I> pool_back_ix_of(const struct facet_pool_geom *g)
{
    const pool_back_ix<I> ix = { { *g, div_by<I>(g->h), div_by<I>(g->w) }, div_by<I>(g->sh), div_by<I>(g->sw),
                                 (g->kh - 1) / g->sh, (g->kh - 1) % g->sh, (g->kw - 1) / g->sw, (g->kw - 1) % g->sw };
    return ix;
}

template <typename T, typename I>
static __global__ void pool_backward_kernel(T *grad_x, const T *grad_out, const int32_t *argmax, int kind,
                                            pool_back_ix<I> ix, int64_t total)
{
    const facet_pool_geom &g = ix.at.g;
    FACET_CUDA_FOR_T(I, i, total) {
        const plane_pos<I> at = plane_pos_of(i, ix.at.by_rows, ix.at.by_cols);
        const I ah = at.row + (I)g.ph, aw = at.col + (I)g.pw;
        int64_t oh0, oh1, ow0, ow1;
        facet_pool_outputs_from_qr(ix.by_sh.div(ah), ix.by_sh.mod(ah), ix.kqh, ix.krh, g.ho, &oh0, &oh1);
        facet_pool_outputs_from_qr(ix.by_sw.div(aw), ix.by_sw.mod(aw), ix.kqw, ix.krw, g.wo, &ow0, &ow1);
        const int64_t base = at.plane * g.ho * g.wo;
        const int32_t self = (int32_t)(at.row * g.w + at.col);
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
    FACET_ACT_DISPATCH(dtype, T, FACET_INDEX_DISPATCH(pool_fits32(g), I,
        rc = launch_flat("facet_cuda_pool2d_backward", total, pool_backward_kernel<T, I>, (T *)grad_x,
                         (const T *)grad_out, argmax, kind, pool_back_ix_of<I>(g), total)));
    return rc;
}
