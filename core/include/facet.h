/*
 * facet.h - the one public C API of facet, a face-recognition training engine.
 *
 * A short tour:
 *   facet_tensor *x = NULL;
 *   int64_t sizes[2] = {128, 512};
 *   if (facet_tensor_init(&x, FACET_DTYPE_FLOAT32, FACET_DEVICE_CPU, 2, sizes) != 0)
 *       fprintf(stderr, "%s\n", facet_last_error());
 *   facet_tensor_rand_normal(x, 1, 0, 0.0f, 1.0f);
 *   facet_tensor_free(x);
 *
 * Rules of the ABI:
 *   - names: facet_<noun>_<verb> (facet_tensor_copy, facet_head_finish,
 *     facet_conv2d_forward); objects are made by *_init and released by
 *     *_free; ops on tensors are facet_tensor_*;
 *   - enum `facet_x` has values FACET_X_* and, where it lists kinds rather
 *     than flags or limits, a last member FACET_X_COUNT;
 *   - handles are opaque; the only structs are *_params settings, passed by
 *     const pointer and filled by field name (LuaJIT: ffi.new(type, table)),
 *     and reports a call fills through a pointer (struct
 *     facet_cuda_memory_stats; no typedef, its function has the same name);
 *   - every function returns an int status, 0 on success, and on failure
 *     leaves a message (naming the function and the shapes) that
 *     facet_last_error() returns for the calling thread; the only exceptions
 *     are facet_last_error() and facet_version(), which return strings;
 *   - constants are enums, never macros, so the generated LuaJIT cdef sees them;
 *   - indices and dimensions are 0-based here (the Lua layer adds 1), except
 *     where an `index_base` argument says otherwise; messages print argument
 *     values as passed but name a tensor's dims counting from 1 ("dim 1" is
 *     the first), as the Lua API does;
 *   - every argument is checked before anything is written: sizes and their
 *     products (no overflow), ranges, values stored into integer dtypes;
 *     nothing aborts or exits the process;
 *   - outputs come first, inputs next, options last; output tensors are
 *     allocated by the caller with the documented shape.
 *
 * The LuaJIT binding's cdef is produced from this file by `cc -E -P`
 * (see Makefile); keep it free of anything the FFI parser cannot read.
 */
#ifndef FACET_H
#define FACET_H

/* The cdef generator defines FACET_CDEF: LuaJIT already knows these types. */
#ifndef FACET_CDEF
#include <stddef.h>
#include <stdint.h>
#endif

/* The exported API; everything else in the library is hidden
 * (-fvisibility=hidden), and spec/cdef_spec.lua checks the two agree. */
#if defined(FACET_CDEF) || !defined(__GNUC__)
#define FACET_API
#else
#define FACET_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- version, errors, runtime ------------------------------------------ */

enum facet_version {
    FACET_VERSION_MAJOR = 0,
    FACET_VERSION_MINOR = 1,
    FACET_VERSION_PATCH = 0
};

/* "major.minor.patch", static storage. */
FACET_API const char *facet_version(void);
/* Message of the last failed call on this thread ("" if none). */
FACET_API const char *facet_last_error(void);

enum facet_status {
    FACET_STATUS_OK = 0,
    FACET_STATUS_ERR_ARG = 1,      /* bad argument: null, shape, dtype, device, range */
    FACET_STATUS_ERR_MEMORY = 2,   /* allocation failed */
    FACET_STATUS_ERR_IO = 3,       /* file or library could not be read or loaded */
    FACET_STATUS_ERR_DEVICE = 4,   /* CUDA unavailable or a CUDA call failed */
    FACET_STATUS_ERR_NUMERIC = 5   /* non-finite value where a finite one is required */
};

/* Threads used by facet's own loops (OpenMP) and by OpenBLAS.
 * Default: env FACET_THREADS, else the number of cores. */
FACET_API int facet_threads_set(int n);
FACET_API int facet_threads_get(int *n);

/* BLAS: the library is loaded on first use (or by this call). Before it is
 * loaded, OPENBLAS_CORETYPE is chosen from the CPU's features (cpuid) unless
 * the user set it. `name` receives the OpenBLAS core in use. */
FACET_API int facet_blas_info(char *name, size_t name_size);
/* The file name of the BLAS library loaded (as passed to dlopen). */
FACET_API int facet_blas_library(char *path, size_t path_size);

/* CUDA: *count is 0 where facet was built without CUDA or there is no GPU. */
FACET_API int facet_cuda_device_count(int *count);
/* *started is 1 once this process has seen a GPU through facet (a device
 * count above 0, a CUDA tensor): the CUDA driver has then read
 * CUDA_VISIBLE_DEVICES, so setting it no longer picks the GPU. */
FACET_API int facet_cuda_started(int *started);
/* The name of CUDA device `device` (0-based, < the count) and its memory in
 * bytes, for reports; an error where there is no such device. */
FACET_API int facet_cuda_device_name(int device, char *name, size_t name_size, int64_t *memory);
FACET_API int facet_cuda_built(int *built);
FACET_API int facet_cuda_synchronize(void);
/* TF32 for CUDA's float32 GEMMs (matmul, the heads' products, the
 * convolutions' GEMMs): on, cuBLAS may round the inputs to TF32 (a 10-bit
 * significand) for the tensor cores and sum in float32, as PyTorch's
 * allow_tf32; off (the default), products are exact float32 as on the CPU.
 * A process-wide setting, read at each GEMM; the CPU and 16-bit GEMMs ignore
 * it. */
FACET_API int facet_cuda_tf32_set(int enabled);
FACET_API int facet_cuda_tf32_get(int *enabled);
/* Timing marks on the GPU (CUDA events with timing): facet_cuda_mark_record
 * notes the point the default stream has reached, without waiting; the time
 * between two recorded marks is the GPU's time for the work queued between
 * them (idle gaps included), read by facet_cuda_mark_elapsed, which waits for
 * the later mark only. A mark can be recorded again. Errors where there is no
 * CUDA or no GPU. */
typedef struct facet_cuda_mark facet_cuda_mark;
FACET_API int facet_cuda_mark_init(facet_cuda_mark **out);
FACET_API int facet_cuda_mark_record(facet_cuda_mark *mark);
FACET_API int facet_cuda_mark_elapsed(const facet_cuda_mark *start, const facet_cuda_mark *end, double *ms);
FACET_API int facet_cuda_mark_free(facet_cuda_mark *mark);

/* CUDA tensors get their memory from a caching allocator (docs/gpu-memory.md):
 * memory a tensor frees stays reserved and goes to the next tensor that fits,
 * without cudaMalloc/cudaFree (cudaFree synchronises the device). When the
 * driver is out of memory the cache is emptied and the allocation tried once
 * more before FACET_STATUS_ERR_MEMORY. Without CUDA every count is 0. */
struct facet_cuda_memory_stats {
    int64_t allocated_bytes;        /* in blocks held by tensors (and kernels' scratch) now, sizes rounded up to 512 */
    int64_t requested_bytes;        /* what those tensors asked for */
    int64_t reserved_bytes;         /* held from the driver: allocated plus cached */
    int64_t peak_allocated_bytes;
    int64_t peak_reserved_bytes;
    int64_t segments;               /* driver allocations held now */
    int64_t blocks;                 /* blocks held by tensors now */
    int64_t allocs;                 /* allocations since the start */
    int64_t cache_hits;             /* ... of them served from the cache */
    int64_t driver_allocs;          /* cudaMalloc calls that succeeded */
    int64_t driver_frees;           /* cudaFree calls */
    int64_t oom_retries;            /* driver out of memory: cache emptied, tried again */
    int64_t ooms;                   /* allocations that failed even then */
};
FACET_API int facet_cuda_memory_stats(struct facet_cuda_memory_stats *stats);
/* Returns the cached device memory no tensor uses to the driver (waits for
 * the device). Tensors keep theirs. */
FACET_API int facet_cuda_empty_cache(void);

/* ---- tensors -------------------------------------------------------------- */

enum facet_dtype {
    FACET_DTYPE_FLOAT32 = 0,
    FACET_DTYPE_INT32 = 1,
    FACET_DTYPE_INT64 = 2,
    FACET_DTYPE_UINT8 = 3,
    FACET_DTYPE_FLOAT16 = 4,    /* IEEE binary16; the ops that take it: docs/mixed-precision.md */
    FACET_DTYPE_BFLOAT16 = 5,   /* bfloat16 (float32's top 16 bits), likewise */
    FACET_DTYPE_COUNT = 6
};

enum facet_device {
    FACET_DEVICE_CPU = 0,
    FACET_DEVICE_CUDA = 1,
    FACET_DEVICE_COUNT = 2
};

enum facet_max {
    FACET_MAX_DIMS = 8
};

/* A tensor is a view (sizes, strides in elements, offset) of a refcounted
 * storage. Views share storage; the storage is freed with its last view. */
typedef struct facet_tensor facet_tensor;

/* New contiguous tensor, uninitialised. ndim 0 gives a scalar (1 element).
 * Sizes >= 0; the product of the sizes (counting a size 0 as 1, so that no
 * stride or partial product of an empty shape can overflow either) times the
 * element size must not pass 2^47 bytes, else FACET_STATUS_ERR_MEMORY naming
 * the bytes asked, as when the allocation fails. */
FACET_API int facet_tensor_init(facet_tensor **out, int dtype, int device, int ndim, const int64_t *sizes);
/* Releases the handle (and the storage with its last view). NULL is a no-op. */
FACET_API int facet_tensor_free(facet_tensor *t);

FACET_API int facet_tensor_ndim(const facet_tensor *t, int *ndim);
FACET_API int facet_tensor_dtype(const facet_tensor *t, int *dtype);
FACET_API int facet_tensor_device(const facet_tensor *t, int *device);
/* sizes and strides receive ndim values each; either may be NULL. */
FACET_API int facet_tensor_shape(const facet_tensor *t, int64_t *sizes, int64_t *strides);
FACET_API int facet_tensor_numel(const facet_tensor *t, int64_t *numel);
FACET_API int facet_tensor_is_contiguous(const facet_tensor *t, int *contiguous);
/* Address of the first element (host or device memory). */
FACET_API int facet_tensor_data(const facet_tensor *t, void **data);
/* Element size in bytes of a dtype. */
FACET_API int facet_dtype_size(int dtype, size_t *size);

/* Views (share storage with t). narrow: 0 <= start <= size and
 * 0 <= length <= size - start (no start + length overflow); select:
 * 0 <= index < size. */
FACET_API int facet_tensor_narrow(facet_tensor **out, const facet_tensor *t, int dim, int64_t start, int64_t length);
FACET_API int facet_tensor_select(facet_tensor **out, const facet_tensor *t, int dim, int64_t index);
/* Needs contiguous data; one size may be -1 (inferred; an error when the other
 * sizes multiply to 0). The sizes must multiply to t's element count (checked
 * without overflow). */
FACET_API int facet_tensor_reshape(facet_tensor **out, const facet_tensor *t, int ndim, const int64_t *sizes);
/* Strided view with dims permuted: view dim i is t's dim perm[i]. */
FACET_API int facet_tensor_permute_view(facet_tensor **out, const facet_tensor *t, const int *perm);
/* A new handle on the same view. */
FACET_API int facet_tensor_share(facet_tensor **out, const facet_tensor *t);

/* ---- data movement --------------------------------------------------------- */

/* Values stored into an integer dtype (int32, int64, uint8) by copy, fill,
 * arange and set are truncated toward zero and must then lie in the dtype's
 * range: anything else (NaN and +-inf included) is FACET_STATUS_ERR_ARG naming
 * the value and the dtype, and nothing is written. float32 stores are never
 * checked. (Arithmetic on integer tensors, facet_tensor_unary/binary, still
 * saturates.) */

/* dst <- src: same number of elements (shapes may differ only if both are
 * contiguous), any strides, any dtypes (converted, by the rule above: a CUDA
 * src converted into an integer dtype is read back to check it), any devices.
 * src may overlap dst: when it is not the very same view it is read through a
 * temporary copy first (as PyTorch's copy_), so dst gets src's values from
 * before the call. */
FACET_API int facet_tensor_copy(facet_tensor *dst, const facet_tensor *src);
/* dst[k] <- src[k] for n pairs at once (a model's state saved or put back):
 * each pair of one shape and dtype, both contiguous, every tensor on dst[0]'s
 * device; no dst may overlap another dst or any src. Every pair is checked
 * before anything is written. The bits of n facet_tensor_copy calls; on CUDA
 * one launch per 48 pairs instead of n. */
FACET_API int facet_tensor_copy_list(facet_tensor *const *dst, facet_tensor *const *src, int n);
FACET_API int facet_tensor_fill(facet_tensor *t, double value);
/* t[i] = start + i*step over the flattened tensor (the two ends are checked
 * against an integer dtype's range). */
FACET_API int facet_tensor_arange(facet_tensor *t, double start, double step);
/* Host buffer <-> contiguous tensor of the same dtype; nbytes must equal the
 * tensor's byte size. Works for CPU and CUDA tensors. */
FACET_API int facet_tensor_write(facet_tensor *t, const void *src, size_t nbytes);
FACET_API int facet_tensor_read(const facet_tensor *t, void *dst, size_t nbytes);
/* Read/write one element at an index of ndim coordinates, as a double. */
FACET_API int facet_tensor_get(const facet_tensor *t, const int64_t *index, double *value);
FACET_API int facet_tensor_set(facet_tensor *t, const int64_t *index, double value);

/* ---- random numbers --------------------------------------------------------
 * Counter-based (Philox-4x32-10): element i of the flattened tensor is drawn
 * from counter (offset + i) under key `seed`, identically on CPU and CUDA. */
FACET_API int facet_tensor_rand_uniform(facet_tensor *t, uint64_t seed, uint64_t offset, float low, float high);
FACET_API int facet_tensor_rand_normal(facet_tensor *t, uint64_t seed, uint64_t offset, float mean, float std);

/* ---- elementwise ------------------------------------------------------------
 * Any strides; float32, float16, bfloat16, int32, int64, uint8 (integer
 * results truncate toward zero and saturate; the 16-bit floats compute in
 * float32 and round once to nearest even). out may be the very same view as an input (in place:
 * same storage, offset, sizes and strides); an input that otherwise overlaps
 * out (a shifted or broadcast view of it) is read through a temporary copy,
 * so every op sees its inputs as they were before the call. */

enum facet_unary {
    FACET_UNARY_NEG = 0,
    FACET_UNARY_EXP = 1,
    FACET_UNARY_LOG = 2,
    FACET_UNARY_SQRT = 3,
    FACET_UNARY_ABS = 4,
    FACET_UNARY_CLAMP = 5,      /* min(max(x, a), b) */
    FACET_UNARY_ADD = 6,        /* x + a */
    FACET_UNARY_MUL = 7,        /* x * a */
    FACET_UNARY_RSUB = 8,       /* a - x */
    FACET_UNARY_RDIV = 9,       /* a / x */
    FACET_UNARY_POW = 10,       /* x ^ a */
    FACET_UNARY_SQUARE = 11,
    FACET_UNARY_RSQRT = 12,
    FACET_UNARY_SIGMOID = 13,
    FACET_UNARY_TANH = 14,
    FACET_UNARY_RELU = 15,
    FACET_UNARY_SIGN = 16,
    FACET_UNARY_COS = 17,
    FACET_UNARY_SIN = 18,
    FACET_UNARY_ACOS = 19,      /* input clamped to [-1, 1] */
    FACET_UNARY_FLOOR = 20,
    FACET_UNARY_COUNT = 21
};

enum facet_binary {
    FACET_BINARY_ADD = 0,
    FACET_BINARY_SUB = 1,
    FACET_BINARY_MUL = 2,
    FACET_BINARY_DIV = 3,
    FACET_BINARY_MAX = 4,
    FACET_BINARY_MIN = 5,
    FACET_BINARY_POW = 6,
    FACET_BINARY_EQ = 7,        /* 1 where equal, else 0 */
    FACET_BINARY_LT = 8,
    FACET_BINARY_GT = 9,
    FACET_BINARY_COUNT = 10
};

/* out = op(x; a, b); out has x's shape. */
FACET_API int facet_tensor_unary(facet_tensor *out, const facet_tensor *x, int op, double a, double b);
/* out = op(x, y) with NumPy broadcasting (trailing dims aligned, size-1 dims
 * stretched); out has the broadcast shape. */
FACET_API int facet_tensor_binary(facet_tensor *out, const facet_tensor *x, const facet_tensor *y, int op);
/* out = x + alpha * y (same shapes); the axpy of optimizers. */
FACET_API int facet_tensor_axpy(facet_tensor *out, const facet_tensor *x, double alpha, const facet_tensor *y);

/* ---- reductions -------------------------------------------------------------
 * dim -1 reduces everything into a 1-element out; otherwise out has x's
 * shape with that dim removed (keepdim 0) or set to 1 (keepdim 1); the
 * element count is what is checked. ARGMAX/ARGMIN write int64 indices
 * counted from index_base. float32 input; sums accumulate in double on CPU.
 * A float16/bfloat16 x is widened to float32 first; out (not for the arg ops)
 * may then be float32 or x's dtype (the result rounded once). */

enum facet_reduce {
    FACET_REDUCE_SUM = 0,
    FACET_REDUCE_MEAN = 1,
    FACET_REDUCE_MAX = 2,
    FACET_REDUCE_MIN = 3,
    FACET_REDUCE_ARGMAX = 4,
    FACET_REDUCE_ARGMIN = 5,
    FACET_REDUCE_SUMSQ = 6,
    FACET_REDUCE_COUNT = 7
};

FACET_API int facet_tensor_reduce(facet_tensor *out, const facet_tensor *x, int op, int dim, int index_base);

/* The sums of squares of n tensors at once (an optimizer's global gradient
 * norm): out[k] = the sum of xs[k]'s squared elements, accumulated in double
 * and rounded to float once, as FACET_REDUCE_SUMSQ gives it (the same bits
 * on the CPU). out: float32, contiguous, n elements, on the tensors' device.
 * row_coefs and params may be NULL, or hold a deferred per-row part where
 * row_coefs[k] is not NULL: then the values squared are those of the complete
 * gradient xs[k] + row_coefs[k]_r * params[k]_r (row r of params[k], 2-D, or
 * its one row; row_coefs[k] one value per row, params[k] shaped like
 * xs[k]), computed as the SGD update does and written nowhere. Every tensor
 * float32, contiguous, on one device, all checked before anything is
 * written. On CUDA: two launches per 48 tensors, nothing read back. */
FACET_API int facet_tensor_sumsq_list(facet_tensor *out, facet_tensor *const *xs, facet_tensor *const *row_coefs,
                                      facet_tensor *const *params, int n);

/* ---- linear algebra and row normalisation -----------------------------------
 * out = alpha * op(a) @ op(b) + beta * out, float32; or float16/bfloat16 a
 * and b (one dtype) with out of that dtype or float32, accumulated in float32
 * (CUDA: cublasGemmEx on tensor cores; CPU: widened to float32 for SGEMM).
 * 2-D: a (M x K or K x M), b (K x N or N x K), out M x N.
 * 3-D batched: a and out have a batch dim; b has the same batch dim or is
 * 2-D (shared). Inputs may be transposed views; other layouts are copied. */
FACET_API int facet_tensor_matmul(facet_tensor *out, const facet_tensor *a, const facet_tensor *b,
                 int transpose_a, int transpose_b, float alpha, float beta);

/* Rows of a 2-D float32 x scaled to unit L2 norm: out = x / max(||x||, eps).
 * norms (may be NULL) receives the row norms ||x|| (rows elements). */
FACET_API int facet_tensor_l2_normalize(facet_tensor *out, facet_tensor *norms, const facet_tensor *x, float eps);
/* out_k = ||x_k|| for the rows of a 2-D x. */
FACET_API int facet_tensor_row_norms(facet_tensor *out, const facet_tensor *x);
/* dx = (dy - (dy . y) y) / max(norm, eps) per row: the backward of y = x/||x||. */
FACET_API int facet_tensor_l2_normalize_backward(facet_tensor *dx, const facet_tensor *dy, const facet_tensor *y,
                                const facet_tensor *norms, float eps);
/* out_k += coef_k * x_k for the rows of 2-D tensors. */
FACET_API int facet_tensor_rows_axpy(facet_tensor *out, const facet_tensor *coef, const facet_tensor *x);

/* ---- mixed precision: dynamic loss scaling (docs/mixed-precision.md) ---------
 * Multiplies each of the n gradients in place by inv_scale (finite, > 0) and
 * sets *found_nonfinite to 1 when any element was NaN or +-inf before, else 0:
 * one pass per tensor and one flag for the whole list (on CUDA one read back).
 * The tensors: contiguous float32, float16 or bfloat16, all on one device;
 * every one is checked before any is written. Every tensor is scaled even
 * when a non-finite value is found (the caller then skips the step). */
FACET_API int facet_amp_unscale(facet_tensor *const *grads, int n, float inv_scale, int *found_nonfinite);

/* ---- indexing ---------------------------------------------------------------
 * index: 1-D int32 or int64 with values counted from index_base, all checked
 * before anything is written. An input (src) that overlaps the output in any
 * way, even as the same view, is read through a temporary copy: rows and
 * columns are read in index order, so no result depends on the order. */

/* out[i, :] = src[index[i], :]   (src R x C, out n x C) */
FACET_API int facet_tensor_index_select(facet_tensor *out, const facet_tensor *src, const facet_tensor *index, int index_base);
/* dst[index[i], :] += alpha * src[i, :]   (duplicates accumulate) */
FACET_API int facet_tensor_index_add(facet_tensor *dst, const facet_tensor *src, const facet_tensor *index, double alpha, int index_base);
/* dst[index[i], :] = src[i, :] */
FACET_API int facet_tensor_index_copy(facet_tensor *dst, const facet_tensor *src, const facet_tensor *index, int index_base);
/* Along the last dim of a 2-D tensor, one index per row (index has R elements):
 * gather: out[i] = src[i, index[i]];  scatter: dst[i, index[i]] = src[i]. */
FACET_API int facet_tensor_gather_cols(facet_tensor *out, const facet_tensor *src, const facet_tensor *index, int index_base);
FACET_API int facet_tensor_scatter_cols(facet_tensor *dst, const facet_tensor *src, const facet_tensor *index, int index_base);

/* Contiguous copy with dims permuted: out dim i is x's dim perm[i]. x may
 * overlap out (it is then read through a temporary copy). */
FACET_API int facet_tensor_permute(facet_tensor *out, const facet_tensor *x, const int *perm);

/* ---- loss heads ---------------------------------------------------------------
 * A head turns the B x K logits of a batch into a loss and its gradient. The
 * Lua layer runs the GEMMs; the fused row passes live here. Cosine heads get
 * the raw GEMM output of normalised x against the unnormalised W and divide by
 * the norms of W's rows (wnorm) themselves, so W is never copied. Raw heads
 * (softmax, l2-softmax) use the GEMM output plus bias as the logits.
 *
 * Per row i with label y, c = cos(theta) clamped to [-1, 1]:
 *   target logit     s * f(c_y)               (f: the margin function)
 *   other logits     s * c_k + I_ik * log h(c_k),  I_ik = [c_k > f(c_y)]
 *   loss_i           logsumexp_k(logit_ik) - target logit, then per-sample
 *                    weighting (mean, focal, hard mining).
 * Every function takes a contiguous block of classes [class_offset,
 * class_offset + Kb) so heads can later be sharded across processes; the
 * batch-level parts (target logits, the per-sample weights) live in `rows`,
 * a B x FACET_HEAD_ROW_COUNT float32 tensor. */

enum facet_head_margin {
    FACET_HEAD_MARGIN_NONE = 0,        /* f = c */
    FACET_HEAD_MARGIN_COMBINED = 1,    /* f = cos(m1*theta + m3) - m2 */
    FACET_HEAD_MARGIN_ARC = 2,         /* f = cos(theta + m3); c - m3*sin(m3) once theta + m3 > pi */
    FACET_HEAD_MARGIN_ASOFTMAX = 3,    /* f = (lambda*c + psi(theta)) / (1 + lambda) */
    FACET_HEAD_MARGIN_PROGRAM = 4,     /* f and df/dc from compiled expressions */
    FACET_HEAD_MARGIN_ADAFACE = 5,     /* per row, with z_i = rows[i, FACET_HEAD_ROW_NORM] (AdaFace):
                                        * f = cos(clip(acos(c') - m3 z_i, e, pi - e)) - m3 (1 + z_i),
                                        * c' = clamp(c, -1 + e, 1 - e), e = 1e-3 */
    FACET_HEAD_MARGIN_MAGFACE = 6,     /* per row, with m_i = rows[i, FACET_HEAD_ROW_NORM] (MagFace):
                                        * f = cos(theta + m_i); c - m_i sin(m_i) once c <= cos(pi - m_i);
                                        * with EASY_MARGIN f = c where c <= 0 */
    FACET_HEAD_MARGIN_ELASTIC_ARC = 7, /* per row, m_i = rows[i, FACET_HEAD_ROW_NORM] drawn by
                                        * facet_head_elastic (ElasticFace-Arc): MAGFACE's formula */
    FACET_HEAD_MARGIN_ELASTIC_COS = 8, /* per row (ElasticFace-Cos): f = c - m_i */
    FACET_HEAD_MARGIN_COUNT = 9
};

enum facet_head_reweight {
    FACET_HEAD_REWEIGHT_NONE = 0,
    FACET_HEAD_REWEIGHT_FIXED = 1,     /* log h = s t I          (MV-Softmax Eq. 7) */
    FACET_HEAD_REWEIGHT_ADAPTIVE = 2,  /* log h = s t (c + 1) I  (Eq. 8) */
    FACET_HEAD_REWEIGHT_PROGRAM = 3,   /* log h (at I = 1) and its derivative compiled */
    FACET_HEAD_REWEIGHT_CURRICULAR = 4,/* log h = s c (t_i + c - 1) I, so a hard class's logit is
                                        * s c (t_i + c) (CurricularFace); t_i = rows[i, FACET_HEAD_ROW_T],
                                        * written by facet_head_update_t */
    FACET_HEAD_REWEIGHT_COUNT = 5
};

enum facet_head_sample {
    FACET_HEAD_SAMPLE_MEAN = 0,        /* mean of the per-sample losses */
    FACET_HEAD_SAMPLE_FOCAL = 1,       /* (1 - p_y)^gamma * CE, averaged */
    FACET_HEAD_SAMPLE_HARD = 2,        /* mean over the floor(keep*B) highest losses */
    FACET_HEAD_SAMPLE_COUNT = 3
};

enum facet_head_param {
    FACET_HEAD_PARAM_S = 0,             /* scale (1 for raw heads) */
    FACET_HEAD_PARAM_M1 = 1,
    FACET_HEAD_PARAM_M2 = 2,
    FACET_HEAD_PARAM_M3 = 3,
    FACET_HEAD_PARAM_LAMBDA = 4,        /* A-Softmax's lambda */
    FACET_HEAD_PARAM_T = 5,             /* MV-Softmax's t */
    FACET_HEAD_PARAM_GAMMA = 6,         /* focal gamma */
    FACET_HEAD_PARAM_KEEP = 7,          /* hard-mining fraction */
    FACET_HEAD_PARAM_EASY_MARGIN = 8,   /* 1: the margin only where c_y > 0 */
    FACET_HEAD_PARAM_RAW = 9,           /* 1: logits are the GEMM output (+ bias), not cosines */
    FACET_HEAD_PARAM_L_A = 10,          /* MagFace: the feature norms' range [l_a, u_a], */
    FACET_HEAD_PARAM_U_A = 11,
    FACET_HEAD_PARAM_L_M = 12,          /* the margins' [l_m, u_m] it maps onto, */
    FACET_HEAD_PARAM_U_M = 13,
    FACET_HEAD_PARAM_LAMBDA_G = 14,     /* and the weight of the norm regulariser g */
    FACET_HEAD_PARAM_STD = 15,          /* ElasticFace: the margins' standard deviation (their mean: M3) */
    FACET_HEAD_PARAM_PLUS = 16,         /* ElasticFace+: 1 sorts the margins against c_y */
    FACET_HEAD_PARAM_COUNT = 17
};

/* Fields of a row of `rows`. */
enum facet_head_row {
    FACET_HEAD_ROW_COS = 0,            /* c_y */
    FACET_HEAD_ROW_MARGIN = 1,         /* f(c_y) */
    FACET_HEAD_ROW_MARGIN_GRAD = 2,    /* df/dc at c_y */
    FACET_HEAD_ROW_TARGET = 3,         /* the target logit */
    FACET_HEAD_ROW_MAX = 4,            /* row max of the logits (of the block) */
    FACET_HEAD_ROW_SUMEXP = 5,         /* sum of exp(logit - max) (of the block) */
    FACET_HEAD_ROW_LOSS = 6,           /* cross-entropy of the row */
    FACET_HEAD_ROW_WEIGHT = 7,         /* dLoss/dCE_i: 1/B, focal factor / B, or 0 / 1/n_keep */
    FACET_HEAD_ROW_T = 8,              /* CURRICULAR's t for this row (facet_head_update_t) */
    FACET_HEAD_ROW_NORM = 9,           /* ADAFACE's normalised feature norm z_i in [-1, 1]
                                        * (facet_head_update_norms); read by facet_head_target only
                                        * (a sharded head's sum of rows over its ranks scales it after);
                                        * MAGFACE's margin m_i (facet_head_update_margins) */
    FACET_HEAD_ROW_MARGIN_DM = 10,     /* df/dm at c_y (MAGFACE; written by facet_head_target) */
    FACET_HEAD_ROW_EXTRA = 11,         /* MAGFACE: lambda_g g(a_i), added to the loss as is (no weighting) */
    FACET_HEAD_ROW_COUNT = 12
};

/* Compiled expressions: instructions of 5 int32 (op, dst, a, b, c) over
 * float registers; register 0 holds the input c; the result is the dst of the
 * last instruction. FACET_EXPR_OP_CONST loads consts[a]. */
enum facet_expr_op {
    FACET_EXPR_OP_CONST = 0, FACET_EXPR_OP_ADD = 1, FACET_EXPR_OP_SUB = 2, FACET_EXPR_OP_MUL = 3,
    FACET_EXPR_OP_DIV = 4, FACET_EXPR_OP_NEG = 5, FACET_EXPR_OP_EXP = 6, FACET_EXPR_OP_LOG = 7,
    FACET_EXPR_OP_SQRT = 8, FACET_EXPR_OP_COS = 9, FACET_EXPR_OP_SIN = 10, FACET_EXPR_OP_ACOS = 11,
    FACET_EXPR_OP_ABS = 12, FACET_EXPR_OP_MIN = 13, FACET_EXPR_OP_MAX = 14, FACET_EXPR_OP_POW = 15,
    FACET_EXPR_OP_LT = 16, FACET_EXPR_OP_LE = 17, FACET_EXPR_OP_GT = 18, FACET_EXPR_OP_GE = 19,
    FACET_EXPR_OP_WHERE = 20,        /* dst = a != 0 ? b : c */
    FACET_EXPR_OP_FLOOR = 21,
    FACET_EXPR_OP_COUNT = 22
};

enum facet_expr_max {
    FACET_EXPR_MAX_INSTR = 256,
    FACET_EXPR_MAX_REGS = 64,
    FACET_EXPR_MAX_CONSTS = 64
};

enum facet_head_program {
    FACET_HEAD_PROGRAM_MARGIN = 0,     /* f(c) */
    FACET_HEAD_PROGRAM_MARGIN_GRAD = 1,/* df/dc */
    FACET_HEAD_PROGRAM_LOGH = 2,       /* log h(c) at I = 1 */
    FACET_HEAD_PROGRAM_LOGH_GRAD = 3,  /* d log h / dc at I = 1 */
    FACET_HEAD_PROGRAM_COUNT = 4
};

typedef struct facet_head facet_head;

FACET_API int facet_head_init(facet_head **out, int margin, int reweight, int sample);
FACET_API int facet_head_free(facet_head *head);
FACET_API int facet_head_set(facet_head *head, int param, double value);
FACET_API int facet_head_set_program(facet_head *head, int slot, int n_instr, const int32_t *code, int n_consts,
                           const double *consts);
/* Evaluates a program slot on n host values (for validation and tests). */
FACET_API int facet_head_eval_program(const facet_head *head, int slot, int64_t n, const float *c, float *out);

/* Target logits for the rows whose label lies in this block. logits: B x Kb
 * GEMM output (unchanged); wnorm: Kb (NULL for raw heads); bias: Kb or NULL;
 * labels: B int32/int64 class ids (0-based, all < classes). A label outside
 * [0, classes) is an error: on the CPU at once; on CUDA tensors the kernel
 * checks the labels where they are (the host does not wait), and the next
 * facet_head_finish of the head fails instead, before it writes *loss
 * (facet_head_bad_label gives the row and label). The kernels never read
 * outside the block with a bad label. */
FACET_API int facet_head_target(facet_head *head, facet_tensor *rows, const facet_tensor *logits, const facet_tensor *wnorm,
                      const facet_tensor *bias, const facet_tensor *labels, int64_t class_offset, int64_t classes);
/* CurricularFace's adaptive t, between the target calls (every row's c_y in
 * rows, merged across shards) and the first partial: t (a 1-element float32
 * tensor on the rows' device, the head's state) becomes
 * (1 - momentum) t + momentum mean_i c_y,i (the mean summed in double), and
 * every row's FACET_HEAD_ROW_T receives it. momentum in [0, 1] (0: t stays, exactly).
 * On CUDA one kernel; the host does not wait. */
FACET_API int facet_head_update_t(facet_head *head, facet_tensor *rows, facet_tensor *t, double momentum);
/* AdaFace's feature-norm statistics, before the target calls: with
 * n_i = clamp(norms_i, 0.001, 100) over the B rows (norms: the ||x_i|| of
 * the batch, float32 on the rows' device), mean and std (1-element float32
 * tensors, the head's state) become (1 - momentum) old + momentum batch (the
 * batch's mean, and its unbiased standard deviation, summed in double;
 * momentum 0 or B = 1: they stay), and then every row gets
 * rows[i, FACET_HEAD_ROW_NORM] = clamp(h (n_i - mean) / (std + 1e-3), -1, 1).
 * momentum in [0, 1], h > 0. On CUDA one kernel; the host does not wait. */
FACET_API int facet_head_update_norms(facet_head *head, facet_tensor *rows, const facet_tensor *norms,
                                      facet_tensor *mean, facet_tensor *std, double momentum, double h);
/* MagFace's per-row margins, before the target calls: with
 * a_i = clamp(norms_i, l_a, u_a) (norms: the ||x_i|| of the B rows, float32
 * on the rows' device; the head's FACET_HEAD_PARAM_L_A ... LAMBDA_G, with
 * 0 < l_a < u_a), rows[i, FACET_HEAD_ROW_NORM] = l_m + (u_m - l_m) (a_i - l_a) / (u_a - l_a)
 * and rows[i, FACET_HEAD_ROW_EXTRA] = lambda_g (1 / a_i + a_i / u_a^2);
 * facet_head_finish then adds the mean of EXTRA to the loss. */
FACET_API int facet_head_update_margins(facet_head *head, facet_tensor *rows, const facet_tensor *norms);
/* After facet_head_finish of a MagFace head: coef_i = dLoss/d||x_i|| of
 * each row through its margin and its regulariser (0 where norms_i lies
 * outside [l_a, u_a]: the clamp), from rows and the forward's norms; the
 * caller adds coef_i x_i / ||x_i|| to dL/dx_i. coef: B float32. */
FACET_API int facet_head_norm_grad(const facet_head *head, const facet_tensor *rows, const facet_tensor *norms,
                                   facet_tensor *coef);
/* ElasticFace's per-row margins, after the target calls (every row's c_y in
 * rows, merged across shards) and before the first partial: draws (B
 * float32 on the rows' device, standard normal samples, e.g. from
 * facet_tensor_rand_normal) become m_i = m + std draw_i (fmaf; m: the head's
 * FACET_HEAD_PARAM_M3, std: FACET_HEAD_PARAM_STD). With FACET_HEAD_PARAM_PLUS
 * (ElasticFace+) the draws are sorted first and the smallest goes to the row
 * with the largest c_y (ties to the lower row, a NaN c_y last): harder
 * samples get larger margins. rows[i, FACET_HEAD_ROW_NORM] receives m_i and
 * the row's MARGIN, MARGIN_GRAD and TARGET are recomputed from its c_y
 * (MARGIN_DM and EXTRA are used as scratch). The head's margin must be
 * ELASTIC_ARC or ELASTIC_COS. On CUDA the host does not wait. */
FACET_API int facet_head_elastic(facet_head *head, facet_tensor *rows, const facet_tensor *draws);
/* Writes the block's row max and sum of exponentials into rows; the block
 * (the GEMM output) is read, not changed. */
FACET_API int facet_head_partial(facet_head *head, facet_tensor *rows, facet_tensor *logits, const facet_tensor *wnorm,
                       const facet_tensor *bias, const facet_tensor *labels, int64_t class_offset);
/* Batch level: per-row loss and weight (focal, hard mining) from the merged
 * max/sumexp; *loss receives the head's loss. On CUDA it runs on the device
 * and reads back only the loss, with the verdict on the labels of the
 * head's facet_head_target calls since the last finish (above). Hard mining
 * keeps the floor(keep B) largest losses, ties to the lower row, a NaN loss
 * counting as the largest. */
FACET_API int facet_head_finish(facet_head *head, facet_tensor *rows, double *loss);
/* After a facet_head_finish on CUDA that failed on a label: the first such
 * row (0-based) of the facet_head_target call that saw it, the label and that
 * call's classes; *row = -1 when the last finish found none (or ran on the CPU,
 * where facet_head_target itself fails). */
FACET_API int facet_head_bad_label(const facet_head *head, int64_t *row, int64_t *label, int64_t *classes);
/* Overwrites the block (still the GEMM output) with G'_ik = dLoss/dcos_ik /
 * wnorm_k (raw heads: dLoss/dlogit_ik). colsum (Kb, may be NULL) receives sum_i G'_ik (the bias
 * gradient of raw heads); colsum_cos (Kb, may be NULL) receives
 * sum_i G'_ik * c_ik (the radial part to take out of W's gradient). */
FACET_API int facet_head_backward(facet_head *head, facet_tensor *logits, const facet_tensor *rows, const facet_tensor *wnorm,
                        const facet_tensor *bias, const facet_tensor *labels, int64_t class_offset,
                        facet_tensor *colsum, facet_tensor *colsum_cos);
/* Sub-centres (Sub-center ArcFace, Deng et al., ECCV 2020): a class c of the
 * block has k sub-centres, rows c k ... c k + k - 1 of W, so the GEMM output
 * sub is B x (Kb k) and wnorm holds its Kb k norms (k = sub's columns / Kb,
 * 1 to 255). Before the target calls, cos (B x Kb float32) receives each
 * class's best cosine, max_j facet_head_cos(sub[i, c k + j]) (the first of
 * equal ones; a NaN wins), and index (B x Kb uint8) that j. The head's row
 * passes then run on cos with unit norms (a Kb vector of ones). sub is read,
 * not changed. */
FACET_API int facet_head_subcenter_max(facet_tensor *cos, facet_tensor *index, const facet_tensor *sub,
                                       const facet_tensor *wnorm);
/* After facet_head_backward over cos (unit norms; grad: its output, dLoss/dcos
 * B x Kb), overwrites sub (still the GEMM output) with dLoss/d(GEMM output):
 * grad[i, c] / ||w_{c k + j}|| at the j that index names, 0 at the class's
 * other sub-centres. colsum_cos (Kb k, may be NULL) receives
 * sum_i sub'[i, n] * cos[i, n] per sub-centre n (facet_head_backward's radial
 * sums, for W's gradient). */
FACET_API int facet_head_subcenter_scatter(facet_tensor *sub, facet_tensor *colsum_cos, const facet_tensor *grad,
                                           const facet_tensor *index, const facet_tensor *wnorm);

/* ---- layers ----------------------------------------------------------------------
 * float32, NCHW, contiguous. Backward functions ACCUMULATE into parameter
 * gradients (grad_weight, grad_bias, grad_slope) and OVERWRITE grad_x; any
 * gradient output may be NULL when it is not wanted. */

/* Convolution geometry. x: N x C x H x W; weight: O x C/groups x kh x kw;
 * bias: O or NULL; out: N x O x Ho x Wo with
 * Ho = (H + 2 pad_h - dilation_h (kh - 1) - 1) / stride_h + 1. */
typedef struct facet_conv2d_params {
    int32_t stride_h, stride_w;         /* >= 1 */
    int32_t pad_h, pad_w;               /* >= 0 */
    int32_t dilation_h, dilation_w;     /* >= 1 */
    int32_t groups;                     /* >= 1, divides C and O */
} facet_conv2d_params;
FACET_API int facet_conv2d_workspace_size(int64_t *elements, const facet_tensor *x, const facet_tensor *weight,
                                const facet_conv2d_params *params);
FACET_API int facet_conv2d_forward(facet_tensor *out, const facet_tensor *x, const facet_tensor *weight,
                         const facet_tensor *bias, facet_tensor *workspace, const facet_conv2d_params *params);
FACET_API int facet_conv2d_backward(facet_tensor *grad_x, facet_tensor *grad_weight, facet_tensor *grad_bias,
                          const facet_tensor *grad_out, const facet_tensor *x, const facet_tensor *weight,
                          facet_tensor *workspace, const facet_conv2d_params *params);

/* Batch normalisation over dim 1 of N x C or N x C x H x W. Training: batch
 * statistics (biased variance to normalise; running_var gets the unbiased one),
 * running = (1 - momentum) running + momentum batch; save_mean / save_invstd
 * (C each) keep what backward needs. Evaluation: running statistics.
 * weight/bias (C) may be NULL (affine off); running_* may be NULL in training. */
FACET_API int facet_batchnorm_forward(facet_tensor *out, facet_tensor *save_mean, facet_tensor *save_invstd,
                            facet_tensor *running_mean, facet_tensor *running_var, const facet_tensor *x,
                            const facet_tensor *weight, const facet_tensor *bias, int training, double momentum,
                            double eps);
FACET_API int facet_batchnorm_backward(facet_tensor *grad_x, facet_tensor *grad_weight, facet_tensor *grad_bias,
                             const facet_tensor *grad_out, const facet_tensor *x, const facet_tensor *weight,
                             const facet_tensor *save_mean, const facet_tensor *save_invstd, int training);
/* Synchronised batch normalisation over several processes (PyTorch's
 * SyncBatchNorm split): facet_batchnorm_stats gives one process's per-channel
 * mean and biased variance (C each, float32) of x (at least one value per
 * channel); the caller combines every process's into the global ones and
 * normalises with facet_batchnorm_forward in evaluation mode (training 0,
 * the global mean and variance as running_mean / running_var). Backward:
 * facet_batchnorm_backward in evaluation mode with grad_x NULL gives this
 * process's sum(dy xhat) and sum(dy) (as grad_weight / grad_bias); summed
 * over every process into sum_dy_xhat and sum_dy (C each, float32), with
 * count the values per channel over every process (>= 2 and >= x's N*H*W),
 * facet_batchnorm_backward_elemt writes grad_x (shaped and typed like x):
 * the training backward of the whole batch, restricted to x's samples. */
FACET_API int facet_batchnorm_stats(facet_tensor *mean, facet_tensor *var, const facet_tensor *x);
FACET_API int facet_batchnorm_backward_elemt(facet_tensor *grad_x, const facet_tensor *grad_out, const facet_tensor *x,
                                   const facet_tensor *weight, const facet_tensor *save_mean,
                                   const facet_tensor *save_invstd, const facet_tensor *sum_dy,
                                   const facet_tensor *sum_dy_xhat, int64_t count);

/* Pooling. Max pooling records the flat input index (within the image plane)
 * of each maximum in an int32 argmax tensor shaped like out; padding never
 * wins. */
enum facet_pool_kind { FACET_POOL_KIND_MAX = 0, FACET_POOL_KIND_AVG = 1, FACET_POOL_KIND_COUNT = 2 };
typedef struct facet_pool2d_params {
    int32_t kernel_h, kernel_w;         /* >= 1 */
    int32_t stride_h, stride_w;         /* >= 1 */
    int32_t pad_h, pad_w;               /* in [0, kernel / 2] */
    int32_t count_include_pad;          /* average pooling: 1 divides by the whole window */
} facet_pool2d_params;
FACET_API int facet_pool2d_forward(facet_tensor *out, facet_tensor *argmax, const facet_tensor *x, int kind,
                         const facet_pool2d_params *params);
FACET_API int facet_pool2d_backward(facet_tensor *grad_x, const facet_tensor *grad_out, const facet_tensor *argmax, int kind,
                          const facet_pool2d_params *params);

/* Upsampling of N x C x H x W to the size of out (PyTorch's nearest, and
 * bilinear with align_corners). */
enum facet_upsample_mode {
    FACET_UPSAMPLE_MODE_NEAREST = 0, FACET_UPSAMPLE_MODE_BILINEAR = 1, FACET_UPSAMPLE_MODE_COUNT = 2
};
FACET_API int facet_upsample2d_forward(facet_tensor *out, const facet_tensor *x, int mode, int align_corners);
FACET_API int facet_upsample2d_backward(facet_tensor *grad_x, const facet_tensor *grad_out, int mode, int align_corners);

/* Activations. PReLU has one slope per channel (dim 1; a single slope when
 * slope has one element). ReLU6 is min(max(x, 0), 6) (arcface_torch's ViT
 * MLP). Backward reads x (ReLU, PReLU, ReLU6) or out (sigmoid, tanh). */
enum facet_activation {
    FACET_ACTIVATION_RELU = 0, FACET_ACTIVATION_SIGMOID = 1, FACET_ACTIVATION_TANH = 2, FACET_ACTIVATION_PRELU = 3,
    FACET_ACTIVATION_RELU6 = 4, FACET_ACTIVATION_COUNT = 5
};
FACET_API int facet_activation_forward(facet_tensor *out, const facet_tensor *x, int act, const facet_tensor *slope);
FACET_API int facet_activation_backward(facet_tensor *grad_x, facet_tensor *grad_slope, const facet_tensor *grad_out,
                              const facet_tensor *x, const facet_tensor *out, int act, const facet_tensor *slope);

/* Dropout: mask (uint8, like x) keeps an element with probability 1 - p,
 * drawn from Philox (seed, offset + i); kept elements are scaled by 1/(1-p). */
FACET_API int facet_dropout_forward(facet_tensor *out, facet_tensor *mask, const facet_tensor *x, double p, uint64_t seed,
                          uint64_t offset);
FACET_API int facet_dropout_backward(facet_tensor *grad_x, const facet_tensor *grad_out, const facet_tensor *mask, double p);

/* ---- transformer layers (Vision Transformer backbones) ------------------------------
 * LayerNorm over the last dim: x (float32, contiguous, any ndim >= 1) is read
 * as rows x cols with cols its last size; per row
 *   out = (x - mean) * invstd * weight + bias,  invstd = 1 / sqrt(var + eps)
 * with the biased variance (PyTorch's nn.LayerNorm). weight and bias: float32
 * with cols values, both given or both NULL (no affine). save_mean and
 * save_invstd (rows values each, float32) receive the statistics backward
 * needs; either may be NULL. eps >= 0 and finite. */
FACET_API int facet_layernorm_forward(facet_tensor *out, facet_tensor *save_mean, facet_tensor *save_invstd,
                                      const facet_tensor *x, const facet_tensor *weight, const facet_tensor *bias,
                                      double eps);
/* grad_x = dL/dx (may be NULL); grad_weight and grad_bias (each may be NULL;
 * affine only) ACCUMULATE: += the sums over rows of grad_out * xhat and of
 * grad_out. save_mean and save_invstd are forward's. */
FACET_API int facet_layernorm_backward(facet_tensor *grad_x, facet_tensor *grad_weight, facet_tensor *grad_bias,
                                       const facet_tensor *grad_out, const facet_tensor *x,
                                       const facet_tensor *save_mean, const facet_tensor *save_invstd,
                                       const facet_tensor *weight);
/* Softmax over the last dim of a contiguous float32 x (any ndim >= 1), per
 * row: out = exp(x - max) / sum exp(x - max) (attention's scores). out may be x. */
FACET_API int facet_softmax_forward(facet_tensor *out, const facet_tensor *x);
/* grad_x = out * (grad_out - sum(grad_out * out)) per row, from forward's out;
 * grad_x may be grad_out. */
FACET_API int facet_softmax_backward(facet_tensor *grad_x, const facet_tensor *grad_out, const facet_tensor *out);

/* ---- optimizer updates ----------------------------------------------------------
 * One fused pass of SGD (PyTorch's semantics) over a parameter viewed as rows:
 *   g = grad (+ row_coef_r * param_r: a per-row correction, e.g. a head's
 *       deferred radial part; row_coef may be NULL) + weight_decay * param
 *   buf = g on the first step, else momentum * buf + (1 - dampening) * g
 *   g = g + momentum * buf (nesterov) or buf;  param -= lr * g
 * buf may be NULL when momentum is 0. With FACET_SGD_FLAG_ZERO_GRAD the gradient
 * is zeroed in the same pass; row_norms (may be NULL) receives ||param_r||
 * after the update (what a cosine head needs next). 2-D tensors are rows x
 * cols, others one row. All float32, same device, contiguous. */
enum facet_sgd_flag {
    FACET_SGD_FLAG_NESTEROV = 1,
    FACET_SGD_FLAG_FIRST_STEP = 2,
    FACET_SGD_FLAG_ZERO_GRAD = 4
};
FACET_API int facet_sgd_step(facet_tensor *param, facet_tensor *grad, facet_tensor *buf, const facet_tensor *row_coef,
                   facet_tensor *row_norms, double lr, double momentum, double dampening, double weight_decay,
                   int flags);
/* facet_sgd_step of n parameters at once, without row_coef and row_norms:
 * params[k] with grads[k], bufs[k] (bufs may be NULL when momentum is 0) and
 * weight_decays[k]; lr, momentum, dampening and flags shared. Every tensor
 * float32, contiguous, on one device, shaped like its param; every argument
 * checked before any parameter is written. The same bits as n calls of
 * facet_sgd_step; on CUDA one launch per 48 parameters instead of n. */
FACET_API int facet_sgd_step_list(facet_tensor *const *params, facet_tensor *const *grads, facet_tensor *const *bufs,
                                  const double *weight_decays, int n, double lr, double momentum, double dampening,
                                  int flags);

/* Adam / AdamW (decoupled weight decay) in one pass; step counts from 1. */
enum facet_adam_flag {
    FACET_ADAM_FLAG_DECOUPLED = 1,
    FACET_ADAM_FLAG_ZERO_GRAD = 2
};
FACET_API int facet_adam_step(facet_tensor *param, facet_tensor *grad, facet_tensor *exp_avg, facet_tensor *exp_avg_sq,
                    double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step,
                    int flags);
/* facet_adam_step of n parameters at once: params[k] with grads[k],
 * exp_avgs[k], exp_avg_sqs[k] and weight_decays[k]; lr, betas, eps, step and
 * flags shared. Every tensor float32, contiguous, on one device, shaped like
 * its param; every argument checked before any parameter is written. The same
 * bits as n calls of facet_adam_step; on CUDA one launch per 48 parameters. */
FACET_API int facet_adam_step_list(facet_tensor *const *params, facet_tensor *const *grads,
                                   facet_tensor *const *exp_avgs, facet_tensor *const *exp_avg_sqs,
                                   const double *weight_decays, int n, double lr, double beta1, double beta2,
                                   double eps, int64_t step, int flags);

/* ---- evaluation ---------------------------------------------------------------------
 * Face identification and verification at benchmark scale (docs/eval.md).
 * Embeddings are contiguous float32 CPU matrices, one row per image, already
 * L2-normalised by the caller (a score is a dot product); labels are int64
 * vectors (one per row; -1 never equals a probe's label: a distractor). Scores
 * of a gallery or of all pairs come from blocked GEMMs into one buffer of at
 * most `block` x `block` (all pairs) or probes x `block` (top-k) floats,
 * allocated and freed inside the call. A NaN or infinite embedding or score is
 * FACET_STATUS_ERR_NUMERIC naming its row. */

/* Per probe i (P x d), the k highest scores probe_i . gallery_j over the
 * gallery rows j (G x d) whose label differs from probe_labels[i] (every row
 * when the labels are NULL), in one pass over the gallery:
 *   top (P x k float32): those scores, highest first; -inf where fewer than k
 *     rows qualify;
 *   top_index (P x k int64, may be NULL): their rows, counted from 0 (-1 past
 *     the end); equal scores come in row order;
 *   genuine (P float32, may be NULL; needs labels): the highest score over the
 *     rows of the probe's own label, -inf where it has none.
 * A probe's rank (the number of other-label rows scoring strictly above its
 * genuine score) is the count of its top entries above it, exact below k. */
FACET_API int facet_eval_topk(facet_tensor *top, facet_tensor *top_index, facet_tensor *genuine, const facet_tensor *probe,
                    const facet_tensor *gallery, const facet_tensor *probe_labels, const facet_tensor *gallery_labels,
                    int64_t block);

/* Scores of P pairs without forming them: out[p] = a[ia[p]] . b[ib[p]] (the
 * products rounded to float32, summed in double, stored as float32). ia and
 * ib are int32/int64 vectors counted from index_base, or NULL for p itself. */
FACET_API int facet_eval_pair_scores(facet_tensor *out, const facet_tensor *a, const facet_tensor *b, const facet_tensor *ia,
                           const facet_tensor *ib, int index_base);

/* An exact ROC over n_genuine + n_impostor scores announced up front, fed in
 * any order and any number of calls: it keeps every genuine score and the
 * keep = min(n_impostor, floor(max_far * n_impostor) + 1) highest impostor
 * scores (a running top-k; memory 2 * keep floats), which is what every
 * TAR at FAR <= max_far needs. max_far in (0, 1]. */
typedef struct facet_eval_roc facet_eval_roc;
FACET_API int facet_eval_roc_init(facet_eval_roc **out, int64_t n_genuine, int64_t n_impostor, double max_far);
/* NULL is a no-op. */
FACET_API int facet_eval_roc_free(facet_eval_roc *roc);
/* n scores (float32 vector) with same (uint8 vector, nonzero: genuine). More
 * scores of a kind than announced is an error, and nothing is added. */
FACET_API int facet_eval_roc_add(facet_eval_roc *roc, const facet_tensor *scores, const facet_tensor *same);
/* Every pair of rows (i < j) of a (N x d, labels la) when b is NULL, else
 * every pair (row of a, row of b) (labels lb); a pair is genuine when its
 * labels are equal (la, lb NULL: all impostors). Tiles of block x block. */
FACET_API int facet_eval_roc_add_all(facet_eval_roc *roc, const facet_tensor *a, const facet_tensor *la,
                           const facet_tensor *b, const facet_tensor *lb, int64_t block);
/* Scores added so far, of each kind. */
FACET_API int facet_eval_roc_counts(const facet_eval_roc *roc, int64_t *genuine, int64_t *impostor);
/* Once every announced score is in: for each far[i] (in (0, max_far]) the
 * largest TAR at an ROC point (every distinct score a threshold, accepting
 * scores >= it) whose FAR = FP / n_impostor is <= far[i]. threshold[i] (may
 * be NULL) receives the impostor score t the accepted ones lie strictly above
 * (+inf when no impostor may be accepted). */
FACET_API int facet_eval_roc_tar(facet_eval_roc *roc, int64_t n, const double *far, double *tar, double *threshold);
/* The ROC's points (0, 0) first, then one per distinct score, highest first,
 * down to FAR = max_far (all of them when max_far is 1): every point when
 * there are at most capacity of them, else those where FP has grown by 2%
 * (and the last); *n receives the count. fpr, tpr, threshold: capacity
 * doubles each (threshold may be NULL); capacity >= 2. */
FACET_API int facet_eval_roc_curve(facet_eval_roc *roc, int64_t capacity, double *fpr, double *tpr, double *threshold,
                         int64_t *n);

/* k-fold verification accuracy of P pairs from their cosines (float32) and
 * same (uint8): contiguous folds, the first P mod folds one pair larger; per
 * fold the threshold is chosen on the other folds and applied to it.
 * INSIGHTFACE: distance max(0, 2 - 2 cos) < t, t in 0, 0.01, ..., 3.99, best
 * accuracy. FACEXZOO: cos > t, t = min + (max - min) i / 1000 (i = 1..1000)
 * over the other folds' cosines, best TPR - FPR. Ties go to the smallest t.
 * accuracy, threshold: folds doubles each; 2 <= folds <= P. */
enum facet_eval_protocol {
    FACET_EVAL_PROTOCOL_INSIGHTFACE = 0,
    FACET_EVAL_PROTOCOL_FACEXZOO = 1,
    FACET_EVAL_PROTOCOL_COUNT = 2
};
FACET_API int facet_eval_kfold(double *accuracy, double *threshold, const facet_tensor *cosines, const facet_tensor *same,
                     int folds, int protocol);

/* ---- data formats ----------------------------------------------------------------
 * Face datasets in the files InsightFace publishes. Readers keep the file open
 * and read with pread(): a handle does not change after open, so reads from
 * several threads on one handle are safe (close it once, after them). Images
 * are numbered 0..n-1 and come back as their encoded bytes (JPEG, PNG ...).
 * Every length read from a file is checked against the file's size before
 * anything is allocated or read for it.
 *
 * RecordIO (MXNet/dmlc-core: train.rec with train.idx, one "key\toffset" line
 * per record). A record is the magic 0xced7230a, a uint32 lrec (length: the
 * low 29 bits; continuation flag: lrec >> 29, 0 whole, 1 start, 2 middle,
 * 3 end) and the payload padded with zeros to 4 bytes; a payload that holds
 * the magic at a 4-byte-aligned offset is split there (the magic is dropped
 * and comes back on reading). The payload is the image header (uint32 flag,
 * float32 label, uint64 id, uint64 id2), `flag` float32 labels when flag > 0
 * (the first is the class), then the encoded image. */
enum facet_recordio_layout {
    /* every key of the .idx is an image, in .idx line order (im2rec output;
     * record 0, if any, has flag 0) */
    FACET_RECORDIO_LAYOUT_PLAIN = 0,
    /* record 0 has labels [N+1, N+1+identities]: images are keys 1..N and key
     * N+1+j holds identity j's image keys [first, last+1); keys past these
     * are ignored */
    FACET_RECORDIO_LAYOUT_INSIGHTFACE = 1,
    FACET_RECORDIO_LAYOUT_COUNT = 2
};
enum facet_recordio_max {
    FACET_RECORDIO_MAX_PAYLOAD = 536870911    /* 2^29 - 1 bytes, dmlc-core's limit */
};
typedef struct facet_recordio facet_recordio;
typedef struct facet_recordio_writer facet_recordio_writer;

/* Reads the .idx (offsets must lie in the .rec and be 4-byte aligned, keys
 * >= 0 and unique), then record 0 and the identity records to find the layout.
 * Records are otherwise checked when they are read. */
FACET_API int facet_recordio_init(facet_recordio **out, const char *rec_path, const char *idx_path);
/* NULL is a no-op. */
FACET_API int facet_recordio_free(facet_recordio *r);
FACET_API int facet_recordio_layout(const facet_recordio *r, int *layout);
FACET_API int facet_recordio_num_images(const facet_recordio *r, int64_t *count);
/* 0 for the plain layout. */
FACET_API int facet_recordio_num_identities(const facet_recordio *r, int64_t *count);
/* Image `index`: its .idx key, its class label and the size of its encoded
 * bytes; each output may be NULL. Asking for the label fails on a label that
 * is not an integer in [0, 2^31). */
FACET_API int facet_recordio_image_info(const facet_recordio *r, int64_t index, int64_t *key, int64_t *label,
                              int64_t *nbytes);
/* Copies the encoded bytes of image `index` into dst (capacity bytes, at
 * least the image's size); *nbytes receives the size. */
FACET_API int facet_recordio_read_image(const facet_recordio *r, int64_t index, void *dst, size_t capacity, int64_t *nbytes);
/* Identity `identity` (InsightFace layout) owns images [*first, *end). */
FACET_API int facet_recordio_identity(const facet_recordio *r, int64_t identity, int64_t *first, int64_t *end);

/* Writes a .rec and its .idx (each write appends its record and its .idx
 * line, as MXNet's write_idx does). Labels: nlabels 0 writes flag 0 and
 * label 0; nlabels 1 writes flag 0 with labels[0] in the header (what
 * mx.recordio.pack does for a number); nlabels >= 2 writes flag = nlabels and
 * the labels after the header. The header's id is the key. Payloads holding
 * the magic are split as dmlc-core does. Keys are not checked for repeats
 * here (the reader refuses them). */
FACET_API int facet_recordio_writer_init(facet_recordio_writer **out, const char *rec_path, const char *idx_path);
FACET_API int facet_recordio_write(facet_recordio_writer *w, int64_t key, const float *labels, int nlabels, const void *data,
                         size_t nbytes);
/* Flushes and closes both files (the handle is freed even when that fails). */
FACET_API int facet_recordio_writer_free(facet_recordio_writer *w);

/* Verification pairs (lfw.bin, cfp_fp.bin, agedb_30.bin ...): a pickle of
 * (bins, issame_list), 2P encoded images (pair i is images 2i and 2i+1) and
 * P booleans. Read: protocols 2 to 5; images as Python 2 str, bytes, or
 * uint8 NumPy vectors (shape (n,) or (n, 1)) rebuilt through
 * numpy.core.multiarray._reconstruct; issame as a list of bools or a bool
 * NumPy vector. Nothing is ever executed: any other global (os.system,
 * _codecs.encode ...) or opcode is refused, naming the byte where it is. */
typedef struct facet_binfile facet_binfile;

FACET_API int facet_binfile_init(facet_binfile **out, const char *path);
/* NULL is a no-op. */
FACET_API int facet_binfile_free(facet_binfile *b);
FACET_API int facet_binfile_pairs(const facet_binfile *b, int64_t *pairs);
/* *same = 1 when pair `pair` shows one person, else 0. */
FACET_API int facet_binfile_issame(const facet_binfile *b, int64_t pair, int *same);
FACET_API int facet_binfile_image_size(const facet_binfile *b, int64_t index, int64_t *nbytes);
FACET_API int facet_binfile_read_image(const facet_binfile *b, int64_t index, void *dst, size_t capacity, int64_t *nbytes);

/* ---- PyTorch checkpoints -----------------------------------------------------------
 * .pth files of torch.save (PyTorch >= 1.6: a zip holding <dir>/data.pkl and
 * <dir>/data/<key>, stored entries) that hold a state dict: a dict of
 * tensors, bare or under "state_dict", "model", "state_dict_backbone" or
 * "backbone" of a wrapping dict; a "module." on every name (DDP) is dropped.
 * The pickle is read with an allow-list (collections.OrderedDict,
 * torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter, the
 * torch.*Storage types): nothing is ever executed, and any other global
 * (posix.system ...) or opcode is an error naming it and the byte where it
 * is. Every size, offset and stride is checked against the file. Float,
 * double, half and bfloat16 tensors read as FACET_DTYPE_FLOAT32, long as
 * INT64, int, short and char as INT32, byte and bool as UINT8. The legacy
 * format of PyTorch < 1.6 (a sequence of pickles, then the storages) is read
 * too; compressed zip entries and the older tar format are refused. */
typedef struct facet_pth facet_pth;

FACET_API int facet_pth_init(facet_pth **out, const char *path);
/* NULL is a no-op. */
FACET_API int facet_pth_free(facet_pth *h);
/* Tensors in the state dict, in the file's order. */
FACET_API int facet_pth_count(const facet_pth *h, int64_t *count);
/* The name of tensor `index`, NUL-ended, into dst (capacity bytes). */
FACET_API int facet_pth_name(const facet_pth *h, int64_t index, char *dst, size_t capacity);
/* The dtype facet reads it as, its number of dims and its sizes (up to
 * FACET_MAX_DIMS); each output may be NULL. */
FACET_API int facet_pth_info(const facet_pth *h, int64_t index, int *dtype, int *ndim, int64_t *sizes);
/* Its elements, row-major and contiguous, into dst (capacity bytes, at least
 * numel times the dtype's size). */
FACET_API int facet_pth_read(const facet_pth *h, int64_t index, void *dst, size_t capacity);

/* ---- images ------------------------------------------------------------------------
 * JPEG (libjpeg-turbo) and PNG (libpng) from memory; corrupt data is an error
 * carrying the decoder's message. Truncated data is corrupt: a JPEG whose
 * pixel data ends early or does not decode (libjpeg's warnings "Premature end
 * of JPEG file", "premature end of data segment", bad Huffman or arithmetic
 * codes, a lost restart marker) and a PNG cut anywhere before the end of its
 * IEND chunk (checked before decoding). After a JPEG error mid-image, out
 * holds the rows decoded so far. */
enum facet_image_format {
    FACET_IMAGE_FORMAT_JPEG = 0, FACET_IMAGE_FORMAT_PNG = 1, FACET_IMAGE_FORMAT_UNKNOWN = 2, FACET_IMAGE_FORMAT_COUNT = 3
};
/* Format and size from the header alone. */
FACET_API int facet_image_info(const void *bytes, size_t size, int *format, int *width, int *height);
/* Decodes into out: a contiguous H x W x 3 uint8 CPU tensor of the image's size (RGB). */
FACET_API int facet_image_decode(facet_tensor *out, const void *bytes, size_t size);
/* rgb (H x W x 3 uint8) to out (3 x H' x W' float32): bilinear resize when the
 * sizes differ (half-pixel centres), an optional horizontal flip, then
 * (v - mean[c]) / std[c] per channel (mean and std: 3 floats each). */
FACET_API int facet_image_to_tensor(facet_tensor *out, const facet_tensor *rgb, int flip, const float *mean, const float *std);
/* PNG-encodes rgb (H x W x 3 uint8, CPU) into dst; *size receives the encoded
 * size. With dst NULL (or capacity too small) only *size is set, and a small
 * capacity is an error. */
FACET_API int facet_image_encode_png(const facet_tensor *rgb, void *dst, size_t capacity, size_t *size);

/* ---- the data loader -----------------------------------------------------------------
 * Worker threads decode (JPEG/PNG), augment, resize and normalise images into
 * float32 N x 3 x H x W batches held in a bounded queue of reused buffers; the
 * caller takes them in order. Every random choice (flip, crop offset, colour
 * factors, grayscale) comes from Philox on (seed, epoch, position), so an
 * epoch's batches are the same for any thread count. An image that does not
 * decode is counted and replaced by the next one in the epoch's order. */
typedef struct facet_loader_params {
    int64_t height, width;              /* output size, 1..4096 */
    int64_t batch;                      /* 1..65536 */
    int64_t threads;                    /* worker threads, 1..256 */
    int64_t queue;                      /* batches in flight, 1..64 */
    uint64_t seed;                      /* every random choice */
    int32_t shuffle;                    /* 1: a new order every epoch */
    int32_t drop_last;                  /* 1: no short last batch */
    double flip;                        /* probability of a horizontal flip */
    int64_t crop_pad;                   /* random crop after padding every side by this many (black) pixels */
    double brightness, contrast, saturation;   /* factors from [1 - v, 1 + v], torchvision's ColorJitter */
    double grayscale;                   /* probability of a grayscale image */
    float mean[3], std[3];              /* out = (v - mean[c]) / std[c] */
} facet_loader_params;
typedef struct facet_loader facet_loader;
/* Images of a RecordIO reader (which must outlive the loader). */
FACET_API int facet_loader_init_recordio(facet_loader **out, const facet_recordio *rec, const facet_loader_params *params);
/* Images in memory: bytes (uint8, all encoded images back to back), offsets
 * (int64, n + 1 values), labels (int64, n); the loader keeps its own handles. */
FACET_API int facet_loader_init_memory(facet_loader **out, const facet_tensor *bytes, const facet_tensor *offsets,
                            const facet_tensor *labels, const facet_loader_params *params);
FACET_API int facet_loader_batches(const facet_loader *loader, int64_t *count);
/* (Re)starts the workers at batch first_batch (0-based) of an epoch. */
FACET_API int facet_loader_start(facet_loader *loader, int64_t epoch, int64_t first_batch);
/* The next batch, waiting for it: new handles on the loader's buffers (free
 * them; the data stays valid until the following call). */
FACET_API int facet_loader_next(facet_loader *loader, facet_tensor **images, facet_tensor **labels);
/* Seconds the caller has waited in facet_loader_next, images skipped as
 * undecodable, images delivered; since the loader was made. */
FACET_API int facet_loader_stats(const facet_loader *loader, double *wait_seconds, int64_t *skipped, int64_t *delivered);
FACET_API int facet_loader_free(facet_loader *loader);

/* ---- distributed: collectives over MPI (CPU tensors) and NCCL (CUDA tensors) -------------
 * One communicator handle spans the processes a launcher (mpirun, srun)
 * started. facet_dist_init calls MPI_Init_thread when MPI is not initialised
 * yet (facet_dist_free then finalises it); a build without MPI (FACET_MPI=0,
 * or no mpicc) keeps every function, and each fails saying so. Collectives
 * take contiguous tensors of one dtype (float32, float16, bfloat16, int32,
 * int64, uint8; AVG only the float types) on one device: CPU tensors go through MPI, CUDA tensors through
 * NCCL, whose communicator is made on first use from rank 0's unique id,
 * broadcast over MPI. Every collective is started non-blocking and polled
 * against a deadline (params.timeout seconds): a peer that never joins makes
 * it fail within the deadline, with a message that names the collective, its
 * sequence number and the ranks that did not answer a short roll call; an
 * MPI or NCCL error fails it at once. After a failure the communicator is
 * broken: every later call fails naming the first failure, and free skips
 * MPI_Finalize (which would wait for the dead peer). All ranks must call the
 * same collectives in the same order with agreeing shapes. float16 and
 * bfloat16 reduce in float32 per pairwise combine, rounded once each
 * (docs/distributed.md, "16-bit gradient allreduce"). */
enum facet_dist_op {
    FACET_DIST_OP_SUM = 0,
    FACET_DIST_OP_AVG = 1,         /* the sum divided by the world size (float types only) */
    FACET_DIST_OP_MAX = 2,
    FACET_DIST_OP_MIN = 3,
    FACET_DIST_OP_COUNT = 4
};
typedef struct facet_dist_params {
    double timeout;                 /* seconds a collective may take, > 0 */
} facet_dist_params;
typedef struct facet_dist facet_dist;
/* *mpi and *nccl: 1 when the library was built with them. */
FACET_API int facet_dist_is_built(int *mpi, int *nccl);
FACET_API int facet_dist_init(facet_dist **out, const facet_dist_params *params);
/* Finalises MPI when init started it and nothing failed; NULL is a no-op. */
FACET_API int facet_dist_free(facet_dist *dist);
/* This process's rank, the world size, the rank among the processes of its
 * node and their count (0-based ranks). */
FACET_API int facet_dist_query(const facet_dist *dist, int *rank, int *size, int *local_rank, int *local_size);
FACET_API int facet_dist_barrier(facet_dist *dist);
/* In place: t becomes op over every rank's t. */
FACET_API int facet_dist_allreduce(facet_dist *dist, facet_tensor *t, int op);
/* out (contiguous, sum(rows) x ...) = every rank's x concatenated along dim 1
 * in rank order; rows: x's size(1) on each of the nrows (= world size) ranks,
 * or NULL when every rank sends x's size(1) rows. */
FACET_API int facet_dist_allgather(facet_dist *dist, facet_tensor *out, const facet_tensor *x, const int64_t *rows,
                                   int nrows);
/* out (x.size(1) / world x ...) = rows [r n, (r + 1) n) of op over every
 * rank's x, on rank r; x.size(1) must be a multiple of the world size. */
FACET_API int facet_dist_reduce_scatter(facet_dist *dist, facet_tensor *out, const facet_tensor *x, int op);
/* In place: t becomes rank root's t. */
FACET_API int facet_dist_broadcast(facet_dist *dist, facet_tensor *t, int root);
/* Starts an allreduce of t in place and returns: t must not be read, written
 * or freed by anyone but the communicator (it holds a handle) until
 * facet_dist_wait_all. At most FACET_DIST_MAX_PENDING at once. Other
 * collectives may run meanwhile (every rank in the same order). */
FACET_API int facet_dist_allreduce_start(facet_dist *dist, facet_tensor *t, int op);
/* Lets the started allreduces advance and returns at once (MPI moves a
 * non-blocking collective on only inside its calls; facet.train calls this
 * after each layer's backward). */
FACET_API int facet_dist_progress(facet_dist *dist);
/* Completes every started allreduce (in start order) against the deadline. */
FACET_API int facet_dist_wait_all(facet_dist *dist);
/* Ends every rank of the job now (MPI_Abort with code, 1..255): for a rank
 * that failed alone, so that its peers do not wait for it. Returns only
 * when MPI cannot abort. */
FACET_API int facet_dist_abort(facet_dist *dist, int code);
enum facet_dist_max {
    FACET_DIST_MAX_PENDING = 256
};

#ifdef __cplusplus
}
#endif

#endif /* FACET_H */
