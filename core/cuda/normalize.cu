/*
 * normalize.cu - the row operations of core/src/normalize.c on CUDA: L2
 * normalisation of the rows of a contiguous float32 matrix and its backward,
 * row norms, and a per-row axpy (the heads' W-norm and radial-correction
 * passes). Sums of squares and dot products accumulate in double and are
 * rounded once, so long rows lose nothing to the order of accumulation.
 *
 * Launch shapes:
 *   l2_normalize_rows   one block per row (32..256 threads, by row length):
 *                       block_sum of the squares, then the scale from
 *                       facet_l2_scale() exactly as the CPU takes it, then
 *                       the rescaled row. out may be x: every element is read
 *                       for the sum before any is written. norms, when given,
 *                       receives sqrt of the same rounded sum of squares.
 *   row_norms,          one warp per row (8 rows a block), warp_reduce_all.
 *   l2_normalize_backward
 *   rows_axpy           a 2-D grid of (column blocks, rows).
 */
#include "cuda_common.cuh"

enum { ROW_WARPS = 8 };     /* rows a block in the warp-per-row kernels */

static __global__ void l2_rows_kernel(float *out, float *norms, const float *x, int64_t rows, int64_t cols,
                                      float eps)
{
    FACET_CUDA_FOR_BLOCK(row, rows) {
        const float *xr = x + row * cols;
        float *outr = out + row * cols;
        double ss = 0.0;
        for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) ss += (double)xr[j] * (double)xr[j];
        const float ssf = (float)block_sum(ss);     /* every thread: the same bits */
        const float s = facet_l2_scale(ssf, eps);
        if (threadIdx.x == 0 && norms) norms[row] = sqrtf(ssf);
        for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) outr[j] = xr[j] * s;
    }
}

/* Row r of the warp-per-row kernels; the loop bound is warp-uniform. */
#define FOR_WARP_ROW(r, rows)                                                                          \
    for (int64_t r = (int64_t)blockIdx.x * ROW_WARPS + (threadIdx.x >> 5); r < (rows);                \
         r += (int64_t)gridDim.x * ROW_WARPS)

static __global__ void row_norms_kernel(float *out, const float *x, int64_t rows, int64_t cols)
{
    const int lane = threadIdx.x & 31;
    FOR_WARP_ROW(r, rows) {
        const float *xr = x + r * cols;
        double ss = 0.0;
        for (int64_t c = lane; c < cols; c += 32) ss += (double)xr[c] * (double)xr[c];
        ss = warp_reduce(ss, op_sum());
        if (lane == 0) out[r] = sqrtf((float)ss);
    }
}

static __global__ void l2_backward_kernel(float *dx, const float *dy, const float *y, const float *norms,
                                          int64_t rows, int64_t cols, float eps)
{
    const int lane = threadIdx.x & 31;
    FOR_WARP_ROW(r, rows) {
        const float *gr = dy + r * cols, *yr = y + r * cols;
        float *dr = dx + r * cols;
        double dot = 0.0;
        for (int64_t c = lane; c < cols; c += 32) dot += (double)gr[c] * (double)yr[c];
        /* rounded once and multiplied by the reciprocal, as the CPU does; dx
         * may be dy: the whole row is read before the shuffles hand out the sum */
        const float fd = (float)warp_reduce_all(dot, op_sum());
        const float inv = 1.0f / fmaxf(norms[r], eps);
        for (int64_t c = lane; c < cols; c += 32)
            dr[c] = facet_mul_rn(facet_add_rn(gr[c], -facet_mul_rn(fd, yr[c])), inv);
    }
}

static __global__ void rows_axpy_kernel(float *out, const float *coef, const float *x, int64_t rows, int64_t cols)
{
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const float a = coef[r];
        if (a == 0.0f) continue;    /* as on the CPU: the row stays as it is even where x is inf/NaN */
        float *o = out + r * cols;
        const float *xr = x + r * cols;
        for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < cols;
             c += (int64_t)gridDim.x * blockDim.x)
            o[c] = facet_madd_rn(a, xr[c], o[c]);
    }
}

static unsigned row_blocks(int64_t rows)
{
    int64_t b = (rows + ROW_WARPS - 1) / ROW_WARPS;
    return b > FACET_CUDA_MAX_BLOCKS ? (unsigned)FACET_CUDA_MAX_BLOCKS : (unsigned)b;
}

extern "C" int facet_cuda_l2_normalize_rows(float *out, float *norms, const float *x, int64_t rows,
                                            int64_t cols, float eps)
{
    /* short rows get a narrower block rather than idle threads */
    unsigned threads = 32;
    while (threads < FACET_CUDA_THREADS && threads < cols) threads *= 2;
    return launch_items("facet_cuda_l2_normalize_rows", rows, threads, l2_rows_kernel, out, norms, x, rows, cols, eps);
}

extern "C" int facet_cuda_row_norms(float *out, const float *x, int64_t rows, int64_t cols)
{
    if (rows <= 0) return FACET_STATUS_OK;
    row_norms_kernel<<<row_blocks(rows), ROW_WARPS * 32>>>(out, x, rows, cols);
    return check_launch("facet_cuda_row_norms");
}

extern "C" int facet_cuda_l2_normalize_backward(float *dx, const float *dy, const float *y, const float *norms,
                                                int64_t rows, int64_t cols, float eps)
{
    if (rows <= 0) return FACET_STATUS_OK;
    l2_backward_kernel<<<row_blocks(rows), ROW_WARPS * 32>>>(dx, dy, y, norms, rows, cols, eps);
    return check_launch("facet_cuda_l2_normalize_backward");
}

extern "C" int facet_cuda_rows_axpy(float *out, const float *coef, const float *x, int64_t rows, int64_t cols)
{
    if (rows <= 0 || cols <= 0) return FACET_STATUS_OK;
    /* grid.y is capped at 65535 by the hardware; keep the grid's total to a
     * few times what fills a GPU, the loops cover the rest */
    unsigned gy = rows > 65535 ? 65535u : (unsigned)rows;
    unsigned gx = grid_blocks(cols), cap = 4u * FACET_CUDA_MAX_BLOCKS / gy;
    if (gx > cap) gx = cap > 0 ? cap : 1;
    rows_axpy_kernel<<<dim3(gx, gy), FACET_CUDA_THREADS>>>(out, coef, x, rows, cols);
    return check_launch("facet_cuda_rows_axpy");
}
