/*
 * layer_cuda.h - the CUDA entry points of the layer ops (activation, dropout,
 * Adam: core/cuda/activation.cu). Without FACET_WITH_CUDA they are inline
 * functions that report CUDA missing, so no stub file is needed.
 */
#ifndef FACET_LAYER_CUDA_H
#define FACET_LAYER_CUDA_H

#include "internal.h"

struct facet_adam_params;

#ifdef FACET_WITH_CUDA
#ifdef __cplusplus
extern "C" {
#endif
int facet_cuda_activation_forward(float *out, const float *x, int64_t n, int act, const float *slope, int64_t nslope,
                                  int64_t channels, int64_t inner);
int facet_cuda_activation_backward(float *grad_x, float *grad_slope, const float *grad_out, const float *x,
                                   const float *out, int64_t n, int act, const float *slope, int64_t nslope,
                                   int64_t channels, int64_t inner);
int facet_cuda_dropout_forward(float *out, unsigned char *mask, const float *x, int64_t n, float p, float scale,
                               uint64_t seed, uint64_t offset);
int facet_cuda_dropout_backward(float *grad_x, const float *grad_out, const unsigned char *mask, int64_t n, float scale);
int facet_cuda_adam_step(const struct facet_adam_params *p, float *w, float *g, float *m, float *v, int64_t n);
#ifdef __cplusplus
}
#endif
#else
#define FACET_NO_CUDA(what) facet_fail(FACET_STATUS_ERR_DEVICE, "%s: facet was built without CUDA (no nvcc at build time)", what)
static inline int facet_cuda_activation_forward(float *out, const float *x, int64_t n, int act, const float *slope,
                                                int64_t nslope, int64_t channels, int64_t inner)
{ (void)out; (void)x; (void)n; (void)act; (void)slope; (void)nslope; (void)channels; (void)inner;
  return FACET_NO_CUDA("facet_activation_forward"); }
static inline int facet_cuda_activation_backward(float *grad_x, float *grad_slope, const float *grad_out,
                                                 const float *x, const float *out, int64_t n, int act,
                                                 const float *slope, int64_t nslope, int64_t channels, int64_t inner)
{ (void)grad_x; (void)grad_slope; (void)grad_out; (void)x; (void)out; (void)n; (void)act; (void)slope; (void)nslope;
  (void)channels; (void)inner; return FACET_NO_CUDA("facet_activation_backward"); }
static inline int facet_cuda_dropout_forward(float *out, unsigned char *mask, const float *x, int64_t n, float p,
                                             float scale, uint64_t seed, uint64_t offset)
{ (void)out; (void)mask; (void)x; (void)n; (void)p; (void)scale; (void)seed; (void)offset;
  return FACET_NO_CUDA("facet_dropout_forward"); }
static inline int facet_cuda_dropout_backward(float *grad_x, const float *grad_out, const unsigned char *mask,
                                              int64_t n, float scale)
{ (void)grad_x; (void)grad_out; (void)mask; (void)n; (void)scale; return FACET_NO_CUDA("facet_dropout_backward"); }
static inline int facet_cuda_adam_step(const struct facet_adam_params *p, float *w, float *g, float *m, float *v,
                                       int64_t n)
{ (void)p; (void)w; (void)g; (void)m; (void)v; (void)n; return FACET_NO_CUDA("facet_adam_step"); }
#endif

#endif
