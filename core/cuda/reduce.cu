/*
 * reduce.cu - reductions of a contiguous float32 tensor viewed as
 * [outer, n, inner] to outer*inner results (output o = outer_i*inner +
 * inner_i), with reduce_math.h's accumulator, the one reduce.c uses: a
 * (double value, index) pair whose max/min merge is order-free, so the
 * result equals a sequential left-to-right scan (first extreme, first NaN)
 * however the threads combine; sums add in double in the fixed order of the
 * launch shape. Three launch shapes: one thread per output for short n; one
 * block per row when inner == 1 (block_reduce); 32x8 blocks over a tile of
 * 32 inner positions otherwise (reads stay coalesced). When there are too
 * few outputs to fill the GPU, n is cut into chunks whose partial
 * accumulators a second kernel merges in order.
 * facet_cuda_sumsq_list: the square sums of a list of tensors (an
 * optimizer's gradients) by multi-tensor launches (tensor_list.cuh): one
 * block per chunk of a tensor sums it in double, then one thread per tensor
 * adds its chunks' sums in order: two launches per 48 tensors, whatever
 * their sizes, and the same bits on every run.
 */
#include "cuda_common.cuh"
#include "tensor_list.cuh"
#include "reduce_math.h"

typedef struct facet_racc racc;

enum {
    SHORT_N = 32,           /* up to this n, one thread folds one output */
    COL_TILE = 32,          /* inner positions per block in the column kernel */
    COL_ROWS = 8,           /* threads per block along n in the column kernel */
    CHUNK_MIN = 4096,       /* never split n finer than this */
    TARGET_BLOCKS = 2048    /* enough blocks to keep any current GPU busy */
};

/* facet_racc_merge as a block_reduce op */
struct racc_op {
    int op;
    __device__ __forceinline__ racc operator()(racc a, racc b) const { return facet_racc_merge(op, a, b); }
};

/* Finish one output: either its final value or, when n is chunked, the
 * partial accumulator of chunk c. */
static __device__ __forceinline__ void racc_emit(void *out, racc *partial, int op, int64_t o, int64_t c,
                                                 int64_t nchunks, racc a, int64_t n, int index_base)
{
    if (partial) partial[o * nchunks + c] = a;
    else facet_racc_store(out, op, o, a, n, index_base);
}

/* One thread per output, any inner; adjacent threads read adjacent inner
 * positions, so this is coalesced whenever inner > 1. */
static __global__ void reduce_thread_kernel(void *out, const float *x, int op, int64_t outer, int64_t n,
                                            int64_t inner, int index_base)
{
    FACET_CUDA_FOR(o, outer * inner) {
        int64_t ou = o / inner, ii = o - ou * inner;
        const float *p = x + ou * n * inner + ii;
        racc a = facet_racc_init(op);
        for (int64_t j = 0; j < n; j++) a = facet_racc_add(op, a, p[j * inner], j);
        facet_racc_store(out, op, o, a, n, index_base);
    }
}

/* inner == 1: one block per (row, chunk), block_reduce over its threads. */
static __global__ void reduce_row_kernel(void *out, racc *partial, const float *x, int op, int64_t outer,
                                         int64_t n, int64_t chunk, int64_t nchunks, int index_base)
{
    const racc_op merge = { op };
    FACET_CUDA_FOR_BLOCK(t, outer * nchunks) {
        int64_t row = t / nchunks, c = t - row * nchunks;
        int64_t lo = c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        const float *p = x + row * n;
        racc a = facet_racc_init(op);
        for (int64_t j = lo + threadIdx.x; j < hi; j += blockDim.x) a = facet_racc_add(op, a, p[j], j);
        a = block_reduce(a, merge, facet_racc_init(op));
        if (threadIdx.x == 0) racc_emit(out, partial, op, row, c, nchunks, a, n, index_base);
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
        racc a = facet_racc_init(op);
        if (ii < inner) {
            const float *p = x + ou * n * inner + ii;
            for (int64_t j = lo + ty; j < hi; j += COL_ROWS) a = facet_racc_add(op, a, p[j * inner], j);
        }
        sh[ty][tx] = a;
        __syncthreads();
        if (ty == 0 && ii < inner) {
            for (int r = 1; r < COL_ROWS; r++) a = facet_racc_merge(op, a, sh[r][tx]);
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
        for (int64_t c = 1; c < nchunks; c++) a = facet_racc_merge(op, a, partial[o * nchunks + c]);
        facet_racc_store(out, op, o, a, n, index_base);
    }
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

    scratch part = { NULL };
    if (nchunks > 1) FACET_CUDA_TRY(scratch_alloc(&part, (size_t)(nout * nchunks) * sizeof(racc), fn));
    racc *partial = (racc *)part.p;

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
        int rc_free = scratch_free(&part, fn);
        if (rc == FACET_STATUS_OK) rc = rc_free;
    }
    return rc;
}

/* ---- square sums of a list ------------------------------------------------------------------- */

/* Block b: the double square sum of its chunk of tensor j (p[0] the values,
 * p[1] the per-row coefficients or NULL, p[2] the rows they scale). */
static __global__ void sumsq_list_kernel(tlist l, double *partial)
{
    const int64_t b = blockIdx.x;
    const int j = tlist_find(l, b);
    int64_t lo, hi;
    tlist_chunk(l, j, b, &lo, &hi);
    const float *x = (const float *)l.p[0][j], *coef = (const float *)l.p[1][j], *w = (const float *)l.p[2][j];
    const int64_t cols = l.cols[j];
    double s = 0.0;
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        const float v = coef ? facet_madd_rn(coef[i / cols], w[i], x[i]) : x[i];
        s = facet_dadd_rn(s, facet_dmul_rn((double)v, (double)v));
    }
    s = block_sum(s);
    if (threadIdx.x == 0) partial[b] = s;
}

/* One thread per tensor: its chunks' sums in order, rounded to float once. */
static __global__ void sumsq_merge_kernel(tlist l, const double *partial, float *out)
{
    FACET_CUDA_FOR(j, l.n) {
        double s = 0.0;
        for (int64_t b = l.first[j]; b < l.first[j + 1]; b++) s = facet_dadd_rn(s, partial[b]);
        out[j] = (float)s;
    }
}

/* the square sums of tensors [0, l->n) of a list into out */
static int sumsq_launch(const char *fn, const tlist *l, float *out)
{
    scratch part = { NULL };
    const int64_t blocks = tlist_blocks(l);
    if (blocks > 0) FACET_CUDA_TRY(scratch_alloc(&part, (size_t)blocks * sizeof(double), fn));
    int rc = tlist_launch(fn, l, sumsq_list_kernel, *l, (double *)part.p);
    if (!rc) rc = launch_flat(fn, l->n, sumsq_merge_kernel, *l, (const double *)part.p, out);
    int rc_free = scratch_free(&part, fn);
    return rc ? rc : rc_free;
}

extern "C" int facet_cuda_sumsq_list(float *out, const float *const *xs, const float *const *coefs,
                                     const float *const *params, const int64_t *numel, const int64_t *cols, int n)
{
    const char *fn = "facet_cuda_sumsq_list";
    tlist l;
    tlist_reset(&l);
    int first = 0, rc = FACET_STATUS_OK;
    for (int k = 0; k < n && !rc; k++) {
        const int j = tlist_add(&l, numel[k]);
        l.p[0][j] = (void *)xs[k];
        l.p[1][j] = (void *)(coefs ? coefs[k] : NULL);
        l.p[2][j] = (void *)(params ? params[k] : NULL);
        l.cols[j] = cols[k] > 0 ? cols[k] : 1;
        if (tlist_full(&l) || k == n - 1) {
            rc = sumsq_launch(fn, &l, out + first);
            first = k + 1;
            tlist_reset(&l);
        }
    }
    return rc;
}
