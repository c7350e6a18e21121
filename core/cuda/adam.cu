/*
 * adam.cu - the fused Adam / AdamW update on CUDA (the CPU version is
 * core/src/adam.c), one thread per element over the whole parameter, any
 * shape, with activation_math.h's facet_adam_update (rounded per operation:
 * the same bits as the CPU).
 */
#include "cuda_common.cuh"
#include "activation_math.h"

static __global__ void adam_kernel(facet_adam_params p, float *w, float *g, float *m, float *v, int64_t n)
{
    FACET_CUDA_FOR(i, n) {
        w[i] = facet_adam_update(&p, w[i], g[i], &m[i], &v[i]);
        if (p.zero_grad) g[i] = 0.0f;
    }
}

extern "C" int facet_cuda_adam_step(const struct facet_adam_params *p, float *w, float *g, float *m, float *v,
                                    int64_t n)
{
    return launch_flat("facet_cuda_adam_step", n, adam_kernel, *p, w, g, m, v, n);
}
