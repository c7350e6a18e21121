/*
 * batchnorm.cu - batch normalisation on CUDA, with the contracts of
 * core/src/batchnorm.c (which checks the arguments) and the formulas of
 * batchnorm_math.h: x is [n, c, hw].
 *
 * One block per channel (grid-stride over channels). A block's threads form
 * a small grid over the channel's values: kt threads along the plane (a power
 * of two up to the block size, so short planes leave few threads idle) times
 * blockDim / kt along n, with no division in the loops. The statistics sum
 * in double, shifted by the channel's first value as on the CPU, with a
 * block reduction (block_reduce, a fixed order) that hands both sums to every
 * thread; every thread then derives the same coefficients, and thread 0
 * writes the per-channel outputs. As one block owns a channel, grad_weight /
 * grad_bias accumulate without atomics. The sums run in another order than
 * the CPU's, so statistics agree to double rounding; the rest is computed as
 * on the CPU, operation for operation. x, out, grad_out and grad_x are
 * float32, float16 or bfloat16 (kernels templated over the storage type,
 * loads widened, results rounded once); weights, statistics and parameter
 * gradients are float32.
 */
#include "cuda_common.cuh"
#include "batchnorm_math.h"

/* Threads along the plane for a plane of hw values. */
static int plane_threads(int64_t hw)
{
    int kt = 1;
    while (kt < FACET_CUDA_THREADS && kt < hw) kt *= 2;
    return kt;
}

/* Two sums reduced together. */
struct sum2 {
    double a, b;
};

struct sum2_op {
    __device__ __forceinline__ sum2 operator()(sum2 x, sum2 y) const
    {
        sum2 r = { x.a + y.a, x.b + y.b };
        return r;
    }
};

template <typename T>
static __global__ void bn_forward_kernel(T *out, float *save_mean, float *save_invstd, float *running_mean,
                                         float *running_var, const T *x, const float *weight, const float *bias,
                                         int64_t n, int64_t c, int64_t hw, int kt, int training, double momentum,
                                         double eps)
{
    const int tk = threadIdx.x % kt, tn = threadIdx.x / kt, nt = blockDim.x / kt;
    const double count = (double)(n * hw);
    FACET_CUDA_FOR_BLOCK(ch, c) {
        double mean, var;
        if (training) {
            const float shift = ld(x[ch * hw]);
            sum2 s = { 0.0, 0.0 };
            for (int64_t i = tn; i < n; i += nt) {
                const T *p = x + (i * c + ch) * hw;
                for (int64_t k = tk; k < hw; k += kt) {
                    const double d = (double)ld(p[k]) - shift;
                    s.a += d;
                    s.b = facet_dadd_rn(s.b, facet_dmul_rn(d, d));
                }
            }
            const sum2 zero = { 0.0, 0.0 };
            s = block_reduce(s, sum2_op(), zero);
            facet_bn_moments(shift, s.a, s.b, count, &mean, &var);
        } else {
            mean = running_mean[ch];
            var = running_var[ch];
        }
        const double invstd = facet_bn_invstd(var, eps);
        if (threadIdx.x == 0) {
            if (save_mean) save_mean[ch] = (float)mean;
            if (save_invstd) save_invstd[ch] = (float)invstd;
            if (training && running_mean)
                facet_bn_running(&running_mean[ch], &running_var[ch], mean, var, count, momentum);
        }
        const float m = (float)mean, k = facet_bn_scale(weight, ch, invstd);
        const float d = bias ? bias[ch] : 0.0f;
        for (int64_t i = tn; i < n; i += nt) {
            const int64_t off = (i * c + ch) * hw;
            for (int64_t q = tk; q < hw; q += kt) st(out, off + q, facet_bn_forward_at(ld(x[off + q]), m, k, d));
        }
    }
}

extern "C" int facet_cuda_batchnorm_forward(int dtype, void *out, float *save_mean, float *save_invstd,
                                            float *running_mean, float *running_var, const void *x,
                                            const float *weight, const float *bias, int64_t n, int64_t c, int64_t hw,
                                            int training, double momentum, double eps)
{
    int rc = 0;
    FACET_ACT_DISPATCH(dtype, T,
        rc = launch_items("facet_cuda_batchnorm_forward", c, FACET_CUDA_THREADS, bn_forward_kernel<T>, (T *)out,
                          save_mean, save_invstd, running_mean, running_var, (const T *)x, weight, bias, n, c, hw,
                          plane_threads(hw), training, momentum, eps));
    return rc;
}

/* need_sums: training, or a parameter gradient wanted (evaluation's grad_x
 * alone needs no reduction). */
template <typename T>
static __global__ void bn_backward_kernel(T *grad_x, float *grad_weight, float *grad_bias, const T *grad_out,
                                          const T *x, const float *weight, const float *save_mean,
                                          const float *save_invstd, int64_t n, int64_t c, int64_t hw, int kt,
                                          int training, int need_sums)
{
    const int tk = threadIdx.x % kt, tn = threadIdx.x / kt, nt = blockDim.x / kt;
    const double count = (double)(n * hw);
    FACET_CUDA_FOR_BLOCK(ch, c) {
        const float m = save_mean[ch];
        const double invstd = save_invstd[ch], w = weight ? weight[ch] : 1.0;
        sum2 s = { 0.0, 0.0 };      /* sum(dy), sum(dy (x - mean)) */
        if (need_sums) {
            for (int64_t i = tn; i < n; i += nt) {
                const int64_t off = (i * c + ch) * hw;
                for (int64_t q = tk; q < hw; q += kt) {
                    const double g = ld(grad_out[off + q]);
                    s.a += g;
                    s.b = facet_dadd_rn(s.b, facet_dmul_rn(g, (double)ld(x[off + q]) - m));
                }
            }
            const sum2 zero = { 0.0, 0.0 };
            s = block_reduce(s, sum2_op(), zero);
        }
        if (threadIdx.x == 0) {
            if (grad_weight) grad_weight[ch] += (float)(s.b * invstd);
            if (grad_bias) grad_bias[ch] += (float)s.a;
        }
        if (!grad_x) continue;
        const facet_bn_coef k = facet_bn_backward_coef(w, invstd, s.a, s.b, count, training);
        for (int64_t i = tn; i < n; i += nt) {
            const int64_t off = (i * c + ch) * hw;
            if (training)
                for (int64_t q = tk; q < hw; q += kt)
                    st(grad_x, off + q, facet_bn_backward_at(k, ld(grad_out[off + q]), ld(x[off + q]), m));
            else
                for (int64_t q = tk; q < hw; q += kt)
                    st(grad_x, off + q, facet_bn_backward_eval_at(k, ld(grad_out[off + q])));
        }
    }
}

extern "C" int facet_cuda_batchnorm_backward(int dtype, void *grad_x, float *grad_weight, float *grad_bias,
                                             const void *grad_out, const void *x, const float *weight,
                                             const float *save_mean, const float *save_invstd, int64_t n, int64_t c,
                                             int64_t hw, int training)
{
    const int need_sums = training || grad_weight || grad_bias;
    int rc = 0;
    FACET_ACT_DISPATCH(dtype, T,
        rc = launch_items("facet_cuda_batchnorm_backward", c, FACET_CUDA_THREADS, bn_backward_kernel<T>, (T *)grad_x,
                          grad_weight, grad_bias, (const T *)grad_out, (const T *)x, weight, save_mean, save_invstd,
                          n, c, hw, plane_threads(hw), training, need_sums));
    return rc;
}
