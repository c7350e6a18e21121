/*
 * sgd.cu - the fused SGD update on CUDA (facet_sgd_step in facet.h; the CPU
 * version is core/src/sgd.c), with sgd_math.h's per-element update (rounded
 * per operation: the same bits as the CPU). Without row norms, one thread
 * per element over the whole parameter (any shape; the row's correction
 * coefficient is looked up per element). With row norms, one block per row:
 * each thread updates a stride of the row and the block sums the squares of
 * the new values (block_sum, a fixed order; the CPU sums in vector lanes, so
 * the norms agree to float rounding, not bit for bit).
 */
#include "cuda_common.cuh"
#include "sgd_math.h"

static __global__ void sgd_flat_kernel(facet_sgd_params p, float *w, float *g, float *buf, const float *coef,
                                       int64_t rows, int64_t cols)
{
    FACET_CUDA_FOR(e, rows * cols) {
        const float a = coef ? coef[e / cols] : 0.0f;
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
    if (!norms) return launch_flat(fn, rows * cols, sgd_flat_kernel, *p, w, g, buf, coef, rows, cols);
    return launch_items(fn, rows, FACET_CUDA_THREADS, sgd_rows_kernel, *p, w, g, buf, coef, norms, rows, cols);
}
