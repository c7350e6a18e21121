/*
 * random.cu - counter-based random fill of a contiguous float32 buffer.
 * Element i is a pure function of (seed, offset + i) through the Philox
 * formulas of random_math.h, the same ones the CPU path calls, whose
 * transforms round alike on both devices (no FMA, the same log and cos
 * polynomials): a seed gives bit-identical streams on both devices, and no
 * generator state exists.
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
    const char *fn = "facet_cuda_rand";
    if (normal) return launch_flat(fn, n, rand_normal_kernel, dst, n, seed, offset, a, b);
    return launch_flat(fn, n, rand_uniform_kernel, dst, n, seed, offset, a, b);
}
