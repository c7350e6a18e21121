/*
 * softmax.cu - softmax over the last dim and its backward on CUDA (the CPU
 * version is core/src/softmax.c), with layernorm_math.h's per-element math.
 * One block per row (32..256 threads, by row length): a block reduction of
 * the row's maximum, then block_sum in double of exp(x - max) (backward: of
 * grad_out * out), rounded once, then the elements. Every element of a row
 * is read before any is written, so out may be x and grad_x grad_out.
 */
#include "cuda_common.cuh"
#include "layernorm_math.h"

struct op_max {
    __device__ __forceinline__ float operator()(float a, float b) const { return b > a ? b : a; }
};

static unsigned softmax_threads(int64_t cols)
{
    unsigned t = 32;
    while (t < FACET_CUDA_THREADS && t < cols) t *= 2;
    return t;
}

static __global__ void softmax_kernel(float *out, const float *x, int64_t rows, int64_t cols)
{
    FACET_CUDA_FOR_BLOCK(r, rows) {
        const float *xr = x + r * cols;
        float mx = -INFINITY;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) mx = op_max()(mx, xr[c]);
        mx = block_reduce(mx, op_max(), -INFINITY);
        double s = 0.0;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) s += facet_softmax_exp(xr[c], mx);
        const float inv = (float)(1.0 / block_sum(s));
        float *o = out + r * cols;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
            o[c] = facet_softmax_out(facet_softmax_exp(xr[c], mx), inv);
    }
}

static __global__ void softmax_backward_kernel(float *gx, const float *g, const float *y, int64_t rows, int64_t cols)
{
    FACET_CUDA_FOR_BLOCK(r, rows) {
        const float *gr = g + r * cols, *yr = y + r * cols;
        double dot = 0.0;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dot += (double)gr[c] * yr[c];
        const float d = (float)block_sum(dot);
        float *o = gx + r * cols;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) o[c] = facet_softmax_grad_x(gr[c], yr[c], d);
    }
}

extern "C" int facet_cuda_softmax_forward(float *out, const float *x, int64_t rows, int64_t cols)
{
    return launch_items("facet_cuda_softmax_forward", rows, softmax_threads(cols), softmax_kernel, out, x, rows, cols);
}

extern "C" int facet_cuda_softmax_backward(float *grad_x, const float *grad_out, const float *out, int64_t rows,
                                           int64_t cols)
{
    return launch_items("facet_cuda_softmax_backward", rows, softmax_threads(cols), softmax_backward_kernel, grad_x,
                        grad_out, out, rows, cols);
}
