/*
 * reduce.cu - reductions of a contiguous float32 tensor viewed as
 * [outer, n, inner] to outer*inner results (output o = outer_i*inner +
 * inner_i). Every op folds into one accumulator, a (double value, index)
 * pair: sums add in double; max/min keep the extreme value and its index,
 * where NaN counts as more extreme than any number and ties go to the lower
 * index, so the result does not depend on the order threads combine in and
 * equals a sequential left-to-right scan (first extreme, first NaN). Three
 * launch shapes: one thread per output for short n; one block per row when
 * inner == 1; 32x8 blocks over a tile of 32 inner positions otherwise (reads
 * stay coalesced). When there are too few outputs to fill the GPU, n is cut
 * into chunks whose partial accumulators a second kernel merges in order.
 */
#include "cuda_common.cuh"
#include <float.h>
#include <limits.h>

struct racc {
    double v;
    long long i;            /* LLONG_MAX: no element seen yet */
};

enum {
    SHORT_N = 32,           /* up to this n, one thread folds one output */
    COL_TILE = 32,          /* inner positions per block in the column kernel */
    COL_ROWS = 8,           /* threads per block along n in the column kernel */
    CHUNK_MIN = 4096,       /* never split n finer than this */
    TARGET_BLOCKS = 2048    /* enough blocks to keep any current GPU busy */
};

__device__ __forceinline__ bool is_max_op(int op)
{
    return op == FACET_REDUCE_MAX || op == FACET_REDUCE_ARGMAX;
}

__device__ __forceinline__ bool is_min_op(int op)
{
    return op == FACET_REDUCE_MIN || op == FACET_REDUCE_ARGMIN;
}

__device__ __forceinline__ racc racc_init(int op)
{
    racc a;
    a.i = LLONG_MAX;
    if (is_max_op(op)) a.v = -(double)INFINITY;
    else if (is_min_op(op)) a.v = (double)INFINITY;
    else a.v = 0.0;
    return a;
}

/* Does b beat a? NaN beats numbers, a NaN tie or an equal value goes to the
 * lower index; `greater` picks max (true) or min (false). */
__device__ __forceinline__ bool racc_beats(racc b, racc a, bool greater)
{
    bool an = isnan(a.v), bn = isnan(b.v);
    if (an || bn) return bn && (!an || b.i < a.i);
    if (b.v == a.v) return b.i < a.i;
    return greater ? b.v > a.v : b.v < a.v;
}

__device__ __forceinline__ racc racc_merge(int op, racc a, racc b)
{
    if (is_max_op(op)) return racc_beats(b, a, true) ? b : a;
    if (is_min_op(op)) return racc_beats(b, a, false) ? b : a;
    a.v += b.v;
    return a;
}

/* Fold element x (at index j along n) into a. */
__device__ __forceinline__ racc racc_add(int op, racc a, float x, long long j)
{
    if (op == FACET_REDUCE_SUM || op == FACET_REDUCE_MEAN) {
        a.v += (double)x;
        return a;
    }
    if (op == FACET_REDUCE_SUMSQ) {
        a.v += (double)x * (double)x;
        return a;
    }
    racc e;
    e.v = (double)x;
    e.i = j;
    return racc_merge(op, a, e);
}

__device__ __forceinline__ void racc_store(void *out, int op, int64_t o, racc a, int64_t n, int index_base)
{
    switch (op) {
    case FACET_REDUCE_ARGMAX:
    case FACET_REDUCE_ARGMIN:
        /* n == 0: index 0, i.e. index_base */
        ((int64_t *)out)[o] = (a.i == LLONG_MAX ? 0 : (int64_t)a.i) + index_base;
        break;
    case FACET_REDUCE_MEAN:
        /* n == 0 gives 0/0 = NaN */
        ((float *)out)[o] = (float)(a.v / (double)n);
        break;
    default:
        ((float *)out)[o] = (float)a.v;
        break;
    }
}

/* Finish one output: either its final value or, when n is chunked, the
 * partial accumulator of chunk c. */
__device__ __forceinline__ void racc_emit(void *out, racc *partial, int op, int64_t o, int64_t c,
                                          int64_t nchunks, racc a, int64_t n, int index_base)
{
    if (partial) partial[o * nchunks + c] = a;
    else racc_store(out, op, o, a, n, index_base);
}

/* One thread per output, any inner; adjacent threads read adjacent inner
 * positions, so this is coalesced whenever inner > 1. */
static __global__ void reduce_thread_kernel(void *out, const float *x, int op, int64_t outer, int64_t n,
                                            int64_t inner, int index_base)
{
    FACET_CUDA_FOR(o, outer * inner) {
        int64_t ou = o / inner, ii = o - ou * inner;
        const float *p = x + ou * n * inner + ii;
        racc a = racc_init(op);
        for (int64_t j = 0; j < n; j++) a = racc_add(op, a, p[j * inner], j);
        racc_store(out, op, o, a, n, index_base);
    }
}

/* inner == 1: one block per (row, chunk), a shared-memory tree per block. */
static __global__ void reduce_row_kernel(void *out, racc *partial, const float *x, int op, int64_t outer,
                                         int64_t n, int64_t chunk, int64_t nchunks, int index_base)
{
    __shared__ racc sh[FACET_CUDA_THREADS];
    const int tid = threadIdx.x;
    for (int64_t t = blockIdx.x; t < outer * nchunks; t += gridDim.x) {
        int64_t row = t / nchunks, c = t - row * nchunks;
        int64_t lo = c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        const float *p = x + row * n;
        racc a = racc_init(op);
        for (int64_t j = lo + tid; j < hi; j += blockDim.x) a = racc_add(op, a, p[j], j);
        sh[tid] = a;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
            if (tid < s) sh[tid] = racc_merge(op, sh[tid], sh[tid + s]);
            __syncthreads();
        }
        if (tid == 0) racc_emit(out, partial, op, row, c, nchunks, sh[0], n, index_base);
        __syncthreads();    /* sh[0] is read before the next task overwrites sh */
    }
}

/* inner > 1: a block of COL_TILE x COL_ROWS threads covers COL_TILE inner
 * positions of one outer index (and one chunk of n); threadIdx.y strides n. */
static __global__ void reduce_col_kernel(void *out, racc *partial, const float *x, int op, int64_t outer,
                                         int64_t n, int64_t inner, int64_t chunk, int64_t nchunks,
                                         int index_base)
{
    __shared__ racc sh[COL_ROWS][COL_TILE];
    const int tx = threadIdx.x, ty = threadIdx.y;
    int64_t tiles = (inner + COL_TILE - 1) / COL_TILE;
    for (int64_t t = blockIdx.x; t < outer * tiles * nchunks; t += gridDim.x) {
        int64_t c = t % nchunks, rest = t / nchunks;
        int64_t tile = rest % tiles, ou = rest / tiles;
        int64_t ii = tile * COL_TILE + tx;
        int64_t lo = c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        racc a = racc_init(op);
        if (ii < inner) {
            const float *p = x + ou * n * inner + ii;
            for (int64_t j = lo + ty; j < hi; j += COL_ROWS) a = racc_add(op, a, p[j * inner], j);
        }
        sh[ty][tx] = a;
        __syncthreads();
        if (ty == 0 && ii < inner) {
            for (int r = 1; r < COL_ROWS; r++) a = racc_merge(op, a, sh[r][tx]);
            racc_emit(out, partial, op, ou * inner + ii, c, nchunks, a, n, index_base);
        }
        __syncthreads();
    }
}

/* Second pass of a chunked reduction: merge each output's chunks in order. */
static __global__ void reduce_merge_kernel(void *out, const racc *partial, int op, int64_t nout,
                                           int64_t nchunks, int64_t n, int index_base)
{
    FACET_CUDA_FOR(o, nout) {
        racc a = partial[o * nchunks];
        for (int64_t c = 1; c < nchunks; c++) a = racc_merge(op, a, partial[o * nchunks + c]);
        racc_store(out, op, o, a, n, index_base);
    }
}

/* Scratch for partials, stream-ordered where the device has memory pools. */
static int scratch_alloc(void **p, size_t nbytes, bool *pooled, const char *fn)
{
    *pooled = true;
    cudaError_t e = cudaMallocAsync(p, nbytes, 0);
    if (e == cudaErrorNotSupported) {
        (void)cudaGetLastError();
        *pooled = false;
        e = cudaMalloc(p, nbytes);
    }
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        return facet_fail(FACET_STATUS_ERR_MEMORY, "%s: scratch of %zu bytes: %s", fn, nbytes, cudaGetErrorString(e));
    }
    return check_cuda(e, fn);
}

static int scratch_free(void *p, bool pooled, const char *fn)
{
    return check_cuda(pooled ? cudaFreeAsync(p, 0) : cudaFree(p), fn);
}

extern "C" int facet_cuda_reduce(void *out, const float *x, int op, int64_t outer, int64_t n,
                                 int64_t inner, int index_base)
{
    const char *fn = "facet_cuda_reduce";
    if (op < 0 || op >= FACET_REDUCE_COUNT) return facet_fail(FACET_STATUS_ERR_ARG, "%s: unknown op %d", fn, op);
    if (outer < 0 || n < 0 || inner < 0)
        return facet_fail(FACET_STATUS_ERR_ARG, "%s: negative extent [%lld, %lld, %lld]", fn, (long long)outer,
                          (long long)n, (long long)inner);
    int64_t nout = outer * inner;
    if (nout == 0) return FACET_STATUS_OK;

    if (n <= SHORT_N) {
        reduce_thread_kernel<<<grid_blocks(nout), FACET_CUDA_THREADS>>>(out, x, op, outer, n, inner,
                                                                        index_base);
        return check_launch(fn);
    }

    /* split n only when the outputs alone leave the GPU mostly idle */
    int64_t tiles = (inner + COL_TILE - 1) / COL_TILE;
    int64_t tasks = inner == 1 ? outer : outer * tiles;
    int64_t nchunks = 1;
    if (tasks < TARGET_BLOCKS / 2 && n >= 2 * CHUNK_MIN) {
        int64_t by_size = (n + CHUNK_MIN - 1) / CHUNK_MIN;
        int64_t by_gpu = (TARGET_BLOCKS + tasks - 1) / tasks;
        nchunks = by_size < by_gpu ? by_size : by_gpu;
    }
    int64_t chunk = (n + nchunks - 1) / nchunks;
    nchunks = (n + chunk - 1) / chunk;

    racc *partial = NULL;
    bool pooled = false;
    if (nchunks > 1) {
        int rc = scratch_alloc((void **)&partial, (size_t)(nout * nchunks) * sizeof(racc), &pooled, fn);
        if (rc) return rc;
    }

    if (inner == 1) {
        reduce_row_kernel<<<item_blocks(outer * nchunks), FACET_CUDA_THREADS>>>(
            out, partial, x, op, outer, n, chunk, nchunks, index_base);
    } else {
        dim3 block(COL_TILE, COL_ROWS);
        reduce_col_kernel<<<item_blocks(tasks * nchunks), block>>>(out, partial, x, op, outer, n, inner,
                                                                   chunk, nchunks, index_base);
    }
    int rc = check_launch(fn);
    if (partial) {
        if (rc == FACET_STATUS_OK) {
            reduce_merge_kernel<<<grid_blocks(nout), FACET_CUDA_THREADS>>>(out, partial, op, nout, nchunks, n,
                                                                          index_base);
            rc = check_launch(fn);
        }
        int rc_free = scratch_free(partial, pooled, fn);
        if (rc == FACET_STATUS_OK) rc = rc_free;
    }
    return rc;
}
