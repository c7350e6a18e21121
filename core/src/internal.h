/*
 * internal.h - what the C files of the core share and the public header hides:
 * the tensor and storage structs, error helpers, the strided-loop descriptor
 * and the CUDA backend's entry points (core/cuda/, or cuda_absent.c).
 */
#ifndef FACET_INTERNAL_H
#define FACET_INTERNAL_H

#include "facet.h"
#include <stdbool.h>

struct facet_storage {
    void *data;
    size_t nbytes;
    int device;
    int pinned;             /* page-locked host memory (cudaMallocHost) */
    void *copy_event;       /* pinned: CUDA event after the last asynchronous copy from it, or NULL */
    int refcount;           /* atomically updated */
};

struct facet_tensor {
    struct facet_storage *storage;
    int64_t offset;         /* in elements */
    int ndim;
    int dtype;
    int device;
    int64_t sizes[FACET_MAX_DIMS];
    int64_t strides[FACET_MAX_DIMS];   /* in elements */
};

/* ---- errors: set the thread-local message, return the code ------------- */
int facet_fail(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void facet_clear_error(void);
/* "[2x3 float32 cpu]" into a rotating thread-local buffer (8 live at once). */
const char *facet_desc(const facet_tensor *t);
const char *facet_dtype_name(int dtype);

/* ---- tensor helpers -------------------------------------------------------- */
int64_t facet_numel(const facet_tensor *t);
bool facet_contiguous(const facet_tensor *t);
size_t facet_elsize(int dtype);
void *facet_ptr(const facet_tensor *t);           /* address of element 0 */
bool facet_same_shape(const facet_tensor *a, const facet_tensor *b);
/* A contiguous copy of t on the same device (or a new handle on t when it
 * already is contiguous). Free with facet_tensor_free. */
int facet_contiguous_copy(facet_tensor **out, const facet_tensor *t);
/* A CPU tensor in page-locked memory when a CUDA device is present (faster,
 * asynchronous host-to-device copies), in ordinary memory otherwise. */
int facet_tensor_init_pinned(facet_tensor **out, int dtype, int ndim, const int64_t *sizes);

/* Argument checks used at every API boundary; they set the error. */
int facet_check_tensor(const char *fn, const char *name, const facet_tensor *t);
int facet_check_dtype(const char *fn, const char *name, const facet_tensor *t, int dtype);
int facet_check_same_device(const char *fn, const facet_tensor *a, const facet_tensor *b);
/* a contiguous 2-D float32 tensor */
int facet_check_matrix(const char *fn, const char *name, const facet_tensor *t);

/* ---- strided loops ------------------------------------------------------------
 * Up to three operands (0 = output) walked over one shape with per-operand
 * strides (0 where an operand is broadcast). Dims are collapsed where all
 * operands allow, so contiguous work becomes one long row. */
struct facet_nd {
    int ndim;
    int nops;
    int64_t sizes[FACET_MAX_DIMS];
    int64_t strides[3][FACET_MAX_DIMS];
};
void facet_nd_collapse(struct facet_nd *nd);

/* ---- the BLAS backend (blas.c) ------------------------------------------------ */
int facet_blas_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                     const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                     float *c, int64_t ldc);
void facet_blas_set_threads(int n);

/* Hot loops are compiled for AVX-512 and AVX2 too, picked at load time (the
 * baseline build targets plain x86-64 so the library runs anywhere). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(FACET_NO_CLONES)
#define FACET_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FACET_CLONES
#endif

/* ---- OpenMP ---------------------------------------------------------------- */
int facet_threads(void);
void facet_threads_store(int n);
/* Work below this many elements runs on one thread. A compile-time knob for
 * measuring (CFLAGS="-O3 -DFACET_PARALLEL_GRAIN=8192"); docs/threads.md. */
#ifndef FACET_PARALLEL_GRAIN
#define FACET_PARALLEL_GRAIN 32768
#endif

/* ---- the CUDA backend ------------------------------------------------------------
 * Implemented in core/cuda/ (one .cu per concept) when nvcc is present, else by cuda_absent.c.
 * Each returns a status and sets the error itself. Tensors passed here are
 * already checked: devices are CUDA, dtypes and shapes match what the CPU
 * path would accept. */
int facet_cuda_count(int *count);
int facet_cuda_is_built(void);
int facet_cuda_sync(void);
int facet_cuda_malloc(void **ptr, size_t nbytes);
int facet_cuda_free(void *ptr);
/* page-locked host memory, for buffers copied to the GPU every step */
int facet_cuda_host_alloc(void **ptr, size_t nbytes);
int facet_cuda_host_free(void *ptr);
enum facet_copy_kind { FACET_COPY_H2D = 0, FACET_COPY_D2H = 1, FACET_COPY_D2D = 2 };
int facet_cuda_memcpy(void *dst, const void *src, size_t nbytes, int kind);
/* Strided elementwise work: data pointers are element 0 of each operand, nd
 * describes the walk (operand 0 = output). */
int facet_cuda_copy_nd(void *dst, int dst_dtype, const void *src, int src_dtype, const struct facet_nd *nd);
int facet_cuda_fill_nd(void *dst, int dtype, double value, const struct facet_nd *nd);
int facet_cuda_unary_nd(void *out, const void *x, int dtype, int op, double a, double b, const struct facet_nd *nd);
int facet_cuda_binary_nd(void *out, const void *x, const void *y, int dtype, int op, const struct facet_nd *nd);
/* Contiguous tensors of n elements. */
int facet_cuda_arange(void *dst, int dtype, int64_t n, double start, double step);
int facet_cuda_rand(float *dst, int64_t n, uint64_t seed, uint64_t offset, int normal, float a, float b);
int facet_cuda_axpy(float *out, const float *x, double alpha, const float *y, int64_t n);
/* x contiguous float32 viewed as [outer, n, inner]; out has outer*inner
 * elements (float32, or int64 for ARGMAX/ARGMIN). */
int facet_cuda_reduce(void *out, const float *x, int op, int64_t outer, int64_t n, int64_t inner, int index_base);
/* Column-major-free wrapper: row-major C = alpha op(A) op(B) + beta C,
 * batched with element strides (stride 0 shares an operand). */
int facet_cuda_sgemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                     const float *a, int64_t lda, int64_t stride_a,
                     const float *b, int64_t ldb, int64_t stride_b, float beta,
                     float *c, int64_t ldc, int64_t stride_c, int64_t batch);
int facet_cuda_l2_normalize_rows(float *out, float *norms, const float *x, int64_t rows, int64_t cols, float eps);
/* Row indexing: index is int32 or int64 (index_dtype) with n entries; the
 * values are already checked to lie in range. */
enum facet_index_mode { FACET_INDEX_SELECT = 0, FACET_INDEX_ADD = 1, FACET_INDEX_COPY = 2 };
int facet_cuda_index_rows(float *dst, const float *src, const void *index, int index_dtype, int64_t n,
                          int64_t cols, int mode, double alpha, int index_base);
/* gather (scatter == 0): out[i] = src[i*cols + index[i]]; scatter: dst[i*cols + index[i]] = src[i]. */
int facet_cuda_cols(float *mat, float *vec, const void *index, int index_dtype, int64_t rows,
                    int64_t cols, int scatter, int index_base);


/* heads (core/cuda/head.cu): the same contracts as the CPU functions in
 * head.c and normalize.c, on device pointers; arguments already checked. */
struct facet_head;
int facet_cuda_row_norms(float *out, const float *x, int64_t rows, int64_t cols);
int facet_cuda_l2_normalize_backward(float *dx, const float *dy, const float *y, const float *norms, int64_t rows,
                                     int64_t cols, float eps);
int facet_cuda_rows_axpy(float *out, const float *coef, const float *x, int64_t rows, int64_t cols);
/* The head's parameters and programs are copied to the device per call. */
int facet_cuda_head_target(const struct facet_head *head, float *rows, const float *logits, const float *wnorm,
                           const float *bias, const void *labels, int label_dtype, int64_t B, int64_t Kb,
                           int64_t class_offset);
int facet_cuda_head_partial(const struct facet_head *head, float *rows, float *logits, const float *wnorm,
                            const float *bias, const void *labels, int label_dtype, int64_t B, int64_t Kb,
                            int64_t class_offset);
int facet_cuda_head_backward(const struct facet_head *head, float *logits, const float *rows, const float *wnorm,
                             const float *bias, const void *labels, int label_dtype, int64_t B, int64_t Kb,
                             int64_t class_offset, float *colsum, float *colsum_cos);

/* optimizer updates (core/cuda/sgd.cu) */
struct facet_sgd_params;
int facet_cuda_sgd_step(const struct facet_sgd_params *p, float *w, float *g, float *buf, const float *coef,
                        float *norms, int64_t rows, int64_t cols);

/* image.c, for the loader's workers: decode into a caller buffer of w*h*3
 * bytes, and prepare (resize, flip, normalise) into 3 x oh x ow floats. */
int facet_image_decode_raw(const void *bytes, size_t size, int w, int h, unsigned char *rgb);
void facet_image_prepare_raw(float *dst, int64_t oh, int64_t ow, const unsigned char *rgb, int64_t h, int64_t w,
                             int flip, const float *mean, const float *inv_std);

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
/* copy.c: returns when no queued copy reads s (0 at once without one) */
int facet_storage_wait_copies(struct facet_storage *s);

#endif
