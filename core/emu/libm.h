/*
 * libm.h - the math library as accurate as CUDA documents it, for kernels
 * run by the emulator (force-included into every emulated .cu by the
 * Makefile). On a GPU, expf, logf, powf, ... are CUDA's own, within the
 * maximum errors of the CUDA C Programming Guide's table (expf 2 ulp, powf 8,
 * ...); glibc's are within about 1 ulp. With FACET_EMU_LIBM=cuda each call
 * of a kernel's math function returns glibc's result moved by that many ulps,
 * up or down as a hash of the argument says, so a spec whose tolerance holds
 * only for glibc's rounding fails here instead of on the GPU
 * (docs/cuda-emulator.md). Unset (the default), the results are glibc's.
 */
#ifndef FACET_EMU_LIBM_H
#define FACET_EMU_LIBM_H

#include <math.h>
#include <cmath>

namespace facet_emu {
/* r moved by ulps units in the last place, the direction from the bits of x
 * (and y), when FACET_EMU_LIBM=cuda; r itself otherwise, and for r not finite or 0 */
float libm_f(float r, int ulps, float x, float y);
double libm_d(double r, int ulps, double x, double y);
}

/* the maximum errors, in ulps, of CUDA's versions (the CUDA C Programming
 * Guide, "Mathematical Functions"; the larger figure where versions differ) */
static inline float facet_emu_expf(float x) { return facet_emu::libm_f(::expf(x), 2, x, 0.0f); }
static inline float facet_emu_expm1f(float x) { return facet_emu::libm_f(::expm1f(x), 1, x, 0.0f); }
static inline float facet_emu_logf(float x) { return facet_emu::libm_f(::logf(x), 1, x, 0.0f); }
static inline float facet_emu_powf(float x, float y) { return facet_emu::libm_f(::powf(x, y), 8, x, y); }
static inline float facet_emu_sinf(float x) { return facet_emu::libm_f(::sinf(x), 2, x, 0.0f); }
static inline float facet_emu_cosf(float x) { return facet_emu::libm_f(::cosf(x), 2, x, 0.0f); }
static inline float facet_emu_acosf(float x) { return facet_emu::libm_f(::acosf(x), 3, x, 0.0f); }
static inline float facet_emu_tanhf(float x) { return facet_emu::libm_f(::tanhf(x), 2, x, 0.0f); }
static inline double facet_emu_exp(double x) { return facet_emu::libm_d(::exp(x), 1, x, 0.0); }
static inline double facet_emu_log(double x) { return facet_emu::libm_d(::log(x), 1, x, 0.0); }
static inline double facet_emu_pow(double x, double y) { return facet_emu::libm_d(::pow(x, y), 2, x, y); }
static inline double facet_emu_cos(double x) { return facet_emu::libm_d(::cos(x), 1, x, 0.0); }
static inline double facet_emu_acos(double x) { return facet_emu::libm_d(::acos(x), 1, x, 0.0); }
static inline double facet_emu_tanh(double x) { return facet_emu::libm_d(::tanh(x), 1, x, 0.0); }

#define expf(x) facet_emu_expf(x)
#define expm1f(x) facet_emu_expm1f(x)
#define logf(x) facet_emu_logf(x)
#define powf(x, y) facet_emu_powf(x, y)
#define sinf(x) facet_emu_sinf(x)
#define cosf(x) facet_emu_cosf(x)
#define acosf(x) facet_emu_acosf(x)
#define tanhf(x) facet_emu_tanhf(x)
#define exp(x) facet_emu_exp(x)
#define log(x) facet_emu_log(x)
#define pow(x, y) facet_emu_pow(x, y)
#define cos(x) facet_emu_cos(x)
#define acos(x) facet_emu_acos(x)
#define tanh(x) facet_emu_tanh(x)

#endif
