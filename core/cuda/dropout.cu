/*
 * dropout.cu - dropout on CUDA (the CPU version is core/src/dropout.c): the
 * mask of element i is activation_math.h's facet_dropout_keep(seed, offset + i),
 * a Philox draw, so a seed gives the same mask, bit for bit, on both devices
 * and for any launch shape. One thread per element.
 */
#include "cuda_common.cuh"
#include "activation_math.h"

static __global__ void dropout_forward_kernel(float *out, unsigned char *mask, const float *x, int64_t n, float p,
                                              float scale, uint64_t seed, uint64_t offset)
{
    FACET_CUDA_FOR(i, n) {
        const unsigned char keep = facet_dropout_keep(seed, offset + (uint64_t)i, p);
        mask[i] = keep;
        out[i] = keep ? x[i] * scale : 0.0f;
    }
}

static __global__ void dropout_backward_kernel(float *gx, const float *g, const unsigned char *mask, int64_t n,
                                               float scale)
{
    FACET_CUDA_FOR(i, n) gx[i] = mask[i] ? g[i] * scale : 0.0f;
}

extern "C" int facet_cuda_dropout_forward(float *out, unsigned char *mask, const float *x, int64_t n, float p,
                                          float scale, uint64_t seed, uint64_t offset)
{
    return launch_flat("facet_cuda_dropout_forward", n, dropout_forward_kernel, out, mask, x, n, p, scale, seed,
                       offset);
}

extern "C" int facet_cuda_dropout_backward(float *grad_x, const float *grad_out, const unsigned char *mask, int64_t n,
                                           float scale)
{
    return launch_flat("facet_cuda_dropout_backward", n, dropout_backward_kernel, grad_x, grad_out, mask, n, scale);
}
