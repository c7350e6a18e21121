/*
 * cuda_absent.c - the CUDA backend (cuda_backend.h) of a build without nvcc:
 * no devices, nothing to wait for or free, and every other device operation
 * fails with FACET_STATUS_ERR_DEVICE saying CUDA was not compiled in. The
 * Makefile links this file instead of core/cuda/ when FACET_CUDA=0.
 */
#include "internal.h"
#include <string.h>

static int absent(const char *fn)
{
    return facet_fail(FACET_STATUS_ERR_DEVICE, "%s: facet was built without CUDA (no nvcc at build time)", fn);
}

int facet_cuda_count(int *count)
{
    if (count) *count = 0;
    return 0;
}

int facet_cuda_name(int device, char *name, size_t size, int64_t *memory)
{
    (void)device; (void)name; (void)size; (void)memory;
    return absent("facet_cuda_device_name");
}
int facet_cuda_is_built(void) { return 0; }
int facet_cuda_sync(void) { return 0; }
int facet_cuda_free(void *ptr) { (void)ptr; return 0; }
int facet_cuda_host_free(void *ptr) { (void)ptr; return 0; }

/* The rest only report: no tensor can live on a CUDA device in this build. */

int facet_cuda_malloc(void **ptr, size_t nbytes)
{
    (void)nbytes;
    if (ptr) *ptr = NULL;
    return absent("facet_cuda_malloc");
}

int facet_cuda_host_alloc(void **ptr, size_t nbytes)
{
    (void)nbytes;
    if (ptr) *ptr = NULL;
    return absent("facet_cuda_host_alloc");
}

int facet_cuda_memcpy(void *dst, const void *src, size_t nbytes, int kind)
{
    (void)dst; (void)src; (void)nbytes; (void)kind;
    return absent("facet_cuda_memcpy");
}

int facet_cuda_copy_nd(void *dst, int dst_dtype, const void *src, int src_dtype, const struct facet_nd *nd)
{
    (void)dst; (void)dst_dtype; (void)src; (void)src_dtype; (void)nd;
    return absent("facet_cuda_copy_nd");
}

int facet_cuda_fill_nd(void *dst, int dtype, double value, const struct facet_nd *nd)
{
    (void)dst; (void)dtype; (void)value; (void)nd;
    return absent("facet_cuda_fill_nd");
}

int facet_cuda_unary_nd(void *out, const void *x, int dtype, int op, double a, double b, const struct facet_nd *nd)
{
    (void)out; (void)x; (void)dtype; (void)op; (void)a; (void)b; (void)nd;
    return absent("facet_cuda_unary_nd");
}

int facet_cuda_binary_nd(void *out, const void *x, const void *y, int dtype, int op, const struct facet_nd *nd)
{
    (void)out; (void)x; (void)y; (void)dtype; (void)op; (void)nd;
    return absent("facet_cuda_binary_nd");
}

int facet_cuda_arange(void *dst, int dtype, int64_t n, double start, double step)
{
    (void)dst; (void)dtype; (void)n; (void)start; (void)step;
    return absent("facet_cuda_arange");
}

int facet_cuda_axpy(float *out, const float *x, double alpha, const float *y, int64_t n)
{
    (void)out; (void)x; (void)alpha; (void)y; (void)n;
    return absent("facet_cuda_axpy");
}

int facet_cuda_rand(float *dst, int64_t n, uint64_t seed, uint64_t offset, int normal, float a, float b)
{
    (void)dst; (void)n; (void)seed; (void)offset; (void)normal; (void)a; (void)b;
    return absent("facet_cuda_rand");
}

int facet_cuda_reduce(void *out, const float *x, int op, int64_t outer, int64_t n, int64_t inner, int index_base)
{
    (void)out; (void)x; (void)op; (void)outer; (void)n; (void)inner; (void)index_base;
    return absent("facet_cuda_reduce");
}

int facet_cuda_sumsq_list(float *out, const float *const *xs, const float *const *coefs, const float *const *params,
                          const int64_t *numel, const int64_t *cols, int n)
{
    (void)out; (void)xs; (void)coefs; (void)params; (void)numel; (void)cols; (void)n;
    return absent("facet_cuda_sumsq_list");
}

int facet_cuda_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda, int64_t stride_a, const float *b, int64_t ldb, int64_t stride_b, float beta, float *c, int64_t ldc, int64_t stride_c, int64_t batch)
{
    (void)trans_a; (void)trans_b; (void)m; (void)n; (void)k; (void)alpha; (void)a; (void)lda; (void)stride_a; (void)b; (void)ldb; (void)stride_b; (void)beta; (void)c; (void)ldc; (void)stride_c; (void)batch;
    return absent("facet_cuda_sgemm");
}

int facet_cuda_gemm_ex(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha, int ab_dtype,
                       const void *a, int64_t lda, int64_t stride_a, const void *b, int64_t ldb, int64_t stride_b,
                       float beta, int c_dtype, void *c, int64_t ldc, int64_t stride_c, int64_t batch)
{
    (void)trans_a; (void)trans_b; (void)m; (void)n; (void)k; (void)alpha; (void)ab_dtype; (void)a; (void)lda;
    (void)stride_a; (void)b; (void)ldb; (void)stride_b; (void)beta; (void)c_dtype; (void)c; (void)ldc;
    (void)stride_c; (void)batch;
    return absent("facet_cuda_gemm_ex");
}

int facet_cuda_l2_normalize_rows(float *out, float *norms, const float *x, int64_t rows, int64_t cols, float eps)
{
    (void)out; (void)norms; (void)x; (void)rows; (void)cols; (void)eps;
    return absent("facet_cuda_l2_normalize_rows");
}

int facet_cuda_l2_normalize_backward(float *dx, const float *dy, const float *y, const float *norms, int64_t rows, int64_t cols, float eps)
{
    (void)dx; (void)dy; (void)y; (void)norms; (void)rows; (void)cols; (void)eps;
    return absent("facet_cuda_l2_normalize_backward");
}

int facet_cuda_row_norms(float *out, const float *x, int64_t rows, int64_t cols)
{
    (void)out; (void)x; (void)rows; (void)cols;
    return absent("facet_cuda_row_norms");
}

int facet_cuda_rows_axpy(float *out, const float *coef, const float *x, int64_t rows, int64_t cols)
{
    (void)out; (void)coef; (void)x; (void)rows; (void)cols;
    return absent("facet_cuda_rows_axpy");
}

int facet_cuda_index_select(float *out, const float *table, const void *index, int index_dtype, int64_t n, int64_t cols, int index_base)
{
    (void)out; (void)table; (void)index; (void)index_dtype; (void)n; (void)cols; (void)index_base;
    return absent("facet_cuda_index_select");
}

int facet_cuda_index_scatter(float *table, const float *src, const struct facet_index_plan *plan, int64_t cols, int add, float alpha)
{
    (void)table; (void)src; (void)plan; (void)cols; (void)add; (void)alpha;
    return absent("facet_cuda_index_scatter");
}

int facet_cuda_cols(float *mat, float *vec, const void *index, int index_dtype, int64_t rows, int64_t cols, int scatter, int index_base)
{
    (void)mat; (void)vec; (void)index; (void)index_dtype; (void)rows; (void)cols; (void)scatter; (void)index_base;
    return absent("facet_cuda_cols");
}

int facet_cuda_head_target(struct facet_head *head, float *rows, const float *logits, const float *wnorm, const float *bias, const void *labels, int label_dtype, int64_t B, int64_t Kb, int64_t class_offset, int64_t classes)
{
    (void)head; (void)rows; (void)logits; (void)wnorm; (void)bias; (void)labels; (void)label_dtype; (void)B; (void)Kb; (void)class_offset; (void)classes;
    return absent("facet_cuda_head_target");
}

int facet_cuda_head_partial(const struct facet_head *head, float *rows, float *logits, const float *wnorm, const float *bias, const void *labels, int label_dtype, int64_t B, int64_t Kb, int64_t class_offset)
{
    (void)head; (void)rows; (void)logits; (void)wnorm; (void)bias; (void)labels; (void)label_dtype; (void)B; (void)Kb; (void)class_offset;
    return absent("facet_cuda_head_partial");
}

int facet_cuda_head_backward(const struct facet_head *head, float *logits, const float *rows, const float *wnorm, const float *bias, const void *labels, int label_dtype, int64_t B, int64_t Kb, int64_t class_offset, float *colsum, float *colsum_cos)
{
    (void)head; (void)logits; (void)rows; (void)wnorm; (void)bias; (void)labels; (void)label_dtype; (void)B; (void)Kb; (void)class_offset; (void)colsum; (void)colsum_cos;
    return absent("facet_cuda_head_backward");
}

int facet_cuda_head_finish(struct facet_head *head, float *rows, int64_t B, double *loss)
{
    (void)head; (void)rows; (void)B; (void)loss;
    return absent("facet_cuda_head_finish");
}

int facet_cuda_head_elastic(const struct facet_head_params *p, float *rows, int64_t B, const float *draws)
{
    (void)p; (void)rows; (void)B; (void)draws;
    return absent("facet_cuda_head_elastic");
}

int facet_cuda_head_subcenter_max(float *cos, uint8_t *index, const float *sub, const float *wnorm, int64_t B,
                                  int64_t Kb, int k)
{
    (void)cos; (void)index; (void)sub; (void)wnorm; (void)B; (void)Kb; (void)k;
    return absent("facet_cuda_head_subcenter_max");
}

int facet_cuda_head_subcenter_scatter(float *sub, float *colsum_cos, const float *grad, const uint8_t *index,
                                      const float *wnorm, int64_t B, int64_t Kb, int k)
{
    (void)sub; (void)colsum_cos; (void)grad; (void)index; (void)wnorm; (void)B; (void)Kb; (void)k;
    return absent("facet_cuda_head_subcenter_scatter");
}

int facet_cuda_head_update_t(float *rows, int64_t B, float *t, double momentum)
{
    (void)rows; (void)B; (void)t; (void)momentum;
    return absent("facet_cuda_head_update_t");
}

int facet_cuda_head_update_norms(float *rows, int64_t B, const float *norms, float *mean, float *std,
                                 double momentum, double h)
{
    (void)rows; (void)B; (void)norms; (void)mean; (void)std; (void)momentum; (void)h;
    return absent("facet_cuda_head_update_norms");
}

int facet_cuda_head_update_margins(const struct facet_head_params *p, float *rows, int64_t B, const float *norms)
{
    (void)p; (void)rows; (void)B; (void)norms;
    return absent("facet_cuda_head_update_margins");
}

int facet_cuda_head_norm_grad(const struct facet_head_params *p, const float *rows, int64_t B, const float *norms,
                              float *coef)
{
    (void)p; (void)rows; (void)B; (void)norms; (void)coef;
    return absent("facet_cuda_head_norm_grad");
}

void facet_cuda_head_bad_label(const struct facet_head *head, int64_t *row, int64_t *label, int64_t *classes)
{
    (void)head; (void)row; (void)label; (void)classes;
}

void facet_cuda_head_release(struct facet_head *head) { (void)head; }

int facet_cuda_sgd_step(const struct facet_sgd_params *p, float *w, float *g, float *buf, const float *coef, float *norms, int64_t rows, int64_t cols)
{
    (void)p; (void)w; (void)g; (void)buf; (void)coef; (void)norms; (void)rows; (void)cols;
    return absent("facet_cuda_sgd_step");
}

int facet_cuda_sgd_step_list(const struct facet_sgd_params *p, float *const *w, float *const *g, float *const *buf,
                             const float *weight_decays, const int64_t *numel, int n)
{
    (void)p; (void)w; (void)g; (void)buf; (void)weight_decays; (void)numel; (void)n;
    return absent("facet_cuda_sgd_step_list");
}

int facet_cuda_adam_step(const struct facet_adam_params *p, float *w, float *g, float *m, float *v, int64_t n)
{
    (void)p; (void)w; (void)g; (void)m; (void)v; (void)n;
    return absent("facet_cuda_adam_step");
}

int facet_cuda_copy_list(void *const *dst, const void *const *src, const int64_t *nbytes, int n)
{
    (void)dst; (void)src; (void)nbytes; (void)n;
    return absent("facet_cuda_copy_list");
}

int facet_cuda_adam_step_list(const struct facet_adam_params *p, float *const *w, float *const *g, float *const *m,
                              float *const *v, const float *weight_decays, const int64_t *numel, int n)
{
    (void)p; (void)w; (void)g; (void)m; (void)v; (void)weight_decays; (void)numel; (void)n;
    return absent("facet_cuda_adam_step_list");
}

int facet_cuda_activation_forward(int dtype, void *out, const void *x, int64_t n, int act, const float *slope, int64_t nslope, int64_t channels, int64_t inner)
{
    (void)dtype; (void)out; (void)x; (void)n; (void)act; (void)slope; (void)nslope; (void)channels; (void)inner;
    return absent("facet_cuda_activation_forward");
}

int facet_cuda_activation_backward(int dtype, void *grad_x, float *grad_slope, const void *grad_out, const void *x, const void *out, int64_t n, int act, const float *slope, int64_t nslope, int64_t channels, int64_t inner)
{
    (void)dtype; (void)grad_x; (void)grad_slope; (void)grad_out; (void)x; (void)out; (void)n; (void)act; (void)slope; (void)nslope; (void)channels; (void)inner;
    return absent("facet_cuda_activation_backward");
}

int facet_cuda_dropout_forward(int dtype, void *out, unsigned char *mask, const void *x, int64_t n, float p, float scale, uint64_t seed, uint64_t offset)
{
    (void)dtype; (void)out; (void)mask; (void)x; (void)n; (void)p; (void)scale; (void)seed; (void)offset;
    return absent("facet_cuda_dropout_forward");
}

int facet_cuda_dropout_backward(int dtype, void *grad_x, const void *grad_out, const unsigned char *mask, int64_t n, float scale)
{
    (void)dtype; (void)grad_x; (void)grad_out; (void)mask; (void)n; (void)scale;
    return absent("facet_cuda_dropout_backward");
}

int facet_cuda_conv2d_forward(int dtype, const struct facet_conv_geom *g, void *out, const void *x, const float *w, const float *bias, float *ws, int64_t ws_elems)
{
    (void)dtype; (void)g; (void)out; (void)x; (void)w; (void)bias; (void)ws; (void)ws_elems;
    return absent("facet_cuda_conv2d_forward");
}

int facet_cuda_conv2d_backward(int dtype, const struct facet_conv_geom *g, void *grad_x, float *grad_w, float *grad_b, const void *grad_out, const void *x, const float *w, float *ws, int64_t ws_elems)
{
    (void)dtype; (void)g; (void)grad_x; (void)grad_w; (void)grad_b; (void)grad_out; (void)x; (void)w; (void)ws; (void)ws_elems;
    return absent("facet_cuda_conv2d_backward");
}

int facet_cuda_batchnorm_forward(int dtype, void *out, float *save_mean, float *save_invstd, float *running_mean, float *running_var, const void *x, const float *weight, const float *bias, int64_t n, int64_t c, int64_t hw, int training, double momentum, double eps)
{
    (void)dtype; (void)out; (void)save_mean; (void)save_invstd; (void)running_mean; (void)running_var; (void)x; (void)weight; (void)bias; (void)n; (void)c; (void)hw; (void)training; (void)momentum; (void)eps;
    return absent("facet_cuda_batchnorm_forward");
}

int facet_cuda_batchnorm_backward(int dtype, void *grad_x, float *grad_weight, float *grad_bias, const void *grad_out, const void *x, const float *weight, const float *save_mean, const float *save_invstd, int64_t n, int64_t c, int64_t hw, int training)
{
    (void)dtype; (void)grad_x; (void)grad_weight; (void)grad_bias; (void)grad_out; (void)x; (void)weight; (void)save_mean; (void)save_invstd; (void)n; (void)c; (void)hw; (void)training;
    return absent("facet_cuda_batchnorm_backward");
}

int facet_cuda_batchnorm_stats(int dtype, float *mean, float *var, const void *x, int64_t n, int64_t c, int64_t hw)
{
    (void)dtype; (void)mean; (void)var; (void)x; (void)n; (void)c; (void)hw;
    return absent("facet_cuda_batchnorm_stats");
}

int facet_cuda_batchnorm_backward_elemt(int dtype, void *grad_x, const void *grad_out, const void *x, const float *weight, const float *save_mean, const float *save_invstd, const float *sum_dy, const float *sum_dy_xhat, double count, int64_t n, int64_t c, int64_t hw)
{
    (void)dtype; (void)grad_x; (void)grad_out; (void)x; (void)weight; (void)save_mean; (void)save_invstd; (void)sum_dy; (void)sum_dy_xhat; (void)count; (void)n; (void)c; (void)hw;
    return absent("facet_cuda_batchnorm_backward_elemt");
}

int facet_cuda_pool2d_forward(int dtype, void *out, int32_t *argmax, const void *x, int kind, const struct facet_pool_geom *g)
{
    (void)dtype; (void)out; (void)argmax; (void)x; (void)kind; (void)g;
    return absent("facet_cuda_pool2d_forward");
}

int facet_cuda_pool2d_backward(int dtype, void *grad_x, const void *grad_out, const int32_t *argmax, int kind, const struct facet_pool_geom *g)
{
    (void)dtype; (void)grad_x; (void)grad_out; (void)argmax; (void)kind; (void)g;
    return absent("facet_cuda_pool2d_backward");
}

int facet_cuda_upsample2d_forward(int dtype, void *out, const void *x, int64_t planes, int64_t h, int64_t w, int64_t ho, int64_t wo, int mode, int align_corners)
{
    (void)dtype; (void)out; (void)x; (void)planes; (void)h; (void)w; (void)ho; (void)wo; (void)mode; (void)align_corners;
    return absent("facet_cuda_upsample2d_forward");
}

int facet_cuda_upsample2d_backward(int dtype, void *grad_x, const void *grad_out, int64_t planes, int64_t h, int64_t w, int64_t ho, int64_t wo, int mode, int align_corners)
{
    (void)dtype; (void)grad_x; (void)grad_out; (void)planes; (void)h; (void)w; (void)ho; (void)wo; (void)mode; (void)align_corners;
    return absent("facet_cuda_upsample2d_backward");
}

/* no device memory: the allocator reports zeros and has nothing to empty */
int facet_cuda_alloc_stats(struct facet_cuda_memory_stats *out)
{
    memset(out, 0, sizeof *out);
    return 0;
}

int facet_cuda_alloc_empty(void) { return 0; }

int facet_cuda_memcpy_async_h2d(void *dst, const void *src, size_t nbytes)
{
    (void)dst; (void)src; (void)nbytes;
    return absent("facet_cuda_memcpy_async_h2d");
}

int facet_cuda_event_record(void **event)
{
    (void)event;
    return absent("facet_cuda_event_record");
}

int facet_cuda_event_wait(void *event)
{
    (void)event;
    return 0;
}

void facet_cuda_event_free(void *event) { (void)event; }

int facet_cuda_timing_event(void **event)
{
    *event = NULL;
    return absent("facet_cuda_mark_init");
}

int facet_cuda_event_elapsed(void *start, void *end, float *ms)
{
    (void)start; (void)end;
    *ms = 0.0f;
    return absent("facet_cuda_mark_elapsed");
}

/* NCCL needs CUDA: the dist layer asks facet_cuda_nccl_is_built first, and
 * no CUDA tensor exists here to reach the rest. */
int facet_cuda_nccl_is_built(void) { return 0; }
int facet_cuda_nccl_unique_id(void *id)
{
    (void)id;
    return absent("facet_cuda_nccl_unique_id");
}
int facet_cuda_nccl_init(void **comm, const void *id, int rank, int size)
{
    (void)id; (void)rank; (void)size;
    if (comm) *comm = NULL;
    return absent("facet_cuda_nccl_init");
}
int facet_cuda_nccl_free(void *comm, int abort) { (void)comm; (void)abort; return 0; }
int facet_cuda_nccl_allreduce(void *comm, void *data, int64_t count, int dtype, int op)
{
    (void)comm; (void)data; (void)count; (void)dtype; (void)op;
    return absent("facet_cuda_nccl_allreduce");
}
int facet_cuda_nccl_allgather(void *comm, void *out, const void *x, const int64_t *counts, int dtype)
{
    (void)comm; (void)out; (void)x; (void)counts; (void)dtype;
    return absent("facet_cuda_nccl_allgather");
}
int facet_cuda_nccl_reduce_scatter(void *comm, void *out, const void *x, int64_t count, int dtype, int op)
{
    (void)comm; (void)out; (void)x; (void)count; (void)dtype; (void)op;
    return absent("facet_cuda_nccl_reduce_scatter");
}
int facet_cuda_nccl_broadcast(void *comm, void *data, int64_t count, int dtype, int root)
{
    (void)comm; (void)data; (void)count; (void)dtype; (void)root;
    return absent("facet_cuda_nccl_broadcast");
}
int facet_cuda_nccl_wait(void *comm, double timeout, const char *what)
{
    (void)comm; (void)timeout; (void)what;
    return absent("facet_cuda_nccl_wait");
}

int facet_cuda_amp_unscale(void *const *ptrs, const int *dtypes, const int64_t *counts, int n, float inv_scale,
                           int *found)
{
    (void)ptrs; (void)dtypes; (void)counts; (void)n; (void)inv_scale; (void)found;
    return absent("facet_cuda_amp_unscale");
}

int facet_cuda_layernorm_forward(float *out, float *save_mean, float *save_invstd, const float *x, const float *weight,
                                 const float *bias, int64_t rows, int64_t cols, double eps)
{
    (void)out; (void)save_mean; (void)save_invstd; (void)x; (void)weight; (void)bias; (void)rows; (void)cols; (void)eps;
    return absent("facet_cuda_layernorm_forward");
}
int facet_cuda_layernorm_backward(float *grad_x, float *grad_weight, float *grad_bias, const float *grad_out,
                                  const float *x, const float *save_mean, const float *save_invstd,
                                  const float *weight, int64_t rows, int64_t cols)
{
    (void)grad_x; (void)grad_weight; (void)grad_bias; (void)grad_out; (void)x; (void)save_mean; (void)save_invstd;
    (void)weight; (void)rows; (void)cols;
    return absent("facet_cuda_layernorm_backward");
}
int facet_cuda_softmax_forward(float *out, const float *x, int64_t rows, int64_t cols)
{
    (void)out; (void)x; (void)rows; (void)cols;
    return absent("facet_cuda_softmax_forward");
}
int facet_cuda_softmax_backward(float *grad_x, const float *grad_out, const float *out, int64_t rows, int64_t cols)
{
    (void)grad_x; (void)grad_out; (void)out; (void)rows; (void)cols;
    return absent("facet_cuda_softmax_backward");
}
