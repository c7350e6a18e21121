/*
 * random.cu - counter-based random fill of a contiguous float32 buffer.
 * Element i is a pure function of (seed, offset + i) through the Philox
 * formulas of random_math.h, the same ones the CPU path calls, so a seed
 * gives bit-identical streams on both devices and no generator state exists.
 */
#include "cuda_common.cuh"
#include "random_math.h"

static __global__ void rand_uniform_kernel(float *dst, int64_t n, uint64_t seed, uint64_t offset, float low,
                                           float high)
{
    FACET_CUDA_FOR(i, n) dst[i] = facet_rand_uniform_at(seed, offset + (uint64_t)i, low, high);
}

static __global__ void rand_normal_kernel(float *dst, int64_t n, uint64_t seed, uint64_t offset, float mean,
                                          float std)
{
    FACET_CUDA_FOR(i, n) dst[i] = facet_rand_normal_at(seed, offset + (uint64_t)i, mean, std);
}

extern "C" int facet_cuda_rand(float *dst, int64_t n, uint64_t seed, uint64_t offset, int normal, float a,
                               float b)
{
    if (n <= 0) return FACET_STATUS_OK;
    if (normal)
        rand_normal_kernel<<<grid_blocks(n), FACET_CUDA_THREADS>>>(dst, n, seed, offset, a, b);
    else
        rand_uniform_kernel<<<grid_blocks(n), FACET_CUDA_THREADS>>>(dst, n, seed, offset, a, b);
    return check_launch("facet_cuda_rand");
}
