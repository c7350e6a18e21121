/*
 * libm.cpp - FACET_EMU_LIBM=cuda: kernels' math functions with CUDA's
 * documented errors (libm.h).
 */
#include <math.h>
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

float libm_f(float r, int ulps, float x, float y)
{
    if (!cuda_errors() || !isfinite(r) || r == 0.0f) return r;
    uint32_t bx, by;
    memcpy(&bx, &x, 4);
    memcpy(&by, &y, 4);
    const float to = upward(bx, by) ? INFINITY : -INFINITY;
    for (int i = 0; i < ulps; i++) r = nextafterf(r, to);
    return r;
}

double libm_d(double r, int ulps, double x, double y)
{
    if (!cuda_errors() || !isfinite(r) || r == 0.0) return r;
    uint64_t bx, by;
    memcpy(&bx, &x, 8);
    memcpy(&by, &y, 8);
    const double to = upward(bx, by) ? INFINITY : -INFINITY;
    for (int i = 0; i < ulps; i++) r = nextafter(r, to);
    return r;
}

}
