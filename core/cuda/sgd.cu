/*
 * sgd.cu - the fused SGD update on CUDA (facet_sgd_step in facet.h; the CPU
 * version is core/src/sgd.c). One block per row: each thread updates a stride
 * of the row with the shared facet_sgd_update, and the block sums the squares
 * of the new values when the row norms are wanted.
 */
#include "cuda_common.cuh"
#include "sgd_math.h"

static __global__ void sgd_kernel(facet_sgd_params p, float *w, float *g, float *buf, const float *coef, float *norms,
                                  int64_t rows, int64_t cols)
{
    __shared__ float partial[32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        float *wr = w + r * cols, *gr = g + r * cols, *br = buf ? buf + r * cols : NULL;
        const float a = coef ? coef[r] : 0.0f;
        float ss = 0.0f;
        for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
            const float nw = facet_sgd_update(&p, wr[c], gr[c] + a * wr[c], br ? &br[c] : NULL);
            wr[c] = nw;
            ss += nw * nw;
            if (p.zero_grad) gr[c] = 0.0f;
        }
        if (norms) {
            for (int o = 16; o > 0; o >>= 1) ss += __shfl_down_sync(0xffffffffu, ss, o);
            if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = ss;
            __syncthreads();
            if (threadIdx.x == 0) {
                float t = 0.0f;
                for (int k = 0; k < (int)(blockDim.x >> 5); k++) t += partial[k];
                norms[r] = sqrtf(t);
            }
            __syncthreads();    /* partial is reused by the next row */
        }
    }
}

extern "C" int facet_cuda_sgd_step(const struct facet_sgd_params *p, float *w, float *g, float *buf,
                                   const float *coef, float *norms, int64_t rows, int64_t cols)
{
    if (rows <= 0 || cols <= 0) return FACET_STATUS_OK;
    unsigned blocks = rows > 65535 ? 65535u : (unsigned)rows;
    sgd_kernel<<<blocks, 256>>>(*p, w, g, buf, coef, norms, rows, cols);
    return check_launch("facet_cuda_sgd_step");
}
