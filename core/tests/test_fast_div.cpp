/*
 * test_fast_div.cpp - core/cuda/fast_div.cuh's division by a fixed divisor,
 * checked on the host against the / and % operators: every divisor up to
 * 2^16 and every power of two and its neighbours up to 2^31 - 1, plus
 * pseudo-random divisors, each with the dividends where an error would show
 * (0, small ones, the multiples of d and their neighbours at both ends of the
 * range, 2^31 - 1) and pseudo-random ones; every dividend below 2^20 for the
 * divisors up to 64; and the 64-bit path on the same values. Each of the
 * four groups passes or fails as one test; the first mismatches are printed.
 * `--counts FILE` writes "passed failed" for the spec summary, as
 * test_cache_alloc does.
 *
 * Build and run: g++ -std=c++17 -O2 -Icore/cuda core/tests/test_fast_div.cpp -o build/test_fast_div && build/test_fast_div
 */
#include "fast_div.cuh"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <initializer_list>
#include "test_counts.h"

static const uint32_t TOP = 0x7fffffffu;    /* the largest dividend and divisor: 2^31 - 1 */
static long long checked, mismatches;
static int passed, failed;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

/* splitmix64: a fixed sequence, so a failure repeats */
static uint64_t next_random(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void check(const div_by<uint32_t> &f, const div_by<int64_t> &g, uint32_t d, uint32_t n)
{
    if (n > TOP) return;
    const uint32_t q = f.div(n), r = f.mod(n);
    const int64_t q64 = g.div(n), r64 = g.mod(n);
    checked++;
    if (q == n / d && r == n % d && q64 == (int64_t)(n / d) && r64 == (int64_t)(n % d)) return;
    if (mismatches++ < 10)
        printf("FAIL: %u / %u: 32-bit %u rem %u, 64-bit %lld rem %lld, expected %u rem %u (m %u, s %u)\n", n, d, q,
               r, (long long)q64, (long long)r64, n / d, n % d, f.m, f.s);
}

/* One group of checks: a test that fails when any of its checks did. */
static void group(const char *name, long long before)
{
    if (mismatches == before) {
        passed++;
        printf("ok %s\n", name);
    } else {
        failed++;
        printf("FAIL %s: %lld mismatches\n", name, mismatches - before);
    }
}

/* The dividends that test d: the ends, the multiples of d near both ends
 * and their neighbours, and random ones. */
static void check_divisor(uint32_t d)
{
    const div_by<uint32_t> f(d);
    const div_by<int64_t> g(d);
    for (uint32_t n = 0; n < 64; n++) check(f, g, d, n);
    for (uint32_t n = TOP - 64; n < TOP; n++) check(f, g, d, n);
    check(f, g, d, TOP);
    const uint32_t qmax = TOP / d;
    for (uint32_t k = 1; k <= 8; k++) {
        for (uint64_t q : { (uint64_t)k, (uint64_t)qmax + 1 - k }) {
            const uint64_t n = q * d;
            if (n > TOP) continue;
            check(f, g, d, (uint32_t)n);
            check(f, g, d, (uint32_t)(n - 1));
            if (n < TOP) check(f, g, d, (uint32_t)(n + 1));
            if (n + d - 1 <= TOP) check(f, g, d, (uint32_t)(n + d - 1));
        }
    }
    for (int k = 0; k < 64; k++) check(f, g, d, (uint32_t)(next_random() & TOP));
}

int main(int argc, char **argv)
{
    const char *counts = test_counts_path(argc, argv);
    long long before = mismatches;
    for (uint32_t d = 1; d <= 65536; d++) check_divisor(d);
    group("every divisor up to 2^16", before);
    before = mismatches;
    for (int b = 17; b <= 31; b++) {
        const uint32_t p = (uint32_t)1 << b;
        for (uint32_t d : { p - 2, p - 1, p, p + 1, p + 2 })
            if (d >= 1 && d <= TOP) check_divisor(d);
    }
    group("powers of two and their neighbours up to 2^31 - 1", before);
    before = mismatches;
    for (int k = 0; k < 20000; k++) {
        const uint32_t d = (uint32_t)(next_random() % TOP) + 1;
        check_divisor(d);
    }
    group("20000 random divisors", before);
    /* every dividend below 2^20 for the small divisors (strides, kernel sizes, widths) */
    before = mismatches;
    for (uint32_t d = 1; d <= 64; d++) {
        const div_by<uint32_t> f(d);
        const div_by<int64_t> g(d);
        for (uint32_t n = 0; n < (1u << 20); n++) check(f, g, d, n);
    }
    group("every dividend below 2^20 for divisors up to 64", before);
    printf("test_fast_div: %lld quotients and remainders checked, %lld wrong; %d passed, %d failed\n", checked,
           mismatches, passed, failed);
    test_counts_write(counts, passed, failed);
    return failed ? 1 : 0;
}
