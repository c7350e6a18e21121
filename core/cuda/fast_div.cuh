/*
 * fast_div.cuh - division by a loop-invariant divisor for the kernels' index
 * math: div_by<I> holds a divisor d and gives n / d and n % d for n >= 0.
 * NVIDIA GPUs divide integers in software: a 64-bit division is a routine of
 * dozens of instructions, a 32-bit one a dozen; div_by<uint32_t> replaces the
 * latter by a multiply-high, an add and a shift, from a magic number made
 * once on the host (Granlund and Montgomery's method, as PyTorch's
 * IntDivider). div_by<int64_t> is the plain division, for the kernels' 64-bit
 * path. Nothing here needs CUDA: core/tests/test_fast_div.cpp checks the
 * quotients on the host against the / operator.
 *
 * Why it is exact: with s the least power of two such that 2^s >= d, and
 * m = floor(2^32 (2^s - d) / d) + 1 (below 2^32 because 2^s - d < d), the
 * quotient is floor(n M / 2^(32 + s)) with M = 2^32 + m = floor(2^(32+s) / d) + 1
 * = 2^(32+s) / d + e, 0 < e <= 1; so n M / 2^(32+s) = n / d + n e / 2^(32+s),
 * and for n < 2^31 the excess is below 2^-(s+1) < 1 / d, too little to reach
 * the next integer. umulhi(n, m) + n = floor(n M / 2^32) stays below 2^32 for
 * n < 2^31, and shifting right by s divides by 2^s with floors composing.
 * So: divisors in [1, 2^31), dividends in [0, 2^31).
 */
#ifndef FACET_FAST_DIV_CUH
#define FACET_FAST_DIV_CUH

#include <stdint.h>
#include <type_traits>

#ifdef __CUDACC__
#define FACET_DIV_HD __host__ __device__ __forceinline__
#else
#define FACET_DIV_HD inline
#endif

/* The signed type of an index type's coordinates that may fall below 0
 * (a tap in the padding): int32_t for uint32_t, int64_t for int64_t. */
template <typename I>
using signed_of = typename std::make_signed<I>::type;

template <typename I>
struct div_by;

/* 64-bit: the / operator (n % d comes from the same quotient). */
template <>
struct div_by<int64_t> {
    int64_t d;

    div_by() = default;
    explicit div_by(int64_t divisor) : d(divisor) {}
    FACET_DIV_HD int64_t div(int64_t n) const { return n / d; }
    FACET_DIV_HD int64_t mod(int64_t n) const { return n - div(n) * d; }
};

/* 32-bit: d in [1, 2^31), n in [0, 2^31) (the callers' fits_int32). */
template <>
struct div_by<uint32_t> {
    uint32_t d, m, s;

    div_by() = default;
    explicit div_by(int64_t divisor) : d((uint32_t)divisor), m(0), s(0)
    {
        if (d == 0) return;     /* a divisor of an empty launch: never used */
        while (s < 31 && (1ull << s) < d) s++;
        m = (uint32_t)((((1ull << s) - d) << 32) / d + 1);
    }
    FACET_DIV_HD uint32_t div(uint32_t n) const
    {
#ifdef __CUDA_ARCH__
        const uint32_t hi = __umulhi(n, m);
#else
        const uint32_t hi = (uint32_t)(((uint64_t)n * m) >> 32);
#endif
        return (hi + n) >> s;
    }
    FACET_DIV_HD uint32_t mod(uint32_t n) const { return n - div(n) * d; }
};

#endif
