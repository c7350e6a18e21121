/*
 * elementwise_math.h - per-element formulas shared by the CPU loops and the
 * CUDA kernels, so CPU specs test the same code the GPU runs.
 */
#ifndef FACET_ELEMENTWISE_MATH_H
#define FACET_ELEMENTWISE_MATH_H

#include <math.h>
#include <stdint.h>
#include "facet.h"

#ifdef __CUDACC__
#define FACET_HD static __host__ __device__ __forceinline__
#else
#define FACET_HD static inline
#endif
#include "half_math.h"

/* Products and sums rounded one at a time. nvcc contracts a * b + c into one
 * FMA in device code (--fmad=true, its default), GCC does not in ISO C mode
 * (-std=c11 implies -ffp-contract=off): a formula that must give the same bits
 * on the CPU and the GPU spells its multiply-adds with these. Lone +, -, /
 * and sqrtf are IEEE-rounded on both sides already (nvcc's defaults
 * -prec-div=true, -prec-sqrt=true). */
/* The CUDA emulator's nvcc-like build (FACET_EMU_FMAD: kernels compiled with
 * -mfma -ffp-contract=fast, docs/cuda-emulator.md) contracts as nvcc does;
 * an empty asm on a product and on a sum's operands keeps these roundings
 * there, as __fmul_rn / __fadd_rn do on the GPU. */
#if !defined(__CUDA_ARCH__) && defined(FACET_EMU_FMAD) && defined(__x86_64__)
#define FACET_RN_KEEP(v) __asm__("" : "+x"(v))
#elif !defined(__CUDA_ARCH__) && defined(FACET_EMU_FMAD)
#define FACET_RN_KEEP(v) __asm__("" : "+m"(v))
#else
#define FACET_RN_KEEP(v) ((void)0)
#endif

FACET_HD float facet_mul_rn(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    float r = a * b;
    FACET_RN_KEEP(r);
    return r;
#endif
}

FACET_HD float facet_add_rn(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    FACET_RN_KEEP(a);
    FACET_RN_KEEP(b);
    return a + b;
#endif
}

FACET_HD double facet_dmul_rn(double a, double b)
{
#ifdef __CUDA_ARCH__
    return __dmul_rn(a, b);
#else
    double r = a * b;
    FACET_RN_KEEP(r);
    return r;
#endif
}

FACET_HD double facet_dadd_rn(double a, double b)
{
#ifdef __CUDA_ARCH__
    return __dadd_rn(a, b);
#else
    FACET_RN_KEEP(a);
    FACET_RN_KEEP(b);
    return a + b;
#endif
}

/* a * b + c, rounded twice (never an FMA) */
FACET_HD float facet_madd_rn(float a, float b, float c) { return facet_add_rn(facet_mul_rn(a, b), c); }

/* facet_float_bits / facet_bits_float: half_math.h */

FACET_HD float facet_unary_f32(int op, float x, float a, float b)
{
    switch (op) {
    case FACET_UNARY_NEG: return -x;
    case FACET_UNARY_EXP: return expf(x);
    case FACET_UNARY_LOG: return logf(x);
    case FACET_UNARY_SQRT: return sqrtf(x);
    case FACET_UNARY_ABS: return fabsf(x);
    case FACET_UNARY_CLAMP: return fminf(fmaxf(x, a), b);
    case FACET_UNARY_ADD: return x + a;
    case FACET_UNARY_MUL: return x * a;
    case FACET_UNARY_RSUB: return a - x;
    case FACET_UNARY_RDIV: return a / x;
    case FACET_UNARY_POW: return a == 2.0f ? x * x : powf(x, a);
    case FACET_UNARY_SQUARE: return x * x;
    case FACET_UNARY_RSQRT: return 1.0f / sqrtf(x);
    case FACET_UNARY_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case FACET_UNARY_TANH: return tanhf(x);
    case FACET_UNARY_RELU: return x > 0.0f ? x : 0.0f;
    case FACET_UNARY_SIGN: return (float)((x > 0.0f) - (x < 0.0f));
    case FACET_UNARY_COS: return cosf(x);
    case FACET_UNARY_SIN: return sinf(x);
    /* clamped so rounding just outside [-1, 1] does not give NaN */
    case FACET_UNARY_ACOS: return acosf(fminf(fmaxf(x, -1.0f), 1.0f));
    case FACET_UNARY_FLOOR: return floorf(x);
    default: return x;
    }
}

FACET_HD double facet_unary_f64(int op, double x, double a, double b)
{
    switch (op) {
    case FACET_UNARY_NEG: return -x;
    case FACET_UNARY_EXP: return exp(x);
    case FACET_UNARY_LOG: return log(x);
    case FACET_UNARY_SQRT: return sqrt(x);
    case FACET_UNARY_ABS: return fabs(x);
    case FACET_UNARY_CLAMP: return fmin(fmax(x, a), b);
    case FACET_UNARY_ADD: return x + a;
    case FACET_UNARY_MUL: return x * a;
    case FACET_UNARY_RSUB: return a - x;
    case FACET_UNARY_RDIV: return a / x;
    case FACET_UNARY_POW: return pow(x, a);
    case FACET_UNARY_SQUARE: return x * x;
    case FACET_UNARY_RSQRT: return 1.0 / sqrt(x);
    case FACET_UNARY_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case FACET_UNARY_TANH: return tanh(x);
    case FACET_UNARY_RELU: return x > 0.0 ? x : 0.0;
    case FACET_UNARY_SIGN: return (double)((x > 0.0) - (x < 0.0));
    case FACET_UNARY_COS: return cos(x);
    case FACET_UNARY_SIN: return sin(x);
    case FACET_UNARY_ACOS: return acos(fmin(fmax(x, -1.0), 1.0));
    case FACET_UNARY_FLOOR: return floor(x);
    default: return x;
    }
}

FACET_HD float facet_binary_f32(int op, float x, float y)
{
    switch (op) {
    case FACET_BINARY_ADD: return x + y;
    case FACET_BINARY_SUB: return x - y;
    case FACET_BINARY_MUL: return x * y;
    case FACET_BINARY_DIV: return x / y;
    case FACET_BINARY_MAX: return fmaxf(x, y);
    case FACET_BINARY_MIN: return fminf(x, y);
    case FACET_BINARY_POW: return powf(x, y);
    case FACET_BINARY_EQ: return x == y ? 1.0f : 0.0f;
    case FACET_BINARY_LT: return x < y ? 1.0f : 0.0f;
    case FACET_BINARY_GT: return x > y ? 1.0f : 0.0f;
    default: return x;
    }
}

FACET_HD double facet_binary_f64(int op, double x, double y)
{
    switch (op) {
    case FACET_BINARY_ADD: return x + y;
    case FACET_BINARY_SUB: return x - y;
    case FACET_BINARY_MUL: return x * y;
    case FACET_BINARY_DIV: return x / y;
    case FACET_BINARY_MAX: return fmax(x, y);
    case FACET_BINARY_MIN: return fmin(x, y);
    case FACET_BINARY_POW: return pow(x, y);
    case FACET_BINARY_EQ: return x == y ? 1.0 : 0.0;
    case FACET_BINARY_LT: return x < y ? 1.0 : 0.0;
    case FACET_BINARY_GT: return x > y ? 1.0 : 0.0;
    default: return x;
    }
}

/* Loads and stores through a dtype tag, for the integer and conversion paths.
 * Integer stores truncate toward zero and saturate, so a NaN or huge value
 * never becomes UB; float16/bfloat16 stores round the double once. */
FACET_HD double facet_load(const void *p, int dtype, int64_t i)
{
    switch (dtype) {
    case FACET_DTYPE_FLOAT32: return (double)((const float *)p)[i];
    case FACET_DTYPE_INT32: return (double)((const int32_t *)p)[i];
    case FACET_DTYPE_INT64: return (double)((const int64_t *)p)[i];
    case FACET_DTYPE_UINT8: return (double)((const uint8_t *)p)[i];
    case FACET_DTYPE_FLOAT16: return (double)facet_half_to_float(((const uint16_t *)p)[i]);
    case FACET_DTYPE_BFLOAT16: return (double)facet_bf16_to_float(((const uint16_t *)p)[i]);
    default: return 0.0;
    }
}

FACET_HD double facet_saturate(double v, double lo, double hi)
{
    if (!(v == v)) return 0.0;      /* NaN */
    return v < lo ? lo : (v > hi ? hi : v);
}

FACET_HD void facet_store(void *p, int dtype, int64_t i, double v)
{
    switch (dtype) {
    case FACET_DTYPE_FLOAT32: ((float *)p)[i] = (float)v; break;
    case FACET_DTYPE_INT32: ((int32_t *)p)[i] = (int32_t)facet_saturate(v, -2147483648.0, 2147483647.0); break;
    case FACET_DTYPE_INT64: ((int64_t *)p)[i] = (int64_t)facet_saturate(v, -9223372036854775808.0, 9223372036854774784.0); break;
    case FACET_DTYPE_UINT8: ((uint8_t *)p)[i] = (uint8_t)facet_saturate(v, 0.0, 255.0); break;
    case FACET_DTYPE_FLOAT16: ((uint16_t *)p)[i] = facet_half_from_double(v); break;
    case FACET_DTYPE_BFLOAT16: ((uint16_t *)p)[i] = facet_bf16_from_double(v); break;
    default: break;
    }
}

/* The 16-bit float dtypes compute in float32: load widens exactly, store
 * rounds once to nearest even (half_math.h). */
FACET_HD int facet_dtype_is_half(int dtype)
{
    return dtype == FACET_DTYPE_FLOAT16 || dtype == FACET_DTYPE_BFLOAT16;
}

FACET_HD float facet_load_half(const void *p, int dtype, int64_t i)
{
    uint16_t h = ((const uint16_t *)p)[i];
    return dtype == FACET_DTYPE_FLOAT16 ? facet_half_to_float(h) : facet_bf16_to_float(h);
}

FACET_HD void facet_store_half(void *p, int dtype, int64_t i, float v)
{
    ((uint16_t *)p)[i] = dtype == FACET_DTYPE_FLOAT16 ? facet_float_to_half(v) : facet_float_to_bf16(v);
}

/* NaN or +-inf: the exponent bits all set (exact whatever the compiler's
 * floating-point flags; facet_amp_unscale's test). */
FACET_HD int facet_nonfinite(float v)
{
    return ((uint32_t)facet_float_bits(v) & 0x7f800000u) == 0x7f800000u;
}

/* Row L2 normalisation: the scale applied to a row with squared norm ss. */
FACET_HD float facet_l2_scale(float ss, float eps)
{
    float n = sqrtf(ss);
    return 1.0f / (n > eps ? n : eps);
}

#endif
