/*
 * internal.h - what the C files of the core share and the public header hides:
 * the tensor and storage structs, error helpers, the strided-loop descriptor
 * and (through cuda_backend.h) the CUDA backend's entry points.
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
/* The rest of the checks of parameter k of an optimizer's list call, after
 * its own (rc): on params[0]'s device (p0), weight decay >= 0; a failure's
 * message names the parameter. */
int facet_check_list_param(const char *fn, int rc, const facet_tensor *p, const facet_tensor *p0, double weight_decay,
                           int k);

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
/* 1 when the loaded BLAS runs each call on the calling thread alone inside
 * an OpenMP parallel region (OpenBLAS's OpenMP build), so several can run at
 * once from facet's threads without oversubscribing */
int facet_blas_nests(void);

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
/* The TF32 switch of facet_cuda_tf32_set (0 or 1), for the CUDA GEMMs. */
int facet_tf32_enabled(void);
/* Work below this many elements runs on one thread. A compile-time knob for
 * measuring (CFLAGS="-O3 -DFACET_PARALLEL_GRAIN=8192"); docs/threads.md. */
#ifndef FACET_PARALLEL_GRAIN
#define FACET_PARALLEL_GRAIN 32768
#endif

/* ---- the CUDA backend: declared once, in cuda_backend.h ----------------------------- */
#include "cuda_backend.h"

/* image.c, for the loader's workers: decode into a caller buffer of w*h*3
 * bytes, and prepare (resize, flip, normalise) into 3 x oh x ow floats. */
int facet_image_decode_raw(const void *bytes, size_t size, int w, int h, unsigned char *rgb);
void facet_image_prepare_raw(float *dst, int64_t oh, int64_t ow, const unsigned char *rgb, int64_t h, int64_t w,
                             int flip, const float *mean, const float *inv_std);

/* copy.c: returns when no queued copy reads s (0 at once without one); the
 * device side of copies and events is in cuda_backend.h */
int facet_storage_wait_copies(struct facet_storage *s);

/* ==== shared by the CPU sources (error.c, fileio.c) ====================================== */

/* Two contiguous float32 tensors of one shape on one device (error.c). */
/* copy.c: contiguous float16/bfloat16 (dtype) <-> float32 on the CPU, with
 * F16C / AVX-512 BF16 where the CPU has them; the bits of half_math.h */
void facet_half_widen(float *d, const uint16_t *s, int64_t n, int dtype);
void facet_half_narrow(uint16_t *d, const float *s, int64_t n, int dtype);
/* same device, same shape, both contiguous ("fn: an ... and bn ... must be contiguous with one shape") */
int facet_check_same_contiguous(const char *fn, const char *an, const facet_tensor *a, const char *bn,
                                const facet_tensor *b);
int facet_check_float_pair(const char *fn, const char *an, const facet_tensor *a, const char *bn,
                           const facet_tensor *b);

/* Exactly n bytes of fd at offset, retrying short reads (fileio.c). Errors
 * name fn and path; a read that hits the end means the file shrank while it
 * was open, since callers only ask for bytes they know are there. */
int facet_pread_full(int fd, const char *fn, const char *path, void *dst, int64_t n, int64_t offset);

/* runtime.c: records that CUDA has seen a GPU (facet_cuda_started) */
void facet_cuda_note_started(void);

#endif
