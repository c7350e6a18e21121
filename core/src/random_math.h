/*
 * random_math.h - Philox-4x32-10 (Salmon et al., "Parallel random numbers:
 * as easy as 1, 2, 3", SC 2011), shared by CPU and CUDA so a seed gives the
 * same stream on both: element i is a pure function of (seed, offset + i),
 * and the uniform and normal transforms round alike on both devices.
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

/* ---- the same bits on both devices ----------------------------------------------------
 * The draws are transformed with IEEE-rounded +, -, *, / and sqrtf only,
 * each multiply-add spelled with facet_mul_rn / facet_add_rn (no FMA on the
 * GPU), and log and cos are the polynomials below rather than libm's or
 * CUDA's (whose last bits differ): a seed gives the same float32 values on
 * the CPU and the GPU, bit for bit. */

/* log(x) for x a positive normal float (Cephes' logf: x = 2^e m with m in
 * [sqrt(1/2), sqrt(2)), log(1 + f) by a degree-9 polynomial; about 1 ulp). */
FACET_HD float facet_log_rn(float x)
{
    const int32_t bits = facet_float_bits(x);
    int32_t e = ((bits >> 23) & 0xff) - 126;                    /* x = m 2^e, m in [0.5, 1) */
    float m = facet_bits_float((bits & 0x007fffff) | 0x3f000000);
    float f;
    if (m < 0.70710678118654752440f) {
        e -= 1;
        f = (m + m) - 1.0f;                                      /* exact */
    } else {
        f = m - 1.0f;                                            /* exact */
    }
    const float z = facet_mul_rn(f, f);
    float y = 7.0376836292e-2f;
    y = facet_madd_rn(y, f, -1.1514610310e-1f);
    y = facet_madd_rn(y, f, 1.1676998740e-1f);
    y = facet_madd_rn(y, f, -1.2420140846e-1f);
    y = facet_madd_rn(y, f, 1.4249322787e-1f);
    y = facet_madd_rn(y, f, -1.6668057665e-1f);
    y = facet_madd_rn(y, f, 2.0000714765e-1f);
    y = facet_madd_rn(y, f, -2.4999993993e-1f);
    y = facet_madd_rn(y, f, 3.3333331174e-1f);
    y = facet_mul_rn(facet_mul_rn(y, f), z);
    const float fe = (float)e;
    y = facet_madd_rn(-2.12194440e-4f, fe, y);                   /* ln 2 in two parts */
    y = facet_madd_rn(-0.5f, z, y);
    return facet_madd_rn(0.693359375f, fe, facet_add_rn(f, y));
}

/* cos(2 pi u) for u in [0, 1) a multiple of 2^-24: the quadrant q = round(4u)
 * and the rest r = 4u - q in [-1/2, 1/2] are exact, then cos or sin of
 * a = r pi/2 in [-pi/4, pi/4] by Cephes' cosf / sinf polynomials. */
FACET_HD float facet_cos_2pi_rn(float u)
{
    const float y = u * 4.0f;                                    /* exact */
    const int q = (int)(y + 0.5f);                               /* 0..4; the sum is exact */
    const float a = facet_mul_rn(y - (float)q, 1.57079632679489662f);
    const float z = facet_mul_rn(a, a);
    if (q & 1) {
        float s = -1.9515295891e-4f;
        s = facet_madd_rn(s, z, 8.3321608736e-3f);
        s = facet_madd_rn(s, z, -1.6666654611e-1f);
        s = facet_madd_rn(facet_mul_rn(s, z), a, a);             /* sin a */
        return q == 1 ? -s : s;                                  /* cos(pi/2 + a), cos(3pi/2 + a) */
    }
    float c = 2.443315711809948e-5f;
    c = facet_madd_rn(c, z, -1.388731625493765e-3f);
    c = facet_madd_rn(c, z, 4.166664568298827e-2f);
    c = facet_add_rn(facet_add_rn(facet_mul_rn(facet_mul_rn(c, z), z), -facet_mul_rn(0.5f, z)), 1.0f);  /* cos a */
    return q == 2 ? -c : c;
}

FACET_HD float facet_rand_uniform_at(uint64_t seed, uint64_t c, float low, float high)
{
    uint32_t w0, w1;
    facet_philox_pair(seed, c, &w0, &w1);
    return facet_madd_rn(high - low, facet_uniform01(w0), low);
}

/* Box-Muller on the counter's two words; u1 in (0, 1] keeps log finite. */
FACET_HD float facet_rand_normal_at(uint64_t seed, uint64_t c, float mean, float std)
{
    uint32_t w0, w1;
    facet_philox_pair(seed, c, &w0, &w1);
    float u1 = ((float)(w0 >> 8) + 1.0f) * (1.0f / 16777216.0f);
    float u2 = facet_uniform01(w1);
    float r = sqrtf(facet_mul_rn(-2.0f, facet_log_rn(u1)));
    return facet_madd_rn(facet_mul_rn(std, r), facet_cos_2pi_rn(u2), mean);
}

#endif
