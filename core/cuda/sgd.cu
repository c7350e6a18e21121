/*
 * sgd.cu - the fused SGD update on CUDA (facet_sgd_step in facet.h; the CPU
 * version is core/src/sgd.c), with sgd_math.h's per-element update (rounded
 * per operation: the same bits as the CPU). Without row norms, one thread
 * per element over the whole parameter (any shape; the row's correction
 * coefficient is looked up per element). With row norms, one block per row:
 * each thread updates a stride of the row and the block sums the squares of
 * the new values (block_sum, a fixed order; the CPU sums in vector lanes, so
 * the norms agree to float rounding, not bit for bit). A list of parameters
 * without row parts (facet_sgd_step_list): multi-tensor launches
 * (tensor_list.cuh), one block per chunk of a parameter, the same update.
 */
#include "cuda_common.cuh"
#include "tensor_list.cuh"
#include "sgd_math.h"

/* the row of element e in the index type I (cuda_common.cuh, "index math") */
template <typename I>
static __global__ void sgd_flat_kernel(facet_sgd_params p, float *w, float *g, float *buf, const float *coef,
                                       int64_t total, div_by<I> cols)
{
    FACET_CUDA_FOR_T(I, e, total) {
        const float a = coef ? coef[cols.div(e)] : 0.0f;
        w[e] = facet_sgd_update_row(&p, w[e], g[e], a, buf ? &buf[e] : NULL);
        if (p.zero_grad) g[e] = 0.0f;
    }
}

static __global__ void sgd_rows_kernel(facet_sgd_params p, float *w, float *g, float *buf, const float *coef,
                                       float *norms, int64_t rows, int64_t cols)
{
    FACET_CUDA_FOR_BLOCK(r, rows) {
        float *wr = w + r * cols, *gr = g + r * cols, *br = buf ? buf + r * cols : NULL;
        const float a = coef ? coef[r] : 0.0f;
        float ss = 0.0f;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            const float nw = facet_sgd_update_row(&p, wr[c], gr[c], a, br ? &br[c] : NULL);
            wr[c] = nw;
            ss += nw * nw;
            if (p.zero_grad) gr[c] = 0.0f;
        }
        ss = block_sum(ss);
        if (threadIdx.x == 0) norms[r] = sqrtf(ss);
    }
}

extern "C" int facet_cuda_sgd_step(const struct facet_sgd_params *p, float *w, float *g, float *buf,
                                   const float *coef, float *norms, int64_t rows, int64_t cols)
{
    const char *fn = "facet_cuda_sgd_step";
    if (rows <= 0 || cols <= 0) return FACET_STATUS_OK;
    if (!norms) {
        int rc = FACET_STATUS_OK;
        FACET_INDEX_DISPATCH(fits_int32(rows * cols), I,
            rc = launch_flat(fn, rows * cols, sgd_flat_kernel<I>, *p, w, g, buf, coef, rows * cols, div_by<I>(cols)));
        return rc;
    }
    return launch_items(fn, rows, FACET_CUDA_THREADS, sgd_rows_kernel, *p, w, g, buf, coef, norms, rows, cols);
}

/* Block b updates its chunk of parameter j: p[0] the values, p[1] the
 * gradient, p[2] the momentum buffer (or NULL), f[j] its weight decay. */
static __global__ void sgd_list_kernel(facet_sgd_params p, tlist l)
{
    const int64_t b = blockIdx.x;
    const int j = tlist_find(l, b);
    int64_t lo, hi;
    tlist_chunk(l, j, b, &lo, &hi);
    float *w = (float *)l.p[0][j], *g = (float *)l.p[1][j], *buf = (float *)l.p[2][j];
    p.weight_decay = l.f[j];
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        w[i] = facet_sgd_update_row(&p, w[i], g[i], 0.0f, buf ? &buf[i] : NULL);
        if (p.zero_grad) g[i] = 0.0f;
    }
}

extern "C" int facet_cuda_sgd_step_list(const struct facet_sgd_params *p, float *const *w, float *const *g,
                                        float *const *buf, const float *weight_decays, const int64_t *numel, int n)
{
    const char *fn = "facet_cuda_sgd_step_list";
    tlist l;
    tlist_reset(&l);
    int rc = FACET_STATUS_OK;
    for (int k = 0; k < n && !rc; k++) {
        const int j = tlist_add(&l, numel[k]);
        l.p[0][j] = w[k];
        l.p[1][j] = g[k];
        l.p[2][j] = buf ? buf[k] : NULL;
        l.f[j] = weight_decays[k];
        if (tlist_full(&l) || k == n - 1) {
            rc = tlist_launch(fn, &l, sgd_list_kernel, *p, l);
            tlist_reset(&l);
        }
    }
    return rc;
}
