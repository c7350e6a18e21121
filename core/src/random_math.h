/*
 * random_math.h - Philox-4x32-10 (Salmon et al., "Parallel random numbers:
 * as easy as 1, 2, 3", SC 2011), shared by CPU and CUDA so a seed gives the
 * same stream on both: element i is a pure function of (seed, offset + i).
 */
#ifndef FACET_RANDOM_MATH_H
#define FACET_RANDOM_MATH_H

#include <stdint.h>
#include <math.h>
#include "elementwise_math.h"

FACET_HD void facet_philox(uint32_t ctr[4], uint32_t k0, uint32_t k1)
{
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * ctr[0];
        uint64_t p1 = (uint64_t)0xCD9E8D57u * ctr[2];
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        uint32_t n0 = hi1 ^ ctr[1] ^ k0;
        uint32_t n2 = hi0 ^ ctr[3] ^ k1;
        ctr[0] = n0; ctr[1] = lo1; ctr[2] = n2; ctr[3] = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
}

/* Two uniform words for counter c under a 64-bit seed. */
FACET_HD void facet_philox_pair(uint64_t seed, uint64_t c, uint32_t *w0, uint32_t *w1)
{
    uint32_t ctr[4] = { (uint32_t)c, (uint32_t)(c >> 32), 0u, 0u };
    facet_philox(ctr, (uint32_t)seed, (uint32_t)(seed >> 32));
    *w0 = ctr[0];
    *w1 = ctr[1];
}

/* [0, 1) with 24 bits, exact in float32. */
FACET_HD float facet_uniform01(uint32_t w) { return (float)(w >> 8) * (1.0f / 16777216.0f); }

FACET_HD float facet_rand_uniform_at(uint64_t seed, uint64_t c, float low, float high)
{
    uint32_t w0, w1;
    facet_philox_pair(seed, c, &w0, &w1);
    return low + (high - low) * facet_uniform01(w0);
}

/* Box-Muller on the counter's two words; u1 in (0, 1] keeps log finite. */
FACET_HD float facet_rand_normal_at(uint64_t seed, uint64_t c, float mean, float std)
{
    uint32_t w0, w1;
    facet_philox_pair(seed, c, &w0, &w1);
    float u1 = ((float)(w0 >> 8) + 1.0f) * (1.0f / 16777216.0f);
    float u2 = facet_uniform01(w1);
    float r = sqrtf(-2.0f * logf(u1));
    return mean + std * r * cosf(6.2831853071795864f * u2);
}

#endif
