/*
 * batchnorm.cu - batch normalisation on CUDA, with the contracts of
 * core/src/batchnorm.c (which checks the arguments): x is [n, c, hw].
 *
 * One block per channel (grid-stride over channels). A block's threads form
 * a small grid over the channel's values: kt threads along the plane (a power
 * of two up to the block size, so short planes leave few threads idle) times
 * blockDim / kt along n, with no division in the loops. The statistics sum
 * in double, shifted by the channel's first value as on the CPU, with a
 * block reduction; every thread then holds the sums and derives the same
 * coefficients, and thread 0 writes the per-channel outputs. As one block
 * owns a channel, grad_weight / grad_bias accumulate without atomics.
 */
#include "cuda_common.cuh"
#include "norm_pool_cuda.h"

/* Threads along the plane for a plane of hw values. */
static int plane_threads(int64_t hw)
{
    int kt = 1;
    while (kt < FACET_CUDA_THREADS && kt < hw) kt *= 2;
    return kt;
}

/* Sums a and b over the block and hands both totals to every thread.
 * blockDim.x is a multiple of 32; red holds 64 doubles of shared memory. */
static __device__ void block_sum2(double *a, double *b, double *red)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    double x = *a, y = *b;
    for (int off = 16; off > 0; off >>= 1) {
        x += __shfl_down_sync(0xffffffffu, x, off);
        y += __shfl_down_sync(0xffffffffu, y, off);
    }
    if (lane == 0) {
        red[warp] = x;
        red[32 + warp] = y;
    }
    __syncthreads();
    if (warp == 0) {
        x = lane < nwarps ? red[lane] : 0.0;
        y = lane < nwarps ? red[32 + lane] : 0.0;
        for (int off = 16; off > 0; off >>= 1) {
            x += __shfl_down_sync(0xffffffffu, x, off);
            y += __shfl_down_sync(0xffffffffu, y, off);
        }
        if (lane == 0) {
            red[0] = x;
            red[32] = y;
        }
    }
    __syncthreads();
    *a = red[0];
    *b = red[32];
    __syncthreads();    /* red is reused by the next channel */
}

static __global__ void bn_forward_kernel(float *out, float *save_mean, float *save_invstd, float *running_mean,
                                         float *running_var, const float *x, const float *weight, const float *bias,
                                         int64_t n, int64_t c, int64_t hw, int kt, int training, double momentum,
                                         double eps)
{
    __shared__ double red[64];
    const int tk = threadIdx.x % kt, tn = threadIdx.x / kt, nt = blockDim.x / kt;
    const double count = (double)(n * hw);
    for (int64_t ch = blockIdx.x; ch < c; ch += gridDim.x) {
        double mean, var;
        if (training) {
            const double shift = x[ch * hw];
            double s = 0.0, ss = 0.0;
            for (int64_t i = tn; i < n; i += nt) {
                const float *p = x + (i * c + ch) * hw;
                for (int64_t k = tk; k < hw; k += kt) {
                    const double d = (double)p[k] - shift;
                    s += d;
                    ss += d * d;
                }
            }
            block_sum2(&s, &ss, red);
            const double dm = s / count;
            mean = shift + dm;
            var = fmax(ss / count - dm * dm, 0.0);     /* rounding can leave a tiny negative */
        } else {
            mean = running_mean[ch];
            var = running_var[ch];
        }
        const double invstd = 1.0 / sqrt(var + eps);
        if (threadIdx.x == 0) {
            if (save_mean) save_mean[ch] = (float)mean;
            if (save_invstd) save_invstd[ch] = (float)invstd;
            if (training && running_mean) {
                const double unbiased = var * count / (count - 1.0);
                running_mean[ch] = (float)((1.0 - momentum) * running_mean[ch] + momentum * mean);
                running_var[ch] = (float)((1.0 - momentum) * running_var[ch] + momentum * unbiased);
            }
        }
        const float m = (float)mean, k = (float)((weight ? weight[ch] : 1.0) * invstd);
        const float d = bias ? bias[ch] : 0.0f;
        for (int64_t i = tn; i < n; i += nt) {
            const int64_t off = (i * c + ch) * hw;
            for (int64_t q = tk; q < hw; q += kt) out[off + q] = (x[off + q] - m) * k + d;
        }
    }
}

extern "C" int facet_cuda_batchnorm_forward(float *out, float *save_mean, float *save_invstd, float *running_mean,
                                            float *running_var, const float *x, const float *weight,
                                            const float *bias, int64_t n, int64_t c, int64_t hw, int training,
                                            double momentum, double eps)
{
    if (c <= 0) return FACET_STATUS_OK;
    bn_forward_kernel<<<item_blocks(c), FACET_CUDA_THREADS>>>(out, save_mean, save_invstd, running_mean, running_var,
                                                              x, weight, bias, n, c, hw, plane_threads(hw), training,
                                                              momentum, eps);
    return check_launch("facet_batchnorm_forward");
}

/* need_sums: training, or a parameter gradient wanted (evaluation's grad_x
 * alone needs no reduction). */
static __global__ void bn_backward_kernel(float *grad_x, float *grad_weight, float *grad_bias, const float *grad_out,
                                          const float *x, const float *weight, const float *save_mean,
                                          const float *save_invstd, int64_t n, int64_t c, int64_t hw, int kt,
                                          int training, int need_sums)
{
    __shared__ double red[64];
    const int tk = threadIdx.x % kt, tn = threadIdx.x / kt, nt = blockDim.x / kt;
    const double count = (double)(n * hw);
    for (int64_t ch = blockIdx.x; ch < c; ch += gridDim.x) {
        const float m = save_mean[ch];
        const double invstd = save_invstd[ch], w = weight ? weight[ch] : 1.0;
        double sg = 0.0, sgx = 0.0;
        if (need_sums) {
            for (int64_t i = tn; i < n; i += nt) {
                const int64_t off = (i * c + ch) * hw;
                for (int64_t q = tk; q < hw; q += kt) {
                    const double g = grad_out[off + q];
                    sg += g;
                    sgx += g * ((double)x[off + q] - m);
                }
            }
            block_sum2(&sg, &sgx, red);
        }
        if (threadIdx.x == 0) {
            if (grad_weight) grad_weight[ch] += (float)(sgx * invstd);
            if (grad_bias) grad_bias[ch] += (float)sg;
        }
        if (!grad_x) continue;
        /* dx = ka dy - kb (x - mean) - kd, kb = kd = 0 in evaluation */
        const float ka = (float)(w * invstd);
        const float kb = training ? (float)(w * invstd * invstd * invstd * sgx / count) : 0.0f;
        const float kd = training ? (float)(w * invstd * sg / count) : 0.0f;
        for (int64_t i = tn; i < n; i += nt) {
            const int64_t off = (i * c + ch) * hw;
            if (training)
                for (int64_t q = tk; q < hw; q += kt)
                    grad_x[off + q] = ka * grad_out[off + q] - kb * (x[off + q] - m) - kd;
            else
                for (int64_t q = tk; q < hw; q += kt) grad_x[off + q] = ka * grad_out[off + q];
        }
    }
}

extern "C" int facet_cuda_batchnorm_backward(float *grad_x, float *grad_weight, float *grad_bias,
                                             const float *grad_out, const float *x, const float *weight,
                                             const float *save_mean, const float *save_invstd, int64_t n, int64_t c,
                                             int64_t hw, int training)
{
    if (c <= 0) return FACET_STATUS_OK;
    const int need_sums = training || grad_weight || grad_bias;
    bn_backward_kernel<<<item_blocks(c), FACET_CUDA_THREADS>>>(grad_x, grad_weight, grad_bias, grad_out, x, weight,
                                                               save_mean, save_invstd, n, c, hw, plane_threads(hw),
                                                               training, need_sums);
    return check_launch("facet_batchnorm_backward");
}
