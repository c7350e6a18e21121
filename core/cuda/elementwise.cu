/*
 * elementwise.cu - strided elementwise kernels: copy with dtype conversion,
 * fill, unary and binary ops over a facet_nd walk, plus the contiguous
 * arange and axpy. The walk descriptor is passed by value; each thread turns
 * its linear index (row-major over nd.sizes) into one element offset per
 * operand, with stride 0 where an operand is broadcast. float32 work uses the
 * float formulas of elementwise_math.h, and so do float16/bfloat16 (widened,
 * computed in float, rounded once by half_math.h's integer code, the CPU's);
 * the integer dtypes go through double with facet_load/facet_store, exactly
 * as the CPU loops do. Copies between
 * equal dtypes move raw bits, so int64 values beyond 2^53 survive. The
 * linear index and its coordinates are 32-bit when the walk has fewer than
 * 2^31 elements (cuda_common.cuh, "index math"); the offsets stay 64-bit
 * (strides may be negative or large).
 */
#include "cuda_common.cuh"

/* A walk with its index type I: the dims' sizes as divisors. */
template <typename I>
struct nd_walk {
    facet_nd nd;
    div_by<I> size[FACET_MAX_DIMS];
};

template <typename I>
static nd_walk<I> nd_walk_of(const struct facet_nd *nd)
{
    nd_walk<I> w;
    w.nd = *nd;
    for (int d = 0; d < FACET_MAX_DIMS; d++) w.size[d] = div_by<I>(d < nd->ndim ? nd->sizes[d] : 1);
    return w;
}

/* Offsets of the first NOPS operands for linear index i. The outermost dim
 * takes the remainder directly, so a collapsed 1-D walk costs no division. */
template <int NOPS, typename I>
__device__ __forceinline__ void nd_offsets(const nd_walk<I> &w, I i, int64_t *off)
{
    const facet_nd &nd = w.nd;
#pragma unroll
    for (int k = 0; k < NOPS; k++) off[k] = 0;
    I rem = i;
    for (int d = nd.ndim - 1; d > 0; d--) {
        const int64_t c = w.size[d].mod(rem);
        rem = w.size[d].div(rem);
#pragma unroll
        for (int k = 0; k < NOPS; k++) off[k] += c * nd.strides[k][d];
    }
    if (nd.ndim > 0) {
#pragma unroll
        for (int k = 0; k < NOPS; k++) off[k] += (int64_t)rem * nd.strides[k][0];
    }
}

static int64_t nd_total(const struct facet_nd *nd)
{
    int64_t total = 1;
    for (int d = 0; d < nd->ndim; d++) total *= nd->sizes[d];
    return total;
}

static size_t dtype_bytes(int dtype)
{
    switch (dtype) {
    case FACET_DTYPE_FLOAT32: return 4;
    case FACET_DTYPE_INT32: return 4;
    case FACET_DTYPE_INT64: return 8;
    case FACET_DTYPE_UINT8: return 1;
    case FACET_DTYPE_FLOAT16: return 2;
    case FACET_DTYPE_BFLOAT16: return 2;
    default: return 0;
    }
}

/* The dtypes facet_load/facet_store understand: all of them. */
static bool dtype_numeric(int dtype)
{
    return dtype >= 0 && dtype < FACET_DTYPE_COUNT && dtype_bytes(dtype) > 0;
}

/* ---- copy ------------------------------------------------------------------ */

template <typename T, typename I>
static __global__ void copy_same_kernel(T *dst, const T *src, nd_walk<I> w, int64_t total)
{
    FACET_CUDA_FOR_T(I, i, total) {
        int64_t off[2];
        nd_offsets<2>(w, i, off);
        dst[off[0]] = src[off[1]];
    }
}

template <typename T, typename I>
static void launch_copy_same(void *dst, const void *src, const nd_walk<I> &w, int64_t total)
{
    copy_same_kernel<T, I><<<grid_blocks(total), FACET_CUDA_THREADS>>>((T *)dst, (const T *)src, w, total);
}

template <typename I>
static __global__ void copy_convert_kernel(void *dst, int dst_dtype, const void *src, int src_dtype, nd_walk<I> w,
                                           int64_t total)
{
    FACET_CUDA_FOR_T(I, i, total) {
        int64_t off[2];
        nd_offsets<2>(w, i, off);
        facet_store(dst, dst_dtype, off[0], facet_load(src, src_dtype, off[1]));
    }
}

/* the casts of mixed precision (weights to 16 bits, gradients back), without
 * going through double: the same bits as the generic path. One of the two
 * dtypes is float32, the other float16 or bfloat16. */
template <typename I>
static __global__ void copy_half_kernel(void *dst, int dst_dtype, const void *src, int src_dtype, nd_walk<I> w,
                                        int64_t total)
{
    FACET_CUDA_FOR_T(I, i, total) {
        int64_t off[2];
        nd_offsets<2>(w, i, off);
        if (dst_dtype == FACET_DTYPE_FLOAT32) ((float *)dst)[off[0]] = facet_load_half(src, src_dtype, off[1]);
        else facet_store_half(dst, dst_dtype, off[0], ((const float *)src)[off[1]]);
    }
}

template <typename I>
static int copy_nd(void *dst, int dst_dtype, const void *src, int src_dtype, const nd_walk<I> &w, int64_t total)
{
    const char *fn = "facet_cuda_copy_nd";
    if (dst_dtype == src_dtype) {
        switch (dtype_bytes(dst_dtype)) {
        case 1: launch_copy_same<uint8_t>(dst, src, w, total); break;
        case 2: launch_copy_same<uint16_t>(dst, src, w, total); break;
        case 4: launch_copy_same<uint32_t>(dst, src, w, total); break;
        case 8: launch_copy_same<uint64_t>(dst, src, w, total); break;
        default: return facet_fail(FACET_STATUS_ERR_ARG, "%s: unknown dtype %d", fn, dst_dtype);
        }
    } else {
        if (!dtype_numeric(dst_dtype) || !dtype_numeric(src_dtype))
            return facet_fail(FACET_STATUS_ERR_ARG, "%s: no conversion from dtype %d to dtype %d", fn,
                              src_dtype, dst_dtype);
        if ((src_dtype == FACET_DTYPE_FLOAT32 && facet_dtype_is_half(dst_dtype)) ||
            (dst_dtype == FACET_DTYPE_FLOAT32 && facet_dtype_is_half(src_dtype)))
            copy_half_kernel<I><<<grid_blocks(total), FACET_CUDA_THREADS>>>(dst, dst_dtype, src, src_dtype, w, total);
        else
            copy_convert_kernel<I><<<grid_blocks(total), FACET_CUDA_THREADS>>>(dst, dst_dtype, src, src_dtype, w,
                                                                                total);
    }
    return check_launch(fn);
}

/* Runs op<I>(..., nd_walk<I>, total) for the walk nd, I its index type, unless
 * the walk is empty. */
#define ND_DISPATCH(rc, nd, op, ...)                                                       \
    do {                                                                                   \
        const int64_t total_ = nd_total(nd);                                               \
        if (total_ > 0)                                                                    \
            FACET_INDEX_DISPATCH(fits_int32(total_), I,                                    \
                                 rc = op<I>(__VA_ARGS__, nd_walk_of<I>(nd), total_));      \
    } while (0)

extern "C" int facet_cuda_copy_nd(void *dst, int dst_dtype, const void *src, int src_dtype,
                                  const struct facet_nd *nd)
{
    int rc = FACET_STATUS_OK;
    ND_DISPATCH(rc, nd, copy_nd, dst, dst_dtype, src, src_dtype);
    return rc;
}

/* ---- fill ------------------------------------------------------------------ */

template <typename T, typename I>
static __global__ void fill_kernel(T *dst, T value, nd_walk<I> w, int64_t total)
{
    FACET_CUDA_FOR_T(I, i, total) {
        int64_t off[1];
        nd_offsets<1>(w, i, off);
        dst[off[0]] = value;
    }
}

template <typename T, typename I>
static void launch_fill(void *dst, T value, const nd_walk<I> &w, int64_t total)
{
    fill_kernel<T, I><<<grid_blocks(total), FACET_CUDA_THREADS>>>((T *)dst, value, w, total);
}

/* the value as the dtype's bits (converted once on the host with the shared
 * store rule) */
template <typename I>
static int fill_nd(void *dst, int dtype, double value, const nd_walk<I> &w, int64_t total)
{
    union { uint8_t u8; uint16_t u16; uint32_t u32; uint64_t u64; } bits;
    bits.u64 = 0;
    facet_store(&bits, dtype, 0, value);
    switch (dtype_bytes(dtype)) {
    case 1: launch_fill<uint8_t>(dst, bits.u8, w, total); break;
    case 2: launch_fill<uint16_t>(dst, bits.u16, w, total); break;
    case 4: launch_fill<uint32_t>(dst, bits.u32, w, total); break;
    default: launch_fill<uint64_t>(dst, bits.u64, w, total); break;
    }
    return check_launch("facet_cuda_fill_nd");
}

extern "C" int facet_cuda_fill_nd(void *dst, int dtype, double value, const struct facet_nd *nd)
{
    const char *fn = "facet_cuda_fill_nd";
    if (!dtype_numeric(dtype)) return facet_fail(FACET_STATUS_ERR_ARG, "%s: unsupported dtype %d", fn, dtype);
    int rc = FACET_STATUS_OK;
    ND_DISPATCH(rc, nd, fill_nd, dst, dtype, value);
    return rc;
}

/* ---- unary ----------------------------------------------------------------- */

template <typename I>
static __global__ void unary_f32_kernel(float *out, const float *x, int op, float a, float b, nd_walk<I> w,
                                        int64_t total)
{
    FACET_CUDA_FOR_T(I, i, total) {
        int64_t off[2];
        nd_offsets<2>(w, i, off);
        out[off[0]] = facet_unary_f32(op, x[off[1]], a, b);
    }
}

/* the dtypes other than float32: 16-bit floats through float32 (HALF), the
 * integers through double */
template <bool HALF, typename I>
static __global__ void unary_other_kernel(void *out, const void *x, int dtype, int op, double a, double b,
                                          nd_walk<I> w, int64_t total)
{
    FACET_CUDA_FOR_T(I, i, total) {
        int64_t off[2];
        nd_offsets<2>(w, i, off);
        if (HALF)
            facet_store_half(out, dtype, off[0], facet_unary_f32(op, facet_load_half(x, dtype, off[1]), (float)a,
                                                                 (float)b));
        else
            facet_store(out, dtype, off[0], facet_unary_f64(op, facet_load(x, dtype, off[1]), a, b));
    }
}

template <typename I>
static int unary_nd(void *out, const void *x, int dtype, int op, double a, double b, const nd_walk<I> &w,
                    int64_t total)
{
    unsigned blocks = grid_blocks(total);
    if (dtype == FACET_DTYPE_FLOAT32)
        unary_f32_kernel<I><<<blocks, FACET_CUDA_THREADS>>>((float *)out, (const float *)x, op, (float)a, (float)b, w,
                                                            total);
    else if (facet_dtype_is_half(dtype))
        unary_other_kernel<true, I><<<blocks, FACET_CUDA_THREADS>>>(out, x, dtype, op, a, b, w, total);
    else
        unary_other_kernel<false, I><<<blocks, FACET_CUDA_THREADS>>>(out, x, dtype, op, a, b, w, total);
    return check_launch("facet_cuda_unary_nd");
}

extern "C" int facet_cuda_unary_nd(void *out, const void *x, int dtype, int op, double a, double b,
                                   const struct facet_nd *nd)
{
    const char *fn = "facet_cuda_unary_nd";
    if (!dtype_numeric(dtype)) return facet_fail(FACET_STATUS_ERR_ARG, "%s: unsupported dtype %d", fn, dtype);
    int rc = FACET_STATUS_OK;
    ND_DISPATCH(rc, nd, unary_nd, out, x, dtype, op, a, b);
    return rc;
}

/* ---- binary ---------------------------------------------------------------- */

template <typename I>
static __global__ void binary_f32_kernel(float *out, const float *x, const float *y, int op, nd_walk<I> w,
                                         int64_t total)
{
    FACET_CUDA_FOR_T(I, i, total) {
        int64_t off[3];
        nd_offsets<3>(w, i, off);
        out[off[0]] = facet_binary_f32(op, x[off[1]], y[off[2]]);
    }
}

template <bool HALF, typename I>
static __global__ void binary_other_kernel(void *out, const void *x, const void *y, int dtype, int op,
                                           nd_walk<I> w, int64_t total)
{
    FACET_CUDA_FOR_T(I, i, total) {
        int64_t off[3];
        nd_offsets<3>(w, i, off);
        if (HALF)
            facet_store_half(out, dtype, off[0], facet_binary_f32(op, facet_load_half(x, dtype, off[1]),
                                                                  facet_load_half(y, dtype, off[2])));
        else
            facet_store(out, dtype, off[0], facet_binary_f64(op, facet_load(x, dtype, off[1]),
                                                             facet_load(y, dtype, off[2])));
    }
}

template <typename I>
static int binary_nd(void *out, const void *x, const void *y, int dtype, int op, const nd_walk<I> &w, int64_t total)
{
    unsigned blocks = grid_blocks(total);
    if (dtype == FACET_DTYPE_FLOAT32)
        binary_f32_kernel<I><<<blocks, FACET_CUDA_THREADS>>>((float *)out, (const float *)x, (const float *)y, op, w,
                                                             total);
    else if (facet_dtype_is_half(dtype))
        binary_other_kernel<true, I><<<blocks, FACET_CUDA_THREADS>>>(out, x, y, dtype, op, w, total);
    else
        binary_other_kernel<false, I><<<blocks, FACET_CUDA_THREADS>>>(out, x, y, dtype, op, w, total);
    return check_launch("facet_cuda_binary_nd");
}

extern "C" int facet_cuda_binary_nd(void *out, const void *x, const void *y, int dtype, int op,
                                    const struct facet_nd *nd)
{
    const char *fn = "facet_cuda_binary_nd";
    if (!dtype_numeric(dtype)) return facet_fail(FACET_STATUS_ERR_ARG, "%s: unsupported dtype %d", fn, dtype);
    int rc = FACET_STATUS_OK;
    ND_DISPATCH(rc, nd, binary_nd, out, x, y, dtype, op);
    return rc;
}

/* ---- arange, axpy ---------------------------------------------------------- */

static __global__ void arange_kernel(void *dst, int dtype, int64_t n, double start, double step)
{
    /* start + i*step per element (not a running sum), so no drift */
    FACET_CUDA_FOR(i, n) facet_store(dst, dtype, i, start + (double)i * step);
}

extern "C" int facet_cuda_arange(void *dst, int dtype, int64_t n, double start, double step)
{
    const char *fn = "facet_cuda_arange";
    if (!dtype_numeric(dtype)) return facet_fail(FACET_STATUS_ERR_ARG, "%s: unsupported dtype %d", fn, dtype);
    if (n <= 0) return FACET_STATUS_OK;
    arange_kernel<<<grid_blocks(n), FACET_CUDA_THREADS>>>(dst, dtype, n, start, step);
    return check_launch(fn);
}

static __global__ void axpy_kernel(float *out, const float *x, double alpha, const float *y, int64_t n)
{
    /* in double, then one rounding: memory-bound anyway, and it keeps the
     * result within half an ulp whichever way the CPU groups it */
    FACET_CUDA_FOR(i, n) out[i] = (float)((double)x[i] + alpha * (double)y[i]);
}

extern "C" int facet_cuda_axpy(float *out, const float *x, double alpha, const float *y, int64_t n)
{
    if (n <= 0) return FACET_STATUS_OK;
    axpy_kernel<<<grid_blocks(n), FACET_CUDA_THREADS>>>(out, x, alpha, y, n);
    return check_launch("facet_cuda_axpy");
}
