/*
 * cuda_backend.h - the CUDA backend as the C core sees it: every entry point
 * of core/cuda/ (one .cu per concept), declared once. A build with nvcc
 * compiles core/cuda/; a build without it links core/src/cuda_absent.c
 * instead, which reports zero devices and fails every device operation with
 * FACET_STATUS_ERR_DEVICE ("built without CUDA"). The choice is the
 * Makefile's (FACET_CUDA); no source file tests a macro for it.
 *
 * Contracts: each function returns a status and sets the error itself. The
 * C side has checked every argument first: pointers are CUDA device memory
 * (host memory where a parameter says so), dtypes and shapes are what the
 * CPU path would accept, index values lie in range. Work is queued on the
 * legacy default stream, so it is ordered with every other call; only
 * facet_cuda_sync and device-to-host copies wait for it.
 *
 * The formulas live in the *_math.h headers (static inline, host and device),
 * shared with the CPU code, so the CPU specs test the math the GPU runs;
 * docs/gpu.md lists them and what has run on a GPU.
 */
#ifndef FACET_CUDA_BACKEND_H
#define FACET_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include "facet.h"

#ifdef __cplusplus
extern "C" {
#endif

struct facet_nd;
struct facet_head;
struct facet_head_params;
struct facet_sgd_params;
struct facet_adam_params;
struct facet_conv_geom;
struct facet_pool_geom;
struct facet_index_plan;

/* ---- runtime (runtime.cu) ---------------------------------------------------------------- */
int facet_cuda_count(int *count);       /* 0, not an error, without a driver or a GPU */
int facet_cuda_name(int device, char *name, size_t size, int64_t *memory);   /* device checked by the caller */
int facet_cuda_is_built(void);
int facet_cuda_sync(void);
int facet_cuda_malloc(void **ptr, size_t nbytes);
int facet_cuda_free(void *ptr);
/* page-locked host memory, for buffers copied to the GPU every step */
int facet_cuda_host_alloc(void **ptr, size_t nbytes);
int facet_cuda_host_free(void *ptr);
enum facet_copy_kind { FACET_COPY_H2D = 0, FACET_COPY_D2H = 1, FACET_COPY_D2D = 2 };
int facet_cuda_memcpy(void *dst, const void *src, size_t nbytes, int kind);

/* ---- elementwise (elementwise.cu) ------------------------------------------------------------
 * Strided work: data pointers are element 0 of each operand, nd describes
 * the walk (operand 0 = output). */
int facet_cuda_copy_nd(void *dst, int dst_dtype, const void *src, int src_dtype, const struct facet_nd *nd);
int facet_cuda_fill_nd(void *dst, int dtype, double value, const struct facet_nd *nd);
int facet_cuda_unary_nd(void *out, const void *x, int dtype, int op, double a, double b, const struct facet_nd *nd);
int facet_cuda_binary_nd(void *out, const void *x, const void *y, int dtype, int op, const struct facet_nd *nd);
/* contiguous tensors of n elements */
int facet_cuda_arange(void *dst, int dtype, int64_t n, double start, double step);
int facet_cuda_axpy(float *out, const float *x, double alpha, const float *y, int64_t n);

/* ---- list copies (copy.cu): dst[k] <- src[k], nbytes[k] bytes each, by
 * multi-tensor launches (tensor_list.cuh) */
int facet_cuda_copy_list(void *const *dst, const void *const *src, const int64_t *nbytes, int n);

/* ---- random (random.cu): element i of a draw is random_math.h's function of (seed, offset + i) */
int facet_cuda_rand(float *dst, int64_t n, uint64_t seed, uint64_t offset, int normal, float a, float b);

/* ---- reduce (reduce.cu): x contiguous float32 viewed as [outer, n, inner]; out
 * has outer*inner elements (float32, or int64 for ARGMAX/ARGMIN) ---------------------------- */
int facet_cuda_reduce(void *out, const float *x, int op, int64_t outer, int64_t n, int64_t inner, int index_base);
/* out[k] = sum of squares of the n tensors xs[k] (numel[k] elements), or of
 * xs[k] + coefs[k]_r * params[k]_r over rows of cols[k] where coefs[k] is not
 * NULL; few launches for the whole list (tensor_list.cuh), nothing read back */
int facet_cuda_sumsq_list(float *out, const float *const *xs, const float *const *coefs, const float *const *params,
                          const int64_t *numel, const int64_t *cols, int n);

/* ---- GEMM (blas.cu): row-major C = alpha op(A) op(B) + beta C, batched with
 * element strides (stride 0 shares an operand) ------------------------------------------------ */
int facet_cuda_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                     const float *a, int64_t lda, int64_t stride_a,
                     const float *b, int64_t ldb, int64_t stride_b, float beta,
                     float *c, int64_t ldc, int64_t stride_c, int64_t batch);
/* The same with float16/bfloat16 A and B (ab_dtype) and C of ab_dtype or
 * float32 (c_dtype), accumulating in float32 on tensor cores (cublasGemmStridedBatchedEx). */
int facet_cuda_gemm_ex(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha, int ab_dtype,
                       const void *a, int64_t lda, int64_t stride_a, const void *b, int64_t ldb, int64_t stride_b,
                       float beta, int c_dtype, void *c, int64_t ldc, int64_t stride_c, int64_t batch);

/* ---- loss scaling (amp.cu): x_k *= inv_scale for n contiguous tensors (float32,
 * float16 or bfloat16); *found = 1 when an element was NaN or +-inf, else 0, read
 * back once for the whole list ----------------------------------------------------------------- */
int facet_cuda_amp_unscale(void *const *ptrs, const int *dtypes, const int64_t *counts, int n, float inv_scale,
                           int *found);

/* ---- rows of a matrix (normalize.cu) -------------------------------------------------------- */
int facet_cuda_l2_normalize_rows(float *out, float *norms, const float *x, int64_t rows, int64_t cols, float eps);
int facet_cuda_l2_normalize_backward(float *dx, const float *dy, const float *y, const float *norms, int64_t rows,
                                     int64_t cols, float eps);
int facet_cuda_row_norms(float *out, const float *x, int64_t rows, int64_t cols);
int facet_cuda_rows_axpy(float *out, const float *coef, const float *x, int64_t rows, int64_t cols);

/* ---- indexing (index.cu) -------------------------------------------------------------------------
 * select: out row i = table row index[i] - index_base (index int32 or int64,
 * n entries, on the device). scatter: index_add (add != 0, alpha) or
 * index_copy of src rows into table rows by plan (index_math.h), whose
 * arrays are in HOST memory (index.c builds them from the checked index);
 * the backend copies them over. */
enum facet_index_mode { FACET_INDEX_SELECT = 0, FACET_INDEX_ADD = 1, FACET_INDEX_COPY = 2 };
int facet_cuda_index_select(float *out, const float *table, const void *index, int index_dtype, int64_t n,
                            int64_t cols, int index_base);
int facet_cuda_index_scatter(float *table, const float *src, const struct facet_index_plan *plan, int64_t cols,
                             int add, float alpha);
/* gather (scatter == 0): vec[i] = mat[i*cols + index[i]]; scatter: mat[i*cols + index[i]] = vec[i]. */
int facet_cuda_cols(float *mat, float *vec, const void *index, int index_dtype, int64_t rows, int64_t cols,
                    int scatter, int index_base);

/* ---- loss heads (head.cu): the contracts of head.c; the head's parameters
 * go by value, its programs to the device when they changed; target records
 * labels outside [0, classes) on the device and finish reports them ------------------------- */
int facet_cuda_head_target(struct facet_head *head, float *rows, const float *logits, const float *wnorm,
                           const float *bias, const void *labels, int label_dtype, int64_t B, int64_t Kb,
                           int64_t class_offset, int64_t classes);
int facet_cuda_head_partial(const struct facet_head *head, float *rows, float *logits, const float *wnorm,
                            const float *bias, const void *labels, int label_dtype, int64_t B, int64_t Kb,
                            int64_t class_offset);
int facet_cuda_head_backward(const struct facet_head *head, float *logits, const float *rows, const float *wnorm,
                             const float *bias, const void *labels, int label_dtype, int64_t B, int64_t Kb,
                             int64_t class_offset, float *colsum, float *colsum_cos);
/* rows: B x FACET_HEAD_ROW_COUNT on the device; *loss (host) the loss. */
int facet_cuda_head_finish(struct facet_head *head, float *rows, int64_t B, double *loss);
/* Sub-centres (facet_head_subcenter_max, _scatter): cos and index B x Kb,
 * sub B x Kb k, wnorm Kb k, colsum_cos Kb k or NULL */
int facet_cuda_head_subcenter_max(float *cos, uint8_t *index, const float *sub, const float *wnorm, int64_t B,
                                  int64_t Kb, int k);
int facet_cuda_head_subcenter_scatter(float *sub, float *colsum_cos, const float *grad, const uint8_t *index,
                                      const float *wnorm, int64_t B, int64_t Kb, int k);
/* CurricularFace's t (facet_head_update_t): rows B x FACET_HEAD_ROW_COUNT and
 * t (1 value) on the device */
int facet_cuda_head_update_t(float *rows, int64_t B, float *t, double momentum);
/* AdaFace's norm statistics (facet_head_update_norms): rows, norms (B),
 * mean and std (1 value each) on the device */
int facet_cuda_head_update_norms(float *rows, int64_t B, const float *norms, float *mean, float *std,
                                 double momentum, double h);
/* MagFace (facet_head_update_margins, facet_head_norm_grad): rows, norms and
 * coef on the device, the head's parameters by value */
int facet_cuda_head_update_margins(const struct facet_head_params *p, float *rows, int64_t B, const float *norms);
/* ElasticFace (facet_head_elastic): rows and draws (B) on the device */
int facet_cuda_head_elastic(const struct facet_head_params *p, float *rows, int64_t B, const float *draws);
int facet_cuda_head_norm_grad(const struct facet_head_params *p, const float *rows, int64_t B, const float *norms,
                              float *coef);
/* the last finish's bad label (*row untouched when there was none) */
void facet_cuda_head_bad_label(const struct facet_head *head, int64_t *row, int64_t *label, int64_t *classes);
/* frees head->cuda (facet_head_free) */
void facet_cuda_head_release(struct facet_head *head);

/* ---- optimisers (sgd.cu, adam.cu) ------------------------------------------------------------
 * SGD over rows x cols (non-2-D parameters: 1 x numel); coef and norms, per
 * row, may be NULL. */
int facet_cuda_sgd_step(const struct facet_sgd_params *p, float *w, float *g, float *buf, const float *coef,
                        float *norms, int64_t rows, int64_t cols);
/* the update of n parameters (numel[k] elements, weight_decays[k] instead of
 * p->weight_decay; buf[k] may be NULL) by multi-tensor launches (tensor_list.cuh) */
int facet_cuda_sgd_step_list(const struct facet_sgd_params *p, float *const *w, float *const *g, float *const *buf,
                             const float *weight_decays, const int64_t *numel, int n);
int facet_cuda_adam_step(const struct facet_adam_params *p, float *w, float *g, float *m, float *v, int64_t n);
/* the Adam step of n parameters (numel[k] elements, weight_decays[k] instead
 * of p->weight_decay) by multi-tensor launches (tensor_list.cuh) */
int facet_cuda_adam_step_list(const struct facet_adam_params *p, float *const *w, float *const *g, float *const *m,
                              float *const *v, const float *weight_decays, const int64_t *numel, int n);

/* ---- activations (activation.cu) and dropout (dropout.cu) ---------------------------------------
 * x is [outer, channels, inner]; slope has nslope values (1 or channels) or is NULL. dtype
 * (float32, float16 or bfloat16) is the type of x, out and their gradients; slopes are float32. */
int facet_cuda_activation_forward(int dtype, void *out, const void *x, int64_t n, int act, const float *slope,
                                  int64_t nslope, int64_t channels, int64_t inner);
int facet_cuda_activation_backward(int dtype, void *grad_x, float *grad_slope, const void *grad_out, const void *x,
                                   const void *out, int64_t n, int act, const float *slope, int64_t nslope,
                                   int64_t channels, int64_t inner);
int facet_cuda_dropout_forward(int dtype, void *out, unsigned char *mask, const void *x, int64_t n, float p, float scale,
                               uint64_t seed, uint64_t offset);
int facet_cuda_dropout_backward(int dtype, void *grad_x, const void *grad_out, const unsigned char *mask, int64_t n,
                                float scale);

/* ---- convolution (conv.cu): the checked geometry of conv_math.h; ws holds
 * ws_elems floats, at least facet_conv_cuda_min_workspace; dtype (float32, float16,
 * bfloat16) is that of x, out and their gradients, the weights are float32 ----------------------------------- */
int facet_cuda_conv2d_forward(int dtype, const struct facet_conv_geom *g, void *out, const void *x, const float *w,
                              const float *bias, float *ws, int64_t ws_elems);
int facet_cuda_conv2d_backward(int dtype, const struct facet_conv_geom *g, void *grad_x, float *grad_w, float *grad_b,
                               const void *grad_out, const void *x, const float *w, float *ws, int64_t ws_elems);

/* ---- batch normalisation (batchnorm.cu): x is [n, c, hw]; save_*, running_*,
 * weight, bias may be NULL as the API allows; dtype is that of x, out and the gradients of x
 * (float32, float16, bfloat16), the rest is float32 --------------------------------------------------- */
int facet_cuda_batchnorm_forward(int dtype, void *out, float *save_mean, float *save_invstd, float *running_mean,
                                 float *running_var, const void *x, const float *weight, const float *bias,
                                 int64_t n, int64_t c, int64_t hw, int training, double momentum, double eps);
int facet_cuda_batchnorm_backward(int dtype, void *grad_x, float *grad_weight, float *grad_bias, const void *grad_out,
                                  const void *x, const float *weight, const float *save_mean,
                                  const float *save_invstd, int64_t n, int64_t c, int64_t hw, int training);
/* synchronised BN: this rank's mean and biased variance (n * hw >= 1), and
 * grad_x from the channel sums of every rank over count values */
int facet_cuda_batchnorm_stats(int dtype, float *mean, float *var, const void *x, int64_t n, int64_t c, int64_t hw);
int facet_cuda_batchnorm_backward_elemt(int dtype, void *grad_x, const void *grad_out, const void *x,
                                        const float *weight, const float *save_mean, const float *save_invstd,
                                        const float *sum_dy, const float *sum_dy_xhat, double count, int64_t n,
                                        int64_t c, int64_t hw);

/* ---- pooling (pool.cu): the geometry of pool_math.h; argmax may be NULL (max
 * pooling without backward, or average pooling); dtype is x's (float32, float16, bfloat16) ---------------------------------------------- */
int facet_cuda_pool2d_forward(int dtype, void *out, int32_t *argmax, const void *x, int kind,
                              const struct facet_pool_geom *g);
int facet_cuda_pool2d_backward(int dtype, void *grad_x, const void *grad_out, const int32_t *argmax, int kind,
                               const struct facet_pool_geom *g);

/* ---- upsampling (upsample.cu): [planes, h, w] <-> [planes, ho, wo] -------------------------------
 * dtype (float32, float16 or bfloat16) is the type of both tensors. */
int facet_cuda_upsample2d_forward(int dtype, void *out, const void *x, int64_t planes, int64_t h, int64_t w,
                                  int64_t ho, int64_t wo, int mode, int align_corners);
int facet_cuda_upsample2d_backward(int dtype, void *grad_x, const void *grad_out, int64_t planes, int64_t h,
                                   int64_t w, int64_t ho, int64_t wo, int mode, int align_corners);

/* ---- device memory and asynchronous host-to-device copies ------------------------
 * facet_cuda_malloc/facet_cuda_free go through the caching allocator of
 * cache_alloc.h (its instance: core/cuda/alloc.cu); cuda_absent.c reports
 * zeros. A copy from page-locked memory to the device is queued on the default
 * stream and the host goes on; the event recorded after it on the source's
 * storage says when the source may be written again (docs/gpu-memory.md). */
int facet_cuda_alloc_stats(struct facet_cuda_memory_stats *out);
int facet_cuda_alloc_empty(void);
int facet_cuda_memcpy_async_h2d(void *dst, const void *src, size_t nbytes);
/* *event is created on first use, then recorded on the default stream */
int facet_cuda_event_record(void **event);
/* waits for the work queued before the event's last record; NULL: at once */
int facet_cuda_event_wait(void *event);
void facet_cuda_event_free(void *event);
/* an event that keeps time (facet_cuda_mark); recorded with facet_cuda_event_record */
int facet_cuda_timing_event(void **event);
/* milliseconds between two recorded timing events; waits for end */
int facet_cuda_event_elapsed(void *start, void *end, float *ms);

/* ---- NCCL collectives (nccl.cu; built with NCCL when the Makefile finds nccl.h,
 * else each call fails saying facet was built without NCCL). comm is the
 * NCCL communicator with its own event; the collectives queue on the default
 * stream and return, facet_cuda_nccl_wait polls the event and
 * ncclCommGetAsyncError until timeout seconds, and aborts the communicator
 * when they run out. op is a FACET_DIST_OP_*; counts are elements. */
enum { FACET_NCCL_ID_BYTES = 128 };
int facet_cuda_nccl_is_built(void);
int facet_cuda_nccl_unique_id(void *id);
int facet_cuda_nccl_init(void **comm, const void *id, int rank, int size);
int facet_cuda_nccl_free(void *comm, int abort);
int facet_cuda_nccl_allreduce(void *comm, void *data, int64_t count, int dtype, int op);
int facet_cuda_nccl_allgather(void *comm, void *out, const void *x, const int64_t *counts, int dtype);
int facet_cuda_nccl_reduce_scatter(void *comm, void *out, const void *x, int64_t count, int dtype, int op);
int facet_cuda_nccl_broadcast(void *comm, void *data, int64_t count, int dtype, int root);
int facet_cuda_nccl_wait(void *comm, double timeout, const char *what);

/* ---- transformer layers (layernorm.cu, softmax.cu): contiguous float32 rows x cols ---------- */
int facet_cuda_layernorm_forward(float *out, float *save_mean, float *save_invstd, const float *x, const float *weight,
                                 const float *bias, int64_t rows, int64_t cols, double eps);
int facet_cuda_layernorm_backward(float *grad_x, float *grad_weight, float *grad_bias, const float *grad_out,
                                  const float *x, const float *save_mean, const float *save_invstd,
                                  const float *weight, int64_t rows, int64_t cols);
int facet_cuda_softmax_forward(float *out, const float *x, int64_t rows, int64_t cols);
int facet_cuda_softmax_backward(float *grad_x, const float *grad_out, const float *out, int64_t rows, int64_t cols);

#ifdef __cplusplus
}
#endif

#endif
