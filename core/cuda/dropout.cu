/*
 * dropout.cu - dropout on CUDA (the CPU version is core/src/dropout.c): the
 * mask of element i is activation_math.h's facet_dropout_keep(seed, offset + i),
 * a Philox draw, so a seed gives the same mask, bit for bit, on both devices
 * and for any launch shape. One thread per element. x / out and grad_out /
 * grad_x are float32, float16 or bfloat16 (templated over the storage type T,
 * the product in float32, rounded once), so a 16-bit result is the CPU's.
 */
#include "cuda_common.cuh"
#include "activation_math.h"

template <typename T>
static __global__ void dropout_forward_kernel(T *out, unsigned char *mask, const T *x, int64_t n, float p, float scale,
                                              uint64_t seed, uint64_t offset)
{
    FACET_CUDA_FOR(i, n) {
        const unsigned char keep = facet_dropout_keep(seed, offset + (uint64_t)i, p);
        mask[i] = keep;
        st(out, i, keep ? ld(x[i]) * scale : 0.0f);
    }
}

template <typename T>
static __global__ void dropout_backward_kernel(T *gx, const T *g, const unsigned char *mask, int64_t n, float scale)
{
    FACET_CUDA_FOR(i, n) st(gx, i, mask[i] ? ld(g[i]) * scale : 0.0f);
}

extern "C" int facet_cuda_dropout_forward(int dtype, void *out, unsigned char *mask, const void *x, int64_t n, float p,
                                          float scale, uint64_t seed, uint64_t offset)
{
    int rc = 0;
    FACET_ACT_DISPATCH(dtype, T,
        rc = launch_flat("facet_cuda_dropout_forward", n, dropout_forward_kernel<T>, (T *)out, mask, (const T *)x, n,
                         p, scale, seed, offset));
    return rc;
}

extern "C" int facet_cuda_dropout_backward(int dtype, void *grad_x, const void *grad_out, const unsigned char *mask,
                                           int64_t n, float scale)
{
    int rc = 0;
    FACET_ACT_DISPATCH(dtype, T,
        rc = launch_flat("facet_cuda_dropout_backward", n, dropout_backward_kernel<T>, (T *)grad_x,
                         (const T *)grad_out, mask, n, scale));
    return rc;
}
