/*
 * half_math.h - float32 <-> float16 (IEEE binary16) and float32 <-> bfloat16
 * conversions, shared by the CPU sources and the CUDA kernels so both give
 * the same bits. Integer arithmetic on the bit patterns only (no hardware
 * conversion instructions, no rounding mode dependence):
 * - float32 -> float16/bfloat16 rounds to nearest, ties to even; results
 *   below the smallest normal become subnormals (or signed zero), results
 *   past the largest finite value become +-inf; +-0 and +-inf map exactly.
 * - NaN stays NaN with its sign and the top bits of its payload that fit
 *   (float16 keeps the top 10 of the 23 payload bits, bfloat16 the top 7), so
 *   a quiet NaN stays quiet and a signalling one signalling; when every kept
 *   bit would be 0 (the NaN would read as inf) the lowest bit is set. This is
 *   NumPy's astype(float16) rule, bit for bit, applied to bfloat16 too.
 * - float16/bfloat16 -> float32 is exact (every value is representable).
 * - facet_half_from_double / facet_bf16_from_double round a double once:
 *   the double is first narrowed to float32 rounding to odd, which keeps the
 *   single final rounding correct (24 >= 11 + 2 bits), so no double rounding.
 */
#ifndef FACET_HALF_MATH_H
#define FACET_HALF_MATH_H

#include <stdint.h>
#ifdef __CUDACC__
#include <cuda_fp16.h>
#endif

#ifndef FACET_HD
#ifdef __CUDACC__
#define FACET_HD static __host__ __device__ __forceinline__
#else
#define FACET_HD static inline
#endif
#endif

/* The bits of a float and back, on either side. A union, not memcpy: the
 * vectoriser keeps it in registers. */
FACET_HD int32_t facet_float_bits(float f)
{
#ifdef __CUDA_ARCH__
    return __float_as_int(f);
#else
    union { float f; int32_t i; } u;
    u.f = f;
    return u.i;
#endif
}

FACET_HD float facet_bits_float(int32_t i)
{
#ifdef __CUDA_ARCH__
    return __int_as_float(i);
#else
    union { int32_t i; float f; } u;
    u.i = i;
    return u.f;
#endif
}

FACET_HD uint32_t facet_f32_bits_u(float f) { return (uint32_t)facet_float_bits(f); }
FACET_HD float facet_u_bits_f32(uint32_t u) { return facet_bits_float((int32_t)u); }

/* ---- float16 ------------------------------------------------------------------ */

FACET_HD uint16_t facet_f32_to_f16_bits(uint32_t x)
{
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t a = x & 0x7fffffffu;
    if (a >= 0x7f800000u) {                    /* inf or NaN */
        if (a == 0x7f800000u) return (uint16_t)(sign | 0x7c00u);
        uint32_t p = (a >> 13) & 0x03ffu;
        return (uint16_t)(sign | 0x7c00u | (p ? p : 1u));
    }
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);   /* rounds to 65520 or more: inf */
    if (a >= 0x38800000u) {                    /* normal float16 (>= 2^-14) */
        uint32_t m = a - 0x38000000u;          /* rebias exponent 127 -> 15 */
        uint32_t r = m + 0x0fffu + ((m >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));   /* a carry into the exponent is right */
    }
    if (a < 0x33000000u) return (uint16_t)sign;   /* below half the smallest subnormal (2^-25): 0 */
    /* subnormal float16: value = mant * 2^(e-150); units of 2^-24 */
    uint32_t e = a >> 23;
    uint32_t mant = (a & 0x007fffffu) | 0x00800000u;
    uint32_t shift = 126u - e;                 /* 14..25 for e in 101..112 */
    uint32_t q = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return (uint16_t)(sign | q);
}

FACET_HD uint32_t facet_f16_to_f32_bits(uint16_t h)
{
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t e = ((uint32_t)h >> 10) & 0x1fu;
    uint32_t m = (uint32_t)h & 0x03ffu;
    if (e == 0x1fu) return sign | 0x7f800000u | (m << 13);
    if (e != 0) return sign | ((e + 112u) << 23) | (m << 13);
    if (m == 0) return sign;
    /* subnormal: normalise */
    uint32_t sh = 0;
    while (!(m & 0x0400u)) {
        m <<= 1;
        sh++;
    }
    return sign | ((113u - sh) << 23) | ((m & 0x03ffu) << 13);
}

/* On the GPU the conversion instructions (cvt.rn.f16.f32, cvt.f32.f16) give
 * these same bits for every value but NaN (IEEE round to nearest even,
 * subnormals, overflow to inf; widening is exact) in one instruction instead
 * of a branchy integer sequence on every 16-bit load and store; a NaN, whose
 * payload the instructions do not keep as NumPy does, takes the integer path. */
FACET_HD uint16_t facet_float_to_half(float f)
{
#ifdef __CUDA_ARCH__
    if ((facet_f32_bits_u(f) & 0x7fffffffu) <= 0x7f800000u) return __half_as_ushort(__float2half_rn(f));   /* not NaN */
#endif
    return facet_f32_to_f16_bits(facet_f32_bits_u(f));
}

FACET_HD float facet_half_to_float(uint16_t h)
{
#ifdef __CUDA_ARCH__
    if ((h & 0x7c00u) != 0x7c00u || !(h & 0x03ffu)) return __half2float(__ushort_as_half(h));   /* not NaN */
#endif
    return facet_u_bits_f32(facet_f16_to_f32_bits(h));
}

/* ---- bfloat16 ----------------------------------------------------------------- */

FACET_HD uint16_t facet_f32_to_bf16_bits(uint32_t x)
{
    if ((x & 0x7fffffffu) > 0x7f800000u) {     /* NaN: truncate the payload, keep it a NaN */
        uint32_t b = x >> 16;
        return (uint16_t)((b & 0x7fu) ? b : (b | 1u));
    }
    /* round to nearest even on the low 16 bits; overflow carries into inf */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

FACET_HD uint32_t facet_bf16_to_f32_bits(uint16_t b) { return (uint32_t)b << 16; }

FACET_HD uint16_t facet_float_to_bf16(float f) { return facet_f32_to_bf16_bits(facet_f32_bits_u(f)); }
FACET_HD float facet_bf16_to_float(uint16_t b) { return facet_u_bits_f32(facet_bf16_to_f32_bits(b)); }

/* ---- from double, rounded once -------------------------------------------------- */

/* double -> float32 rounded to odd: an inexact result gets its last bit set */
FACET_HD float facet_f64_to_f32_odd(double d)
{
    float f = (float)d;
    if (d == d && (double)f != d) {
        uint32_t u = facet_f32_bits_u(f);
        if (!(u & 1u)) {
            /* f is even and inexact: step toward d (both neighbours of d are
             * candidates; the odd one of them is the round-to-odd result) */
            double af = (double)f < 0 ? -(double)f : (double)f, ad = d < 0 ? -d : d;
            u = af > ad ? u - 1u : u + 1u;
            f = facet_u_bits_f32(u);
        }
    }
    return f;
}

FACET_HD uint16_t facet_half_from_double(double d) { return facet_float_to_half(facet_f64_to_f32_odd(d)); }
FACET_HD uint16_t facet_bf16_from_double(double d) { return facet_float_to_bf16(facet_f64_to_f32_odd(d)); }

#endif
