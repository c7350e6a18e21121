/*
 * activation.cu - ReLU, ReLU6, sigmoid, tanh and PReLU on CUDA (the CPU versions are
 * core/src/activation.c), with the per-element math of activation_math.h.
 *
 * ReLU, ReLU6, sigmoid and tanh need no channel: one thread per element. PReLU
 * reads x as [outer, channels, inner] planes (plane = one channel of one
 * sample) on a 3-D grid: z walks the samples, y groups of blockDim.y channels
 * (one channel per thread row), x chunks of the plane along which a row's
 * blockDim.x threads stride; the channel is a row's coordinate, so no
 * per-element division is left. blockDim.x is the power of two that covers
 * the plane (at most 256) and blockDim.y = 256 / blockDim.x, so small planes
 * (7 x 7, or 1 after a Linear) still fill whole warps.
 *
 * PReLU's backward computes grad_x and the slope gradient in one pass over
 * grad_out and x: each row sums its g * x terms (facet_prelu_slope_term) and
 * writes one partial per (plane, chunk) to scratch, channel-major; a second
 * kernel, one warp per channel, adds a channel's outer x chunks partials in a
 * fixed order into grad_slope (+=); a shared slope gets the channels' sums
 * added the same way by one warp. The chunks (and so every order) come from
 * the shape alone: no atomics, the same bits on every run (the CPU adds in
 * another order: the results agree to rounding).
 *
 * x, out and grad_out / grad_x are float32, float16 or bfloat16 (templated
 * over the storage type T, math in float32, results rounded once); slopes
 * and their gradients are float32, summed in float32 as on the CPU. Plain
 * scalar loads: views may start at any element, so 16-byte vector loads are
 * not known to be aligned.
 */
#include "cuda_common.cuh"
#include "activation_math.h"

enum {
    /* elements a thread handles per pass of a plane kernel: loads issued
     * together before the results are stored */
    PRELU_UNROLL = 4,
    /* a slope-gradient launch splits planes into more chunks while it has
     * fewer blocks than this (about 15 per SM of an H100) */
    PRELU_TARGET_BLOCKS = 2048,
    /* the most y or z blocks of a launch (the hardware's limit); more
     * channel groups or samples loop in-kernel */
    PRELU_MAX_YZ = 65535
};

static inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static __device__ __forceinline__ int64_t dmin64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- ReLU, ReLU6, sigmoid, tanh: one thread per element -------------------------------------------- */

template <typename T>
static __global__ void act_forward_kernel(T *out, const T *x, int64_t n, int act)
{
    FACET_CUDA_FOR(i, n) st(out, i, facet_act_forward(act, ld(x[i]), 0.0f));
}

template <typename T>
static __global__ void act_backward_kernel(T *gx, const T *g, const T *x, const T *y, int64_t n, int act)
{
    FACET_CUDA_FOR(i, n)
        st(gx, i, facet_act_backward(act, ld(g[i]), x ? ld(x[i]) : 0.0f, y ? ld(y[i]) : 0.0f, 0.0f));
}

/* ---- PReLU: planes ---------------------------------------------------------------------------- */

/* The launch shape of a plane kernel over [outer, channels, inner]. */
struct plane_grid {
    dim3 grid, block;
    int64_t span;      /* elements of a plane per chunk (a multiple of block.x) */
    int64_t chunks;    /* grid.x: ceil(inner / span), none empty */
};

/* grad: the launch sums the slope gradient (each chunk ends in a block
 * reduction, so planes are split only while the grid is small); otherwise
 * each thread gets one unrolled pass. */
static plane_grid plane_shape(int64_t outer, int64_t channels, int64_t inner, bool grad)
{
    plane_grid s;
    unsigned tx = 1;
    while (tx < (unsigned)FACET_CUDA_THREADS && (int64_t)tx < inner) tx <<= 1;
    const unsigned ty = FACET_CUDA_THREADS / tx;
    const int64_t ys = min64(ceil_div(channels, ty), PRELU_MAX_YZ), zs = min64(outer, PRELU_MAX_YZ);
    const int64_t pass = (int64_t)tx * PRELU_UNROLL;
    int64_t chunks = ceil_div(inner, pass);
    if (grad) chunks = min64(chunks, ceil_div(PRELU_TARGET_BLOCKS, ys * zs));
    chunks = min64(chunks, INT32_MAX);   /* grid.x's limit is 2^31 - 1 */
    s.span = ceil_div(ceil_div(inner, chunks), tx) * tx;
    s.chunks = ceil_div(inner, s.span);
    s.grid = dim3((unsigned)s.chunks, (unsigned)ys, (unsigned)zs);
    s.block = dim3(tx, ty, 1);
    return s;
}

/* The sum of v over the blockDim.x threads of this thread's row (threadIdx.y),
 * valid in the row's thread x = 0, in a fixed order: a shuffle tree inside
 * each warp, then the row's warps in order. blockDim.x is a power of two and
 * blockDim.x * blockDim.y = FACET_CUDA_THREADS, so a row is either whole
 * warps or an aligned run of lanes in one. Every thread of the block must
 * call it (it synchronises); it may be called again right away. */
static __device__ float row_sum(float v)
{
    __shared__ float warps[FACET_CUDA_THREADS / 32];
    const unsigned tx = blockDim.x;
    if (tx <= 32) {
        /* lane x of a row takes x + off: for x = 0 that stays inside the row */
        for (unsigned off = tx / 2; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
        return v;
    }
    v = warp_reduce(v, op_sum());
    const unsigned tid = threadIdx.y * tx + threadIdx.x;
    if ((tid & 31) == 0) warps[tid >> 5] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned first = tid >> 5, nw = tx >> 5;
        v = warps[first];
        for (unsigned w = 1; w < nw; w++) v += warps[first + w];
    }
    __syncthreads();    /* warps[] is free for the next call */
    return v;
}

/* out = PReLU(x); slope[c] for channel c, or slope[0] for every channel when
 * nslope == 1. */
template <typename T>
static __global__ void prelu_forward_kernel(T *out, const T *x, const float *slope, int64_t nslope, int64_t outer,
                                            int64_t channels, int64_t inner, int64_t span)
{
    const int64_t tx = blockDim.x, begin = (int64_t)blockIdx.x * span, end = dmin64(begin + span, inner);
    for (int64_t o = blockIdx.z; o < outer; o += gridDim.z)
        for (int64_t c = (int64_t)blockIdx.y * blockDim.y + threadIdx.y; c < channels;
             c += (int64_t)gridDim.y * blockDim.y) {
            const float s = slope[nslope == 1 ? 0 : c];
            const int64_t base = (o * channels + c) * inner;
            for (int64_t k0 = begin + threadIdx.x; k0 < end; k0 += PRELU_UNROLL * tx) {
                float xv[PRELU_UNROLL];
#pragma unroll
                for (int u = 0; u < PRELU_UNROLL; u++) {
                    const int64_t k = k0 + u * tx;
                    xv[u] = k < end ? ld(x[base + k]) : 0.0f;
                }
#pragma unroll
                for (int u = 0; u < PRELU_UNROLL; u++) {
                    const int64_t k = k0 + u * tx;
                    if (k < end) st(out, base + k, facet_act_forward(FACET_ACTIVATION_PRELU, xv[u], s));
                }
            }
        }
}

/* grad_x (when gx is not NULL) and, when part is not NULL, the slope
 * gradient's partial of each (plane, chunk): part[(c * outer + o) * chunks
 * + chunk] = sum over the chunk of facet_prelu_slope_term(g, x). The loops
 * over o and channel groups depend on the block only (row_sum synchronises);
 * rows past the last channel load nothing and add 0. */
template <typename T>
static __global__ void prelu_backward_kernel(T *gx, float *part, const T *g, const T *x, const float *slope,
                                             int64_t nslope, int64_t outer, int64_t channels, int64_t inner,
                                             int64_t span, int64_t chunks)
{
    const int64_t tx = blockDim.x, begin = (int64_t)blockIdx.x * span, end = dmin64(begin + span, inner);
    for (int64_t o = blockIdx.z; o < outer; o += gridDim.z)
        for (int64_t c0 = (int64_t)blockIdx.y * blockDim.y; c0 < channels; c0 += (int64_t)gridDim.y * blockDim.y) {
            const int64_t c = c0 + threadIdx.y;
            const bool row = c < channels;
            const float s = row ? slope[nslope == 1 ? 0 : c] : 0.0f;
            const int64_t base = (o * channels + c) * inner;
            float acc = 0.0f;
            if (row) {
                for (int64_t k0 = begin + threadIdx.x; k0 < end; k0 += PRELU_UNROLL * tx) {
                    float gv[PRELU_UNROLL], xv[PRELU_UNROLL];
#pragma unroll
                    for (int u = 0; u < PRELU_UNROLL; u++) {
                        const int64_t k = k0 + u * tx;
                        gv[u] = k < end ? ld(g[base + k]) : 0.0f;
                        xv[u] = k < end ? ld(x[base + k]) : 0.0f;
                    }
#pragma unroll
                    for (int u = 0; u < PRELU_UNROLL; u++) {
                        const int64_t k = k0 + u * tx;
                        if (gx && k < end)
                            st(gx, base + k, facet_act_backward(FACET_ACTIVATION_PRELU, gv[u], xv[u], 0.0f, s));
                        acc += facet_prelu_slope_term(gv[u], xv[u]);   /* 0 past the end */
                    }
                }
            }
            if (part) {
                acc = row_sum(acc);
                if (row && threadIdx.x == 0) part[(c * outer + o) * chunks + blockIdx.x] = acc;
            }
        }
}

/* For each of `segments` runs of len floats in src (run s at s * len), one
 * warp adds the run in a fixed order (lane l the elements l, l + 32, ... in
 * turn, then the lanes by warp_reduce's tree) and lane 0 adds the total into
 * dst[s] (accumulate) or stores it there. */
static __global__ void segment_sum_kernel(float *dst, int accumulate, const float *src, int64_t segments, int64_t len)
{
    const int64_t warps = blockDim.x / 32, lane = threadIdx.x & 31;
    for (int64_t sgm = (int64_t)blockIdx.x * warps + (threadIdx.x >> 5); sgm < segments; sgm += (int64_t)gridDim.x * warps) {
        const float *p = src + sgm * len;
        float acc = 0.0f;
        for (int64_t j = lane; j < len; j += 32) acc += p[j];
        acc = warp_reduce(acc, op_sum());
        if (lane == 0) dst[sgm] = accumulate ? dst[sgm] + acc : acc;
    }
}

static int segment_sum(const char *fn, float *dst, int accumulate, const float *src, int64_t segments, int64_t len)
{
    const int64_t warps = FACET_CUDA_THREADS / 32;
    return launch_items(fn, ceil_div(segments, warps), FACET_CUDA_THREADS, segment_sum_kernel, dst, accumulate, src,
                        segments, len);
}

/* ---- entry points --------------------------------------------------------------------------- */

extern "C" int facet_cuda_activation_forward(int dtype, void *out, const void *x, int64_t n, int act,
                                             const float *slope, int64_t nslope, int64_t channels, int64_t inner)
{
    const char *fn = "facet_cuda_activation_forward";
    if (n <= 0) return FACET_STATUS_OK;
    int rc = 0;
    if (act != FACET_ACTIVATION_PRELU) {
        FACET_ACT_DISPATCH(dtype, T, rc = launch_flat(fn, n, act_forward_kernel<T>, (T *)out, (const T *)x, n, act));
        return rc;
    }
    const int64_t outer = n / (channels * inner);
    const plane_grid s = plane_shape(outer, channels, inner, false);
    FACET_ACT_DISPATCH(dtype, T, {
        prelu_forward_kernel<T><<<s.grid, s.block>>>((T *)out, (const T *)x, slope, nslope, outer, channels, inner,
                                                     s.span);
        rc = check_launch(fn);
    });
    return rc;
}

/* PReLU's backward: grad_x and / or grad_slope (+=) from one pass. */
template <typename T>
static int prelu_backward(T *gx, float *grad_slope, const T *g, const T *x, const float *slope, int64_t nslope,
                          int64_t outer, int64_t channels, int64_t inner)
{
    const char *fn = "facet_cuda_activation_backward";
    const plane_grid s = plane_shape(outer, channels, inner, grad_slope != NULL);
    if (!grad_slope) {
        prelu_backward_kernel<T><<<s.grid, s.block>>>(gx, (float *)NULL, g, x, slope, nslope, outer, channels, inner,
                                                      s.span, s.chunks);
        return check_launch(fn);
    }
    /* partials, channel-major, then (a shared slope) the channels' sums */
    const int64_t nparts = channels * outer * s.chunks;
    scratch part;
    FACET_CUDA_TRY(scratch_alloc(&part, (size_t)(nparts + (nslope == 1 ? channels : 0)) * sizeof(float), fn));
    float *parts = (float *)part.p, *sums = parts + nparts;
    prelu_backward_kernel<T><<<s.grid, s.block>>>(gx, parts, g, x, slope, nslope, outer, channels, inner, s.span,
                                                  s.chunks);
    int rc = check_launch(fn);
    if (!rc && nslope != 1) rc = segment_sum(fn, grad_slope, 1, parts, channels, outer * s.chunks);
    if (!rc && nslope == 1) rc = segment_sum(fn, sums, 0, parts, channels, outer * s.chunks);
    if (!rc && nslope == 1) rc = segment_sum(fn, grad_slope, 1, sums, 1, channels);
    int rc_free = scratch_free(&part, fn);
    return rc ? rc : rc_free;
}

extern "C" int facet_cuda_activation_backward(int dtype, void *grad_x, float *grad_slope, const void *grad_out,
                                              const void *x, const void *out, int64_t n, int act, const float *slope,
                                              int64_t nslope, int64_t channels, int64_t inner)
{
    const char *fn = "facet_cuda_activation_backward";
    if (n <= 0) return FACET_STATUS_OK;
    int rc = 0;
    if (act != FACET_ACTIVATION_PRELU) {
        /* ReLU and ReLU6 read x, sigmoid and tanh their output (out is NULL otherwise) */
        const void *xr = act == FACET_ACTIVATION_RELU || act == FACET_ACTIVATION_RELU6 ? x : NULL;
        if (grad_x)
            FACET_ACT_DISPATCH(dtype, T,
                rc = launch_flat(fn, n, act_backward_kernel<T>, (T *)grad_x, (const T *)grad_out, (const T *)xr,
                                 (const T *)out, n, act));
        return rc;
    }
    if (!grad_x && !grad_slope) return FACET_STATUS_OK;
    const int64_t outer = n / (channels * inner);
    FACET_ACT_DISPATCH(dtype, T,
        rc = prelu_backward<T>((T *)grad_x, grad_slope, (const T *)grad_out, (const T *)x, slope, nslope, outer,
                               channels, inner));
    return rc;
}
