/*
 * upsample.cu - nearest and bilinear 2-D resampling on CUDA, with the
 * contracts of core/src/upsample.c (which checks the arguments) and the
 * formulas of upsample_math.h, so CPU and GPU pick the same pixels and
 * weights and round alike. Forward: one thread per output. Backward: one
 * thread per input pixel gathers from the outputs that read it
 * (facet_ups_backward_at), adding the same terms in the same order as the
 * CPU's scatter: no atomics, no zeroing pass, and the same bits as the CPU.
 */
#include "cuda_common.cuh"
#include "upsample_math.h"

static __global__ void upsample_forward_kernel(float *out, const float *x, int64_t h, int64_t w, int64_t ho,
                                               int64_t wo, int mode, int align_corners, int64_t total)
{
    FACET_CUDA_FOR(i, total) {
        const int64_t ow = i % wo, r = i / wo, oh = r % ho, p = r / ho;
        int64_t h0, h1, w0, w1;
        float lh, lw;
        facet_ups_taps(oh, h, ho, mode, align_corners, &h0, &h1, &lh);
        facet_ups_taps(ow, w, wo, mode, align_corners, &w0, &w1, &lw);
        const float *xp = x + p * h * w;
        if (mode == FACET_UPSAMPLE_MODE_NEAREST) {
            out[i] = xp[h0 * w + w0];
        } else {
            const float *r0 = xp + h0 * w, *r1 = xp + h1 * w;
            out[i] = facet_ups_blend(lh, lw, r0[w0], r0[w1], r1[w0], r1[w1]);
        }
    }
}

static __global__ void upsample_backward_kernel(float *grad_x, const float *grad_out, int64_t h, int64_t w,
                                                int64_t ho, int64_t wo, int mode, int align_corners, int64_t total)
{
    FACET_CUDA_FOR(i, total) {
        const int64_t x = i % w, r = i / w, y = r % h, p = r / h;
        grad_x[i] = facet_ups_backward_at(grad_out + p * ho * wo, h, w, ho, wo, mode, align_corners, y, x);
    }
}

extern "C" int facet_cuda_upsample2d_forward(float *out, const float *x, int64_t planes, int64_t h, int64_t w,
                                             int64_t ho, int64_t wo, int mode, int align_corners)
{
    const int64_t total = planes * ho * wo;
    return launch_flat("facet_cuda_upsample2d_forward", total, upsample_forward_kernel, out, x, h, w, ho, wo, mode,
                       align_corners, total);
}

extern "C" int facet_cuda_upsample2d_backward(float *grad_x, const float *grad_out, int64_t planes, int64_t h,
                                              int64_t w, int64_t ho, int64_t wo, int mode, int align_corners)
{
    const int64_t total = planes * h * w;
    return launch_flat("facet_cuda_upsample2d_backward", total, upsample_backward_kernel, grad_x, grad_out, h, w, ho,
                       wo, mode, align_corners, total);
}
