/*
 * cuda_absent.c - the CUDA backend of a build without nvcc: no devices, and
 * every device operation reports that CUDA support was not compiled in.
 */
#include "internal.h"
#include <string.h>

#define ABSENT(fn) facet_fail(FACET_STATUS_ERR_DEVICE, "%s: facet was built without CUDA (no nvcc at build time)", fn)

int facet_cuda_count(int *count) { *count = 0; return 0; }
int facet_cuda_is_built(void) { return 0; }
int facet_cuda_sync(void) { return 0; }
int facet_cuda_malloc(void **ptr, size_t nbytes) { (void)nbytes; *ptr = NULL; return ABSENT("cuda malloc"); }
int facet_cuda_free(void *ptr) { (void)ptr; return 0; }
int facet_cuda_host_alloc(void **ptr, size_t nbytes) { (void)nbytes; *ptr = NULL; return ABSENT("cuda host alloc"); }
int facet_cuda_host_free(void *ptr) { (void)ptr; return 0; }
int facet_cuda_memcpy(void *dst, const void *src, size_t nbytes, int kind)
{ (void)dst; (void)src; (void)nbytes; (void)kind; return ABSENT("cuda memcpy"); }
int facet_cuda_copy_nd(void *dst, int ddt, const void *src, int sdt, const struct facet_nd *nd)
{ (void)dst; (void)ddt; (void)src; (void)sdt; (void)nd; return ABSENT("cuda copy"); }
int facet_cuda_fill_nd(void *dst, int dtype, double value, const struct facet_nd *nd)
{ (void)dst; (void)dtype; (void)value; (void)nd; return ABSENT("cuda fill"); }
int facet_cuda_unary_nd(void *out, const void *x, int dtype, int op, double a, double b, const struct facet_nd *nd)
{ (void)out; (void)x; (void)dtype; (void)op; (void)a; (void)b; (void)nd; return ABSENT("cuda unary"); }
int facet_cuda_binary_nd(void *out, const void *x, const void *y, int dtype, int op, const struct facet_nd *nd)
{ (void)out; (void)x; (void)y; (void)dtype; (void)op; (void)nd; return ABSENT("cuda binary"); }
int facet_cuda_arange(void *dst, int dtype, int64_t n, double start, double step)
{ (void)dst; (void)dtype; (void)n; (void)start; (void)step; return ABSENT("cuda arange"); }
int facet_cuda_rand(float *dst, int64_t n, uint64_t seed, uint64_t offset, int normal, float a, float b)
{ (void)dst; (void)n; (void)seed; (void)offset; (void)normal; (void)a; (void)b; return ABSENT("cuda rand"); }
int facet_cuda_axpy(float *out, const float *x, double alpha, const float *y, int64_t n)
{ (void)out; (void)x; (void)alpha; (void)y; (void)n; return ABSENT("cuda axpy"); }
int facet_cuda_reduce(void *out, const float *x, int op, int64_t outer, int64_t n, int64_t inner, int base)
{ (void)out; (void)x; (void)op; (void)outer; (void)n; (void)inner; (void)base; return ABSENT("cuda reduce"); }
int facet_cuda_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                     int64_t sa, const float *b, int64_t ldb, int64_t sb, float beta, float *c, int64_t ldc,
                     int64_t sc, int64_t batch)
{
    (void)ta; (void)tb; (void)m; (void)n; (void)k; (void)alpha; (void)a; (void)lda; (void)sa; (void)b;
    (void)ldb; (void)sb; (void)beta; (void)c; (void)ldc; (void)sc; (void)batch;
    return ABSENT("cuda sgemm");
}
int facet_cuda_l2_normalize_rows(float *out, float *norms, const float *x, int64_t rows, int64_t cols, float eps)
{ (void)out; (void)norms; (void)x; (void)rows; (void)cols; (void)eps; return ABSENT("cuda l2_normalize_rows"); }
int facet_cuda_index_rows(float *dst, const float *src, const void *index, int idt, int64_t n, int64_t cols,
                          int mode, double alpha, int base)
{ (void)dst; (void)src; (void)index; (void)idt; (void)n; (void)cols; (void)mode; (void)alpha; (void)base;
  return ABSENT("cuda index"); }
int facet_cuda_cols(float *mat, float *vec, const void *index, int idt, int64_t rows, int64_t cols, int scatter,
                    int base)
{ (void)mat; (void)vec; (void)index; (void)idt; (void)rows; (void)cols; (void)scatter; (void)base;
  return ABSENT("cuda gather/scatter"); }
int facet_cuda_row_norms(float *out, const float *x, int64_t rows, int64_t cols)
{ (void)out; (void)x; (void)rows; (void)cols; return ABSENT("cuda row_norms"); }
int facet_cuda_l2_normalize_backward(float *dx, const float *dy, const float *y, const float *norms, int64_t rows,
                                     int64_t cols, float eps)
{ (void)dx; (void)dy; (void)y; (void)norms; (void)rows; (void)cols; (void)eps; return ABSENT("cuda l2 backward"); }
int facet_cuda_rows_axpy(float *out, const float *coef, const float *x, int64_t rows, int64_t cols)
{ (void)out; (void)coef; (void)x; (void)rows; (void)cols; return ABSENT("cuda rows_axpy"); }
int facet_cuda_head_target(const struct facet_head *head, float *rows, const float *logits, const float *wnorm,
                           const float *bias, const void *labels, int ldt, int64_t B, int64_t Kb, int64_t off)
{ (void)head; (void)rows; (void)logits; (void)wnorm; (void)bias; (void)labels; (void)ldt; (void)B; (void)Kb; (void)off;
  return ABSENT("cuda head target"); }
int facet_cuda_head_partial(const struct facet_head *head, float *rows, float *logits, const float *wnorm,
                            const float *bias, const void *labels, int ldt, int64_t B, int64_t Kb, int64_t off)
{ (void)head; (void)rows; (void)logits; (void)wnorm; (void)bias; (void)labels; (void)ldt; (void)B; (void)Kb; (void)off;
  return ABSENT("cuda head partial"); }
int facet_cuda_head_backward(const struct facet_head *head, float *logits, const float *rows, const float *wnorm,
                             const float *bias, const void *labels, int ldt, int64_t B, int64_t Kb, int64_t off,
                             float *colsum, float *colsum_cos)
{ (void)head; (void)rows; (void)logits; (void)wnorm; (void)bias; (void)labels; (void)ldt; (void)B; (void)Kb; (void)off;
  (void)colsum; (void)colsum_cos; return ABSENT("cuda head backward"); }
int facet_cuda_sgd_step(const struct facet_sgd_params *p, float *w, float *g, float *buf, const float *coef,
                        float *norms, int64_t rows, int64_t cols)
{ (void)p; (void)w; (void)g; (void)buf; (void)coef; (void)norms; (void)rows; (void)cols; return ABSENT("cuda sgd"); }
/* no device memory: the allocator reports zeros and has nothing to empty */
int facet_cuda_alloc_stats(struct facet_cuda_memory_stats *out) { memset(out, 0, sizeof *out); return 0; }
int facet_cuda_alloc_empty(void) { return 0; }
int facet_cuda_memcpy_async_h2d(void *dst, const void *src, size_t nbytes)
{ (void)dst; (void)src; (void)nbytes; return ABSENT("cuda memcpy"); }
int facet_cuda_event_record(void **event) { (void)event; return ABSENT("cuda event"); }
int facet_cuda_event_wait(void *event) { (void)event; return 0; }
void facet_cuda_event_free(void *event) { (void)event; }
