/*
 * upsample.cu - nearest and bilinear 2-D resampling on CUDA, with the
 * contracts of core/src/upsample.c (which checks the arguments) and the
 * formulas of upsample_math.h, so CPU and GPU pick the same pixels and
 * weights and round alike. Forward: one thread per output. Backward: one
 * thread per input pixel gathers from the outputs that read it
 * (facet_ups_backward_at), adding the same terms in the same order as the
 * CPU's scatter: no atomics, no zeroing pass, and the same bits as the CPU.
 * A thread's plane, row and column come from 32-bit divisions when the
 * tensors have fewer than 2^31 elements (cuda_common.cuh, "index math").
 * Both tensors are float32, float16 or bfloat16 (the forward templated over
 * the storage type T, the backward's gather loading by dtype): the blend and
 * the sums are float32, each 16-bit result rounded once, as on the CPU.
 */
#include "cuda_common.cuh"
#include "upsample_math.h"

template <typename T, typename I>
static __global__ void upsample_forward_kernel(T *out, const T *x, int64_t h, int64_t w, div_by<I> ho,
                                               div_by<I> wo, int mode, int align_corners, int64_t total)
{
    FACET_CUDA_FOR_T(I, i, total) {
        const plane_pos<I> o = plane_pos_of(i, ho, wo);
        int64_t h0, h1, w0, w1;
        float lh, lw;
        facet_ups_taps(o.row, h, ho.d, mode, align_corners, &h0, &h1, &lh);
        facet_ups_taps(o.col, w, wo.d, mode, align_corners, &w0, &w1, &lw);
        const T *xp = x + o.plane * h * w;
        if (mode == FACET_UPSAMPLE_MODE_NEAREST) {
            st(out, i, ld(xp[h0 * w + w0]));
        } else {
            const T *r0 = xp + h0 * w, *r1 = xp + h1 * w;
            st(out, i, facet_ups_blend(lh, lw, ld(r0[w0]), ld(r0[w1]), ld(r1[w0]), ld(r1[w1])));
        }
    }
}

template <typename T, typename I>
static __global__ void upsample_backward_kernel(T *grad_x, const T *grad_out, int dtype, div_by<I> h, div_by<I> w,
                                                int64_t ho, int64_t wo, int mode, int align_corners, int64_t total)
{
    FACET_CUDA_FOR_T(I, i, total) {
        const plane_pos<I> at = plane_pos_of(i, h, w);
        st(grad_x, i, facet_ups_backward_at(grad_out, dtype, at.plane * ho * wo, h.d, w.d, ho, wo, mode, align_corners,
                                            at.row, at.col));
    }
}

/* Whether x and out have fewer than 2^31 elements. */
static bool upsample_fits32(int64_t planes, int64_t h, int64_t w, int64_t ho, int64_t wo)
{
    return fits_int32(planes * h * w, planes * ho * wo);
}

extern "C" int facet_cuda_upsample2d_forward(int dtype, void *out, const void *x, int64_t planes, int64_t h,
                                             int64_t w, int64_t ho, int64_t wo, int mode, int align_corners)
{
    const int64_t total = planes * ho * wo;
    int rc = 0;
    FACET_ACT_DISPATCH(dtype, T,
        FACET_INDEX_DISPATCH(upsample_fits32(planes, h, w, ho, wo), I,
            rc = launch_flat("facet_cuda_upsample2d_forward", total, upsample_forward_kernel<T, I>, (T *)out,
                             (const T *)x, h, w, div_by<I>(ho), div_by<I>(wo), mode, align_corners, total)));
    return rc;
}

extern "C" int facet_cuda_upsample2d_backward(int dtype, void *grad_x, const void *grad_out, int64_t planes,
                                              int64_t h, int64_t w, int64_t ho, int64_t wo, int mode,
                                              int align_corners)
{
    const int64_t total = planes * h * w;
    int rc = 0;
    FACET_ACT_DISPATCH(dtype, T,
        FACET_INDEX_DISPATCH(upsample_fits32(planes, h, w, ho, wo), I,
            rc = launch_flat("facet_cuda_upsample2d_backward", total, upsample_backward_kernel<T, I>, (T *)grad_x,
                             (const T *)grad_out, dtype, div_by<I>(h), div_by<I>(w), ho, wo, mode, align_corners,
                             total)));
    return rc;
}
