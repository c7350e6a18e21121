/*
 * activation.cu - ReLU, sigmoid, tanh and PReLU on CUDA (the CPU versions are
 * core/src/activation.c), with the per-element math of activation_math.h.
 * Forward and grad_x: one thread per element. PReLU's slope gradient: one
 * block per channel reduces g * x over the channel's non-positive inputs
 * (block_reduce, a fixed order) and adds into grad_slope once; a shared
 * slope (one value) sums the channels' results in channel order in a
 * second, single-thread kernel, as the CPU does. No atomics: the same bits
 * on every run. x, out and grad_out / grad_x are float32, float16 or
 * bfloat16 (templated over the storage type T, math in float32, results
 * rounded once); slopes and their gradients are float32.
 */
#include "cuda_common.cuh"
#include "activation_math.h"

static __device__ __forceinline__ float slope_at(const float *slope, int64_t nslope, int64_t i, int64_t channels,
                                                 int64_t inner)
{
    return slope ? slope[nslope == 1 ? 0 : (i / inner) % channels] : 0.0f;
}

template <typename T>
static __global__ void act_forward_kernel(T *out, const T *x, int64_t n, int act, const float *slope, int64_t nslope,
                                          int64_t channels, int64_t inner)
{
    FACET_CUDA_FOR(i, n) st(out, i, facet_act_forward(act, ld(x[i]), slope_at(slope, nslope, i, channels, inner)));
}

template <typename T>
static __global__ void act_backward_kernel(T *gx, const T *g, const T *x, const T *y, int64_t n, int act,
                                           const float *slope, int64_t nslope, int64_t channels, int64_t inner)
{
    FACET_CUDA_FOR(i, n)
        st(gx, i, facet_act_backward(act, ld(g[i]), ld(x[i]), y ? ld(y[i]) : 0.0f,
                                     slope_at(slope, nslope, i, channels, inner)));
}

/* dL/dslope_c, one block per channel: added into gs[c], or stored in part[c]
 * when the slope is shared (part != NULL). */
template <typename T>
static __global__ void prelu_slope_kernel(float *gs, float *part, const T *g, const T *x, int64_t outer,
                                          int64_t channels, int64_t inner)
{
    FACET_CUDA_FOR_BLOCK(c, channels) {
        float acc = 0.0f;
        for (int64_t j = threadIdx.x; j < outer * inner; j += blockDim.x) {
            const int64_t o = j / inner, k = j - o * inner, idx = (o * channels + c) * inner + k;
            const float xv = ld(x[idx]);
            if (xv <= 0.0f) acc += ld(g[idx]) * xv;
        }
        acc = block_sum(acc);
        if (threadIdx.x == 0) {
            if (part) part[c] = acc;
            else gs[c] += acc;
        }
    }
}

/* A shared slope: gs[0] += the channels' sums, added in channel order. */
static __global__ void sum_in_order_kernel(float *gs, const float *part, int64_t channels)
{
    float total = 0.0f;
    for (int64_t c = 0; c < channels; c++) total += part[c];
    gs[0] += total;
}

extern "C" int facet_cuda_activation_forward(int dtype, void *out, const void *x, int64_t n, int act,
                                             const float *slope, int64_t nslope, int64_t channels, int64_t inner)
{
    int rc = 0;
    FACET_ACT_DISPATCH(dtype, T,
        rc = launch_flat("facet_cuda_activation_forward", n, act_forward_kernel<T>, (T *)out, (const T *)x, n, act,
                         slope, nslope, channels, inner));
    return rc;
}

template <typename T>
static int activation_backward(float *grad_slope, const T *grad_out, const T *x, int64_t n, int64_t nslope,
                               int64_t channels, int64_t inner)
{
    const char *fn = "facet_cuda_activation_backward";
    const int64_t outer = n / (channels * inner);
    if (nslope != 1)
        return launch_items(fn, channels, FACET_CUDA_THREADS, prelu_slope_kernel<T>, grad_slope, (float *)NULL,
                            grad_out, x, outer, channels, inner);
    scratch part;
    FACET_CUDA_TRY(scratch_alloc(&part, (size_t)channels * sizeof(float), fn));
    int rc = launch_items(fn, channels, FACET_CUDA_THREADS, prelu_slope_kernel<T>, grad_slope, (float *)part.p,
                          grad_out, x, outer, channels, inner);
    if (!rc) {
        sum_in_order_kernel<<<1, 1>>>(grad_slope, (const float *)part.p, channels);
        rc = check_launch(fn);
    }
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
    if (grad_x)
        FACET_ACT_DISPATCH(dtype, T,
            rc = launch_flat(fn, n, act_backward_kernel<T>, (T *)grad_x, (const T *)grad_out, (const T *)x,
                             (const T *)out, n, act, slope, nslope, channels, inner));
    if (rc || !grad_slope) return rc;
    FACET_ACT_DISPATCH(dtype, T,
        rc = activation_backward<T>(grad_slope, (const T *)grad_out, (const T *)x, n, nslope, channels, inner));
    return rc;
}
