/*
 * upsample.cu - nearest and bilinear 2-D resampling on CUDA, with the
 * contracts of core/src/upsample.c (which checks the arguments). The source
 * coordinates come from the host/device helpers of norm_pool_cuda.h, so CPU
 * and GPU pick the same pixels. Forward: one thread per output. Backward:
 * grad_x is zeroed, then one thread per output gradient adds its share to
 * the (up to four) source pixels with atomicAdd; several outputs share a
 * source, and their order of arrival is free (float sums may differ from the
 * CPU in the last bits).
 */
#include "cuda_common.cuh"
#include "norm_pool_cuda.h"

/* Output index i of [planes, ho, wo] -> plane p and the source taps. */
struct taps {
    int64_t p, h0, h1, w0, w1;
    float lh, lw;       /* weights of h1 and w1 */
};

static __device__ __forceinline__ taps taps_of(int64_t i, int64_t h, int64_t w, int64_t ho, int64_t wo, int mode,
                                               int align_corners)
{
    taps t;
    const int64_t ow = i % wo, r = i / wo, oh = r % ho;
    t.p = r / ho;
    if (mode == FACET_UPSAMPLE_MODE_NEAREST) {
        t.h0 = t.h1 = facet_ups_nearest(oh, h, ho);
        t.w0 = t.w1 = facet_ups_nearest(ow, w, wo);
        t.lh = t.lw = 0.0f;
    } else {
        facet_ups_linear(oh, h, ho, align_corners, &t.h0, &t.h1, &t.lh);
        facet_ups_linear(ow, w, wo, align_corners, &t.w0, &t.w1, &t.lw);
    }
    return t;
}

static __global__ void upsample_forward_kernel(float *out, const float *x, int64_t h, int64_t w, int64_t ho,
                                               int64_t wo, int mode, int align_corners, int64_t total)
{
    FACET_CUDA_FOR(i, total) {
        const taps t = taps_of(i, h, w, ho, wo, mode, align_corners);
        const float *xp = x + t.p * h * w;
        if (mode == FACET_UPSAMPLE_MODE_NEAREST) {
            out[i] = xp[t.h0 * w + t.w0];
        } else {
            const float h0 = 1.0f - t.lh, w0 = 1.0f - t.lw;
            const float *r0 = xp + t.h0 * w, *r1 = xp + t.h1 * w;
            out[i] = h0 * (w0 * r0[t.w0] + t.lw * r0[t.w1]) + t.lh * (w0 * r1[t.w0] + t.lw * r1[t.w1]);
        }
    }
}

static __global__ void upsample_backward_kernel(float *grad_x, const float *grad_out, int64_t h, int64_t w,
                                                int64_t ho, int64_t wo, int mode, int align_corners, int64_t total)
{
    FACET_CUDA_FOR(i, total) {
        const taps t = taps_of(i, h, w, ho, wo, mode, align_corners);
        float *gp = grad_x + t.p * h * w;
        const float g = grad_out[i];
        if (mode == FACET_UPSAMPLE_MODE_NEAREST) {
            atomicAdd(&gp[t.h0 * w + t.w0], g);
        } else {
            const float h0 = 1.0f - t.lh, w0 = 1.0f - t.lw;
            atomicAdd(&gp[t.h0 * w + t.w0], h0 * w0 * g);
            atomicAdd(&gp[t.h0 * w + t.w1], h0 * t.lw * g);
            atomicAdd(&gp[t.h1 * w + t.w0], t.lh * w0 * g);
            atomicAdd(&gp[t.h1 * w + t.w1], t.lh * t.lw * g);
        }
    }
}

extern "C" int facet_cuda_upsample2d_forward(float *out, const float *x, int64_t planes, int64_t h, int64_t w,
                                             int64_t ho, int64_t wo, int mode, int align_corners)
{
    const int64_t total = planes * ho * wo;
    if (total <= 0) return FACET_STATUS_OK;
    upsample_forward_kernel<<<grid_blocks(total), FACET_CUDA_THREADS>>>(out, x, h, w, ho, wo, mode, align_corners,
                                                                        total);
    return check_launch("facet_upsample2d_forward");
}

extern "C" int facet_cuda_upsample2d_backward(float *grad_x, const float *grad_out, int64_t planes, int64_t h,
                                              int64_t w, int64_t ho, int64_t wo, int mode, int align_corners)
{
    static const char *fn = "facet_upsample2d_backward";
    const int64_t total = planes * ho * wo;
    if (planes * h * w <= 0) return FACET_STATUS_OK;
    /* legacy default stream: the memset is ordered before the kernel */
    int rc = check_cuda(cudaMemset(grad_x, 0, (size_t)(planes * h * w) * sizeof(float)), fn);
    if (rc || total <= 0) return rc;
    upsample_backward_kernel<<<grid_blocks(total), FACET_CUDA_THREADS>>>(grad_x, grad_out, h, w, ho, wo, mode,
                                                                         align_corners, total);
    return check_launch(fn);
}
