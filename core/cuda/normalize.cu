/*
 * normalize.cu - L2 normalisation of the rows of a contiguous float32
 * matrix: one block per row sums the squares (in double, then rounded once,
 * so long rows lose nothing to accumulation order), takes the scale from
 * facet_l2_scale() exactly as the CPU does, and rescales the row. out may be
 * x: every element is read for the sum before any is written. norms, when
 * given, receives sqrt of the same rounded sum of squares.
 */
#include "cuda_common.cuh"

/* Sum over the block; valid in thread 0. blockDim.x is a multiple of 32. */
static __device__ double block_sum(double v, double *warp_sums)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    if (warp == 0) {
        int nwarps = blockDim.x >> 5;
        v = lane < nwarps ? warp_sums[lane] : 0.0;
        for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    }
    return v;
}

static __global__ void l2_rows_kernel(float *out, float *norms, const float *x, int64_t rows, int64_t cols,
                                      float eps)
{
    __shared__ double warp_sums[32];
    __shared__ float scale;
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const float *xr = x + row * cols;
        float *outr = out + row * cols;
        double ss = 0.0;
        for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) ss += (double)xr[j] * (double)xr[j];
        ss = block_sum(ss, warp_sums);
        if (threadIdx.x == 0) {
            float ssf = (float)ss;
            scale = facet_l2_scale(ssf, eps);
            if (norms) norms[row] = sqrtf(ssf);
        }
        __syncthreads();
        float s = scale;
        for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) outr[j] = xr[j] * s;
        __syncthreads();    /* scale and warp_sums are reused by the next row */
    }
}

extern "C" int facet_cuda_l2_normalize_rows(float *out, float *norms, const float *x, int64_t rows,
                                            int64_t cols, float eps)
{
    if (rows <= 0) return FACET_STATUS_OK;
    /* short rows get a narrower block rather than idle threads */
    int threads = 32;
    while (threads < FACET_CUDA_THREADS && threads < cols) threads *= 2;
    l2_rows_kernel<<<item_blocks(rows), threads>>>(out, norms, x, rows, cols, eps);
    return check_launch("facet_cuda_l2_normalize_rows");
}
