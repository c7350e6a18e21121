/*
 * cuda_common.cuh - what the CUDA backend's files share: the C core's
 * declarations (internal.h, and through it cuda_backend.h, the backend's
 * entry points) under C linkage, the per-element formulas, error checks that
 * turn a cudaError_t or cublasStatus_t into facet's error (FACET_STATUS_ERR_DEVICE
 * with a message naming the entry point), the launch shapes (grid-stride
 * loops, 256 threads a block, launch_flat / launch_items), the choice of
 * 32- or 64-bit index math, warp and block reductions in a fixed order, and
 * stream-ordered scratch memory. Every kernel runs on the legacy default
 * stream, so work is ordered without explicit events, and facet_cuda_sync()
 * is the only host-side wait.
 *
 * Determinism: the reductions here combine values in an order fixed by the
 * launch shape (lanes by a shuffle tree, then warps by the same tree), never
 * by scheduling, and the backend uses no floating-point atomics; a call with
 * the same inputs and sizes gives the same bits on every run. docs/gpu.md
 * lists, per op, where results differ from the CPU's.
 */
#ifndef FACET_CUDA_COMMON_CUH
#define FACET_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* internal.h has no extern "C" guard of its own; without this, facet_fail
 * would be looked up under a C++ mangled name and fail to link. */
extern "C" {
#include "internal.h"
}
#include "elementwise_math.h"
#include "fast_div.cuh"

enum {
    FACET_CUDA_THREADS = 256,
    /* enough threads to fill any current GPU; bigger work loops in-thread */
    FACET_CUDA_MAX_BLOCKS = 65536
};

/* ---- storage types of the layer kernels ------------------------------------------------------
 * Activations are float32, float16 or bfloat16 (the 16-bit ones as their bit
 * patterns); kernels templated over the storage type T load with ld(), store
 * with st() through half_math.h's conversions, and do their math in float32,
 * so a 16-bit result is the float32 formula rounded once, as on the CPU. */
struct act_f16 { uint16_t bits; };
struct act_bf16 { uint16_t bits; };

static __device__ __forceinline__ float ld(float v) { return v; }
static __device__ __forceinline__ float ld(act_f16 v) { return facet_half_to_float(v.bits); }
static __device__ __forceinline__ float ld(act_bf16 v) { return facet_bf16_to_float(v.bits); }
static __device__ __forceinline__ void st(float *p, int64_t i, float v) { p[i] = v; }
static __device__ __forceinline__ void st(act_f16 *p, int64_t i, float v) { p[i].bits = facet_float_to_half(v); }
static __device__ __forceinline__ void st(act_bf16 *p, int64_t i, float v) { p[i].bits = facet_float_to_bf16(v); }

/* Runs the statement with T the storage type of dtype (float32, float16 or
 * bfloat16; the C side has checked it). */
#define FACET_ACT_DISPATCH(dtype, T, ...)                                  \
    do {                                                                   \
        if ((dtype) == FACET_DTYPE_FLOAT16) {                              \
            typedef act_f16 T;                                             \
            __VA_ARGS__;                                                   \
        } else if ((dtype) == FACET_DTYPE_BFLOAT16) {                      \
            typedef act_bf16 T;                                            \
            __VA_ARGS__;                                                   \
        } else {                                                           \
            typedef float T;                                               \
            __VA_ARGS__;                                                   \
        }                                                                  \
    } while (0)

/* ---- launch shapes ----------------------------------------------------------------------- */

/* Grid-stride loop over [0, n) with indices of type I (n below 2^31 for
 * uint32_t: a thread's last step then stays below 2^32). */
#define FACET_CUDA_FOR_T(I, i, n) \
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < (I)(n); i += (I)gridDim.x * blockDim.x)

/* Grid-stride loop over [0, n) with 64-bit indices. */
#define FACET_CUDA_FOR(i, n) FACET_CUDA_FOR_T(int64_t, i, n)

/* Grid-stride loop over items with one block each. */
#define FACET_CUDA_FOR_BLOCK(i, n) for (int64_t i = blockIdx.x; i < (n); i += gridDim.x)

/* Blocks for a grid-stride launch over n items (n > 0) of FACET_CUDA_THREADS. */
static inline unsigned grid_blocks(int64_t n)
{
    int64_t b = (n + FACET_CUDA_THREADS - 1) / FACET_CUDA_THREADS;
    if (b > FACET_CUDA_MAX_BLOCKS) b = FACET_CUDA_MAX_BLOCKS;
    if (b < 1) b = 1;
    return (unsigned)b;
}

/* Blocks for a one-block-per-item launch (grid-stride over items). */
static inline unsigned item_blocks(int64_t items)
{
    if (items > FACET_CUDA_MAX_BLOCKS) return FACET_CUDA_MAX_BLOCKS;
    return items < 1 ? 1u : (unsigned)items;
}

/* ---- index math ------------------------------------------------------------------------------
 * A GPU has no 64-bit integer division: each int64 / or % is a software
 * routine of dozens of instructions, enough to make a memory-bound kernel
 * that derives several coordinates per element (conv.cu's im2col) run at a
 * fraction of its bandwidth. So the kernels that divide per element are
 * templated on their index type I: uint32_t when every element count and
 * extent they touch is below 2^31 (fits_int32), which is every layer of a
 * face model, else int64_t, the general path; their divisors are
 * fast_div.cuh's div_by<I> (a multiply-high and a shift for uint32_t).
 * Only the index arithmetic differs, so both paths give the same bits.
 * FACET_CUDA_INDEX64=1 in the environment (read once per process) forces
 * the 64-bit path: a debugging switch, and how the specs reach that path
 * without tensors of 2^31 elements (docs/gpu.md, "Index math"). */

static inline bool index64_forced(void)
{
    static const bool forced = [] {
        const char *v = getenv("FACET_CUDA_INDEX64");
        return v && *v && strcmp(v, "0") != 0;
    }();
    return forced;
}

/* Whether 32-bit index math serves: every value in [0, 2^31) and the 64-bit
 * path not forced. */
template <typename... V>
static inline bool fits_int32(V... v)
{
    return !index64_forced() && ((v >= 0 && v <= (int64_t)INT32_MAX) && ...);
}

/* Runs the statement with I = uint32_t when `small` (a fits_int32), else
 * with I = int64_t. */
#define FACET_INDEX_DISPATCH(small, I, ...)                                \
    do {                                                                   \
        if (small) {                                                       \
            typedef uint32_t I;                                            \
            __VA_ARGS__;                                                   \
        } else {                                                           \
            typedef int64_t I;                                             \
            __VA_ARGS__;                                                   \
        }                                                                  \
    } while (0)

/* Element i of [planes][rows][cols] as its plane, row and column. */
template <typename I>
struct plane_pos {
    I plane, row, col;
};

template <typename I>
static __device__ __forceinline__ plane_pos<I> plane_pos_of(I i, const div_by<I> &rows, const div_by<I> &cols)
{
    const I pr = cols.div(i);
    const plane_pos<I> r = { rows.div(pr), rows.mod(pr), cols.mod(i) };
    return r;
}

/* ---- errors ------------------------------------------------------------------------------- */

static inline int check_cuda(cudaError_t e, const char *fn)
{
    if (e == cudaSuccess) return FACET_STATUS_OK;
    /* a failed runtime call also becomes the "last error"; drop it so the
     * next launch check does not report it a second time */
    (void)cudaGetLastError();
    if (e == cudaErrorMemoryAllocation)
        return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: %s", fn, cudaGetErrorString(e));
    return facet_fail(FACET_STATUS_ERR_DEVICE, "%s: %s", fn, cudaGetErrorString(e));
}

static inline int check_cublas(cublasStatus_t s, const char *fn)
{
    if (s == CUBLAS_STATUS_SUCCESS) return FACET_STATUS_OK;
    if (s == CUBLAS_STATUS_EXECUTION_FAILED)   /* the reason is the runtime's (a lost context) */
        return facet_fail(FACET_STATUS_ERR_DEVICE, "%s: %s (%s)", fn, cublasGetStatusString(s),
                          cudaGetErrorString(cudaPeekAtLastError()));
    return facet_fail(FACET_STATUS_ERR_DEVICE, "%s: %s", fn, cublasGetStatusString(s));
}

/* After every <<<>>>: a bad launch configuration is reported here; faults
 * inside the kernel surface at the next synchronising call. */
static inline int check_launch(const char *fn)
{
    return check_cuda(cudaGetLastError(), fn);
}

/* Returns the status of expr from the calling function when it is an error. */
#define FACET_CUDA_TRY(expr)          \
    do {                              \
        int facet_rc_ = (expr);       \
        if (facet_rc_) return facet_rc_; \
    } while (0)

/* One thread per item of [0, n) (kernels loop with FACET_CUDA_FOR), checked;
 * nothing is launched for n <= 0. A template kernel is passed as kernel<T>:
 * launch_flat(fn, n, kernel, args...). The macro passes the kernel's text
 * on, so the CUDA emulator's fault messages name it (its launch rewrite
 * would name every launch here "kernel"); a GPU build ignores it. */
#define launch_flat(fn, n, ...) launch_flat_named(fn, #__VA_ARGS__, n, __VA_ARGS__)

/* One block of `threads` per item of [0, items) (FACET_CUDA_FOR_BLOCK), checked:
 * launch_items(fn, items, threads, kernel, args...). */
#define launch_items(fn, items, threads, ...) launch_items_named(fn, #__VA_ARGS__, items, threads, __VA_ARGS__)

template <typename... P, typename... A>
static inline int launch_flat_named(const char *fn, const char *text, int64_t n, void (*kernel)(P...), A... args)
{
    if (n <= 0) return FACET_STATUS_OK;
#ifdef FACET_CUDA_EMULATOR
    facet_emu::launch(kernel, facet_emu::kernel_name(text), grid_blocks(n), FACET_CUDA_THREADS)(args...);
#else
    (void)text;
    kernel<<<grid_blocks(n), FACET_CUDA_THREADS>>>(args...);
#endif
    return check_launch(fn);
}

template <typename... P, typename... A>
static inline int launch_items_named(const char *fn, const char *text, int64_t items, unsigned threads,
                                     void (*kernel)(P...), A... args)
{
    if (items <= 0) return FACET_STATUS_OK;
#ifdef FACET_CUDA_EMULATOR
    facet_emu::launch(kernel, facet_emu::kernel_name(text), item_blocks(items), threads)(args...);
#else
    (void)text;
    kernel<<<item_blocks(items), threads>>>(args...);
#endif
    return check_launch(fn);
}

/* ---- warp and block reductions ------------------------------------------------------------------
 * For any trivially copyable T (a number, or a struct of them such as a
 * (max, sum) pair) and an associative op(a, b) that puts a's elements first.
 * The order is a fixed tree: lane i takes lane i + 16, i + 8, ..., then warp
 * 0 folds the warps' results the same way; so the result depends on the
 * values and the block size only. */

template <typename T>
static __device__ __forceinline__ T shfl_down_any(T v, int offset)
{
    static_assert(sizeof(T) % 4 == 0, "shuffled types are whole 32-bit words");
    int w[sizeof(T) / 4];
    memcpy(w, &v, sizeof(T));
#pragma unroll
    for (int k = 0; k < (int)(sizeof(T) / 4); k++) w[k] = __shfl_down_sync(0xffffffffu, w[k], offset);
    memcpy(&v, w, sizeof(T));
    return v;
}

template <typename T>
static __device__ __forceinline__ T shfl_idx_any(T v, int lane)
{
    static_assert(sizeof(T) % 4 == 0, "shuffled types are whole 32-bit words");
    int w[sizeof(T) / 4];
    memcpy(w, &v, sizeof(T));
#pragma unroll
    for (int k = 0; k < (int)(sizeof(T) / 4); k++) w[k] = __shfl_sync(0xffffffffu, w[k], lane);
    memcpy(&v, w, sizeof(T));
    return v;
}

/* The warp's reduction, valid in lane 0. Every lane of the warp must call it. */
template <typename T, typename Op>
static __device__ __forceinline__ T warp_reduce(T v, Op op)
{
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = op(v, shfl_down_any(v, off));
    return v;
}

/* The warp's reduction (lane 0's), handed to every lane. */
template <typename T, typename Op>
static __device__ __forceinline__ T warp_reduce_all(T v, Op op)
{
    return shfl_idx_any(warp_reduce(v, op), 0);
}

/* The block's reduction, handed to every thread. The block has a multiple of
 * 32 threads (any 1-3-D shape, at most 1024); identity stands in for the
 * missing warps. It synchronises the block three times: every thread must
 * call it, and it may be called again right away. */
template <typename T, typename Op>
static __device__ T block_reduce(T v, Op op, T identity)
{
    __shared__ T warps[32];
    const int tid = (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
    const int lane = tid & 31, warp = tid >> 5;
    const int nwarps = (int)(blockDim.x * blockDim.y * blockDim.z) >> 5;
    v = warp_reduce(v, op);
    if (lane == 0) warps[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = warp_reduce(lane < nwarps ? warps[lane] : identity, op);
        if (lane == 0) warps[0] = v;
    }
    __syncthreads();
    v = warps[0];
    __syncthreads();    /* warps[] is free for the next call */
    return v;
}

struct op_sum {
    template <typename T>
    __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};

template <typename T>
static __device__ __forceinline__ T block_sum(T v) { return block_reduce(v, op_sum(), T(0)); }

/* ---- scratch memory --------------------------------------------------------------------------------
 * Temporary device buffers for one call, from the caching allocator of the
 * tensors (alloc.cu): a block freed at the end of a call can be handed out at
 * once because every kernel, cuBLAS call and copy of facet runs on the legacy
 * default stream, in order, so nothing queued can still touch it. No driver
 * call or synchronisation after the first step (the driver's own
 * stream-ordered pool gives its memory back at every synchronisation unless
 * told not to), and scratch shows in facet.cuda.memory_stats and its peaks. */
struct scratch {
    void *p;
};

static inline int scratch_alloc(scratch *s, size_t nbytes, const char *fn)
{
    s->p = NULL;
    int rc = facet_cuda_malloc(&s->p, nbytes);
    if (rc) {
        char why[1024];
        snprintf(why, sizeof why, "%s", facet_last_error());   /* facet_fail rewrites that buffer */
        s->p = NULL;
        return facet_fail(rc, "%s: scratch of %zu bytes: %s", fn, nbytes, why);
    }
    return FACET_STATUS_OK;
}

static inline int scratch_free(scratch *s, const char *fn)
{
    if (!s->p) return FACET_STATUS_OK;
    int rc = facet_cuda_free(s->p);
    s->p = NULL;
    if (!rc) return FACET_STATUS_OK;
    char why[1024];
    snprintf(why, sizeof why, "%s", facet_last_error());
    return facet_fail(rc, "%s: %s", fn, why);
}

#endif
