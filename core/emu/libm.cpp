/*
 * libm.cpp - FACET_EMU_LIBM=cuda: kernels' math functions with CUDA's
 * documented errors (libm.h).
 */
#include <math.h>
#include <cmath>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

namespace facet_emu {

static bool cuda_errors()
{
    static const bool on = [] {
        const char *v = getenv("FACET_EMU_LIBM");
        return v && strcmp(v, "cuda") == 0;
    }();
    return on;
}

/* one bit of a 64-bit mix of the arguments' bits: up or down */
static bool upward(uint64_t a, uint64_t b)
{
    uint64_t h = a * 0x9e3779b97f4a7c15ull ^ (b + 0x632be59bd9b4e019ull);
    h ^= h >> 31;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 29;
    return h & 1;
}

/* r moved by ulps steps toward +inf or -inf (U: the unsigned integer of F's bits) */
template <typename F, typename U>
static F moved(F r, int ulps, F x, F y)
{
    if (!cuda_errors() || !std::isfinite(r) || r == (F)0) return r;
    U bx, by;
    memcpy(&bx, &x, sizeof bx);
    memcpy(&by, &y, sizeof by);
    const F to = upward(bx, by) ? (F)INFINITY : -(F)INFINITY;
    for (int i = 0; i < ulps; i++) r = std::nextafter(r, to);
    return r;
}

float libm_f(float r, int ulps, float x, float y) { return moved<float, uint32_t>(r, ulps, x, y); }
double libm_d(double r, int ulps, double x, double y) { return moved<double, uint64_t>(r, ulps, x, y); }

}
