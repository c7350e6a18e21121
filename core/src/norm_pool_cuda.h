/*
 * norm_pool_cuda.h - the CUDA entry points of batch normalisation, 2-D
 * pooling and upsampling (core/cuda/batchnorm.cu, pool.cu, upsample.cu).
 * Arguments reach them checked by the C side (batchnorm.c, pool.c,
 * upsample.c): CUDA pointers to contiguous float32 data, consistent sizes.
 *
 * The declarations are visible to C when FACET_WITH_CUDA is defined and to
 * nvcc (__CUDACC__, which compiles the .cu files without that define); a C
 * build without CUDA gets static inline functions that report CUDA missing,
 * so no stub file is needed.
 */
#ifndef FACET_NORM_POOL_CUDA_H
#define FACET_NORM_POOL_CUDA_H

#include "internal.h"
#include <math.h>

/* The geometry of a pooling call, filled in by pool.c. planes = N * C. */
struct facet_pool_geom {
    int64_t planes, h, w, ho, wo;
    int64_t kh, kw, sh, sw, ph, pw;
    int count_pad;
};

/* Source coordinates of upsampling, shared by the CPU and CUDA code so both
 * pick the same pixels: PyTorch's float formulas (F.interpolate with an output
 * size). In device code the products and sums are rounded one at a time, as
 * the host compiles them (no FMA contraction), so a floor never differs. */
#ifdef __CUDACC__
#define FACET_UPS_FN static __host__ __device__ __forceinline__
#else
#define FACET_UPS_FN static inline
#endif

FACET_UPS_FN float facet_ups_mul(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

FACET_UPS_FN float facet_ups_add(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

/* Nearest: src = min(floor(dst * (in / out)), in - 1), with PyTorch's exact
 * shortcuts for equal size and for doubling. */
FACET_UPS_FN int64_t facet_ups_nearest(int64_t dst, int64_t in, int64_t out)
{
    if (out == in) return dst;
    if (out == 2 * in) return dst >> 1;
    const float scale = (float)in / (float)out;
    const int64_t s = (int64_t)floorf(facet_ups_mul((float)dst, scale));
    return s < in - 1 ? s : in - 1;
}

/* Bilinear along one axis: the two source indices and the weight of the
 * second. align_corners maps the corner pixels' centres onto each other
 * (scale (in-1)/(out-1)); otherwise src = (dst + 0.5) in/out - 0.5, clamped
 * at 0. Equal sizes are the identity. */
FACET_UPS_FN void facet_ups_linear(int64_t dst, int64_t in, int64_t out, int align_corners, int64_t *i0, int64_t *i1,
                                   float *lambda1)
{
    if (out == in) {
        *i0 = *i1 = dst;
        *lambda1 = 0.0f;
        return;
    }
    float src;
    if (align_corners) {
        const float scale = out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f;
        src = facet_ups_mul(scale, (float)dst);
    } else {
        const float scale = (float)in / (float)out;
        src = facet_ups_add(facet_ups_mul(scale, facet_ups_add((float)dst, 0.5f)), -0.5f);
        if (src < 0.0f) src = 0.0f;
    }
    int64_t i = (int64_t)floorf(src);
    if (i > in - 1) i = in - 1;
    float l = src - (float)i;
    l = l < 0.0f ? 0.0f : (l > 1.0f ? 1.0f : l);
    *i0 = i;
    *i1 = i < in - 1 ? i + 1 : i;
    *lambda1 = l;
}

#ifdef __cplusplus
extern "C" {
#endif

#if defined(FACET_WITH_CUDA) || defined(__CUDACC__)
/* x is [n, c, hw]; save_*, running_*, weight, bias may be NULL as the API allows. */
int facet_cuda_batchnorm_forward(float *out, float *save_mean, float *save_invstd, float *running_mean,
                                 float *running_var, const float *x, const float *weight, const float *bias,
                                 int64_t n, int64_t c, int64_t hw, int training, double momentum, double eps);
int facet_cuda_batchnorm_backward(float *grad_x, float *grad_weight, float *grad_bias, const float *grad_out,
                                  const float *x, const float *weight, const float *save_mean,
                                  const float *save_invstd, int64_t n, int64_t c, int64_t hw, int training);
/* argmax may be NULL (max pooling without backward, or average pooling). */
int facet_cuda_pool2d_forward(float *out, int32_t *argmax, const float *x, int kind, const struct facet_pool_geom *g);
int facet_cuda_pool2d_backward(float *grad_x, const float *grad_out, const int32_t *argmax, int kind,
                               const struct facet_pool_geom *g);
int facet_cuda_upsample2d_forward(float *out, const float *x, int64_t planes, int64_t h, int64_t w, int64_t ho,
                                  int64_t wo, int mode, int align_corners);
int facet_cuda_upsample2d_backward(float *grad_x, const float *grad_out, int64_t planes, int64_t h, int64_t w,
                                   int64_t ho, int64_t wo, int mode, int align_corners);
#else
#define FACET_NORM_POOL_NO_CUDA(what) \
    facet_fail(FACET_STATUS_ERR_DEVICE, "%s: facet was built without CUDA (no nvcc at build time)", what)
static inline int facet_cuda_batchnorm_forward(float *out, float *save_mean, float *save_invstd, float *running_mean,
                                               float *running_var, const float *x, const float *weight,
                                               const float *bias, int64_t n, int64_t c, int64_t hw, int training,
                                               double momentum, double eps)
{ (void)out; (void)save_mean; (void)save_invstd; (void)running_mean; (void)running_var; (void)x; (void)weight;
  (void)bias; (void)n; (void)c; (void)hw; (void)training; (void)momentum; (void)eps;
  return FACET_NORM_POOL_NO_CUDA("facet_batchnorm_forward"); }
static inline int facet_cuda_batchnorm_backward(float *grad_x, float *grad_weight, float *grad_bias,
                                                const float *grad_out, const float *x, const float *weight,
                                                const float *save_mean, const float *save_invstd, int64_t n,
                                                int64_t c, int64_t hw, int training)
{ (void)grad_x; (void)grad_weight; (void)grad_bias; (void)grad_out; (void)x; (void)weight; (void)save_mean;
  (void)save_invstd; (void)n; (void)c; (void)hw; (void)training;
  return FACET_NORM_POOL_NO_CUDA("facet_batchnorm_backward"); }
static inline int facet_cuda_pool2d_forward(float *out, int32_t *argmax, const float *x, int kind,
                                            const struct facet_pool_geom *g)
{ (void)out; (void)argmax; (void)x; (void)kind; (void)g; return FACET_NORM_POOL_NO_CUDA("facet_pool2d_forward"); }
static inline int facet_cuda_pool2d_backward(float *grad_x, const float *grad_out, const int32_t *argmax, int kind,
                                             const struct facet_pool_geom *g)
{ (void)grad_x; (void)grad_out; (void)argmax; (void)kind; (void)g;
  return FACET_NORM_POOL_NO_CUDA("facet_pool2d_backward"); }
static inline int facet_cuda_upsample2d_forward(float *out, const float *x, int64_t planes, int64_t h, int64_t w,
                                                int64_t ho, int64_t wo, int mode, int align_corners)
{ (void)out; (void)x; (void)planes; (void)h; (void)w; (void)ho; (void)wo; (void)mode; (void)align_corners;
  return FACET_NORM_POOL_NO_CUDA("facet_upsample2d_forward"); }
static inline int facet_cuda_upsample2d_backward(float *grad_x, const float *grad_out, int64_t planes, int64_t h,
                                                 int64_t w, int64_t ho, int64_t wo, int mode, int align_corners)
{ (void)grad_x; (void)grad_out; (void)planes; (void)h; (void)w; (void)ho; (void)wo; (void)mode; (void)align_corners;
  return FACET_NORM_POOL_NO_CUDA("facet_upsample2d_backward"); }
#endif

#ifdef __cplusplus
}
#endif

#endif
