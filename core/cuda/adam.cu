/*
 * adam.cu - the fused Adam / AdamW update on CUDA (the CPU version is
 * core/src/adam.c), one thread per element over the whole parameter, any
 * shape, with activation_math.h's facet_adam_update (rounded per operation:
 * the same bits as the CPU). A list of parameters (facet_adam_step_list):
 * multi-tensor launches (tensor_list.cuh), one block per chunk of a
 * parameter, the same update.
 */
#include "cuda_common.cuh"
#include "tensor_list.cuh"
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

static_assert(sizeof(facet_adam_params) + sizeof(tlist) + sizeof(tlist_ptrs) <= 4096,
              "an Adam list launch's parameters exceed CUDA's 4 KB");

/* Block b updates its chunk of parameter j: p[0] the values, p[1] the
 * gradient, p[2] the first moment, v.p[j] the second, f[j] its weight decay. */
static __global__ void adam_list_kernel(facet_adam_params p, tlist l, tlist_ptrs v)
{
    const int64_t b = blockIdx.x;
    const int j = tlist_find(l, b);
    int64_t lo, hi;
    tlist_chunk(l, j, b, &lo, &hi);
    float *w = (float *)l.p[0][j], *g = (float *)l.p[1][j], *m = (float *)l.p[2][j], *vj = (float *)v.p[j];
    p.weight_decay = l.f[j];
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        w[i] = facet_adam_update(&p, w[i], g[i], &m[i], &vj[i]);
        if (p.zero_grad) g[i] = 0.0f;
    }
}

extern "C" int facet_cuda_adam_step_list(const struct facet_adam_params *p, float *const *w, float *const *g,
                                         float *const *m, float *const *v, const float *weight_decays,
                                         const int64_t *numel, int n)
{
    const char *fn = "facet_cuda_adam_step_list";
    tlist l;
    tlist_ptrs second = {};
    tlist_reset(&l);
    int rc = FACET_STATUS_OK;
    for (int k = 0; k < n && !rc; k++) {
        const int j = tlist_add(&l, numel[k]);
        l.p[0][j] = w[k];
        l.p[1][j] = g[k];
        l.p[2][j] = m[k];
        second.p[j] = v[k];
        l.f[j] = weight_decays[k];
        if (tlist_full(&l) || k == n - 1) {
            rc = tlist_launch(fn, &l, adam_list_kernel, *p, l, second);
            tlist_reset(&l);
        }
    }
    return rc;
}
